"""Close a bank-trained run (guided, prior) from its last checkpoint, when it was stopped
between checkpoints rather than by `train.max_minutes` (a session that must free the CPU
for its evaluation): the checkpoint's purifier becomes the run's last weights, and the
selection (best validated weights at the agreement floor, else the last) is made as a
finished run makes it.

    python -m training.finish_run training/configs/photo_prior.yaml

The checkpoint stays, so `purifier train CONFIG` still resumes the run from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from training.config import load_config
from training.loop import Checkpoint
from training.methods.guided import select_weights


def finish(config_path: str | Path) -> Path:
    config = load_config(config_path)
    state = Checkpoint(config["output_dir"]).load()
    if state is None:
        raise FileNotFoundError(f"no checkpoint in {config['output_dir']}")
    last = Path(config["output_dir"]) / "last.pt"
    torch.save(state["trainer"]["purifier"], last)
    summary = {
        "stopped_at": {"epoch": state["epoch"], "step": state["step"]},
        "finished": False,
        "closed_by": "python -m training.finish_run (stopped between checkpoints)",
    }
    last.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return select_weights(config, last)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    args = parser.parse_args(argv)
    chosen = finish(args.config)
    print(f"{chosen}: {json.loads(chosen.with_suffix('.json').read_text()).get('selected')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
