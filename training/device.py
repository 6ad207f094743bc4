"""Where training and evaluation run, and how a result names that machine."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: the GPU when there is one, else the CPU; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    """What a result records as the machine it was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
