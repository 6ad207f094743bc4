"""Attacks: SSP and BPDA written here; standard ones from libraries behind one registry."""

from training.attacks.bpda import BPDAWrapper
from training.attacks.eot import ExpectationOverNoise
from training.attacks.library import budget_text, build_attack
from training.attacks.ssp import SSP
from training.registry import ATTACKS, SURROGATES

__all__ = [
    "ATTACKS",
    "SSP",
    "SURROGATES",
    "BPDAWrapper",
    "ExpectationOverNoise",
    "budget_text",
    "build_attack",
]
