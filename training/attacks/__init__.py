"""Attacks: SSP and BPDA written here; standard ones from libraries behind one registry."""

from training.attacks.bpda import BPDAWrapper
from training.attacks.cas_surrogates import SURROGATES
from training.attacks.library import ATTACKS, build_attack
from training.attacks.ssp import SSP

__all__ = ["ATTACKS", "SSP", "SURROGATES", "BPDAWrapper", "build_attack"]
