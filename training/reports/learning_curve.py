"""`python -m training.reports.learning_curve RUN_DIR`: a run's validation.csv (held-out figures
against steps, written by training.loop.fit) as RUN_DIR/curve.md and RUN_DIR/curve.png,
so that the next session can read at a glance whether to continue, change or stop.

For the guided purifier the columns are MobileNetV2's clean agreement and its fooling
rate on each validation attack through the purifier (the `val` split; never the reported
`test` split, never EfficientNet-Lite0); for NRP's, the feature distances and PSNRs."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_curve(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "validation.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: no validation has run yet")
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def markdown(rows: list[dict[str, float]], names: list[str] | None = None) -> str:
    """One line per validation: step, then every val_* figure (attack columns named)."""
    keys = [k for k in rows[0] if k.startswith("val_") and not k.endswith("_undefended")]
    titles = []
    for key in keys:
        title = key.removeprefix("val_")
        if names and title.startswith("attack"):
            index_text, _, what = title.removeprefix("attack").partition("_")
            if index_text.isdigit() and int(index_text) < len(names):
                title = f"{names[int(index_text)]} {what}"
        titles.append(title.replace("_", " "))
    lines = [
        "| step | " + " | ".join(titles) + " |",
        "|---|" + "---|" * len(titles),
    ]
    for row in rows:
        cells = [f"{row[k]:.4g}" if k in row else "" for k in keys]
        lines.append(f"| {int(row.get('step', 0))} | " + " | ".join(cells) + " |")
    undefended = [k for k in rows[0] if k.endswith("_undefended")]
    if undefended:
        first = rows[0]
        lines.append("")
        lines.append(
            "Without the purifier: "
            + ", ".join(
                f"{(names or [])[i] if names and i < len(names) else k} {first[k]:.1f}%"
                for i, k in enumerate(undefended)
            )
            + " fooling."
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, float]], path: Path, names: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row.get("step", 0) for row in rows]
    if "val_clean_agreement" not in rows[0]:
        _plot_distances(rows, steps, path, plt)
        return
    left_keys = sorted(k for k in rows[0] if k.startswith("val_attack") and k.endswith("_left"))
    fig, axes = plt.subplots(1, 2 if left_keys else 1, figsize=(11 if left_keys else 7, 4))
    ax = axes[0] if left_keys else axes
    ax.plot(steps, [row["val_clean_agreement"] for row in rows], "k-o", label="clean agreement")
    attacks = sorted(k for k in rows[0] if k.startswith("val_attack") and k.endswith("_fooling"))
    for i, key in enumerate(attacks):
        label = names[i] if names and i < len(names) else key
        ax.plot(steps, [row[key] for row in rows], "-o", label=f"{label} fooling")
    ax.set_xlabel("training step")
    ax.set_ylabel("% of validation crops (MobileNetV2)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if left_keys:  # the share of each perturbation the purifier leaves (1 = none removed)
        right = axes[1]
        for i, key in enumerate(left_keys):
            label = names[i] if names and i < len(names) else key
            right.plot(steps, [row[key] for row in rows], "-o", label=label)
        right.set_xlabel("training step")
        right.set_ylabel("|P(x*) - x| / |x* - x|")
        right.grid(alpha=0.3)
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_distances(rows: list[dict[str, float]], steps: list[float], path: Path, plt) -> None:
    """Runs that validate by distances (NRP's: feature distance and PSNR to the clean
    image, for SSP and clean inputs): distances on the left, PSNRs on the right."""
    keys = [k for k in rows[0] if k.startswith("val_")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key in keys:
        axis = right if key.endswith("psnr") else left
        axis.plot(steps, [row.get(key, float("nan")) for row in rows], "-o", label=key[4:])
    for axis, label in ((left, "distance to the clean image"), (right, "PSNR (dB)")):
        axis.set_xlabel("training step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--config", help="the run's config, to name the attack columns")
    args = parser.parse_args(argv)
    names = None
    if args.config:
        from training.config import load_config

        config = load_config(args.config)
        names = [a["name"] for a in config.get("validation", {}).get("attacks", [])]
    rows = read_curve(args.run_dir)
    (args.run_dir / "curve.md").write_text(markdown(rows, names))
    plot(rows, args.run_dir / "curve.png", names)
    print(f"wrote {args.run_dir / 'curve.md'} and curve.png ({len(rows)} validations)")


if __name__ == "__main__":
    main()
