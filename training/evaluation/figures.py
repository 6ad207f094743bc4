"""The examples figure: clean | adversarial | purified | amplified difference."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def example_figure(
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    purifier: nn.Module,
    path: Path,
    title: str = "",
    amplify: float = 5.0,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        purified = purifier(adversarial)
    diff = ((purified - adversarial).abs() * amplify).clamp(0, 1)
    columns = [
        ("clean", clean),
        (f"adversarial ({title})", adversarial),
        ("purified", purified),
        (f"|purified - adversarial| x{amplify:g}", diff),
    ]
    n = len(clean)
    fig, axes = plt.subplots(n, 4, figsize=(8, 2 * n))
    for r in range(n):
        for c, (name, images) in enumerate(columns):
            ax = axes[r, c]
            img = images[r].permute(1, 2, 0).squeeze(-1).numpy()
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
