"""A bank-trained run stopped between checkpoints is closed from its last checkpoint:
the checkpoint's purifier is the last weights, and the selection is made as a finished
run makes it (the best validated weights when there are any, else the last)."""

import json

import torch

from tests.conftest import write_yaml
from training.finish_run import finish
from training.loop import Checkpoint


def test_a_stopped_run_is_closed_from_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    state = {"w": torch.arange(4.0)}
    Checkpoint(out).save({"trainer": {"purifier": state}, "epoch": 2, "step": 128})
    config = {
        "name": "stopped",
        "output_dir": str(out),
        "weights": str(tmp_path / "selected.pt"),
        "train": {"best_weights": str(out / "best.pt")},
    }
    path = write_yaml(tmp_path / "stopped.yaml", config)
    chosen = finish(path)
    assert torch.equal(torch.load(chosen)["w"], state["w"])
    summary = json.loads(chosen.with_suffix(".json").read_text())
    assert summary["selected"] == "last" and summary["stopped_at"] == {"epoch": 2, "step": 128}
    torch.save({"w": torch.zeros(4)}, out / "best.pt")  # a validated best exists
    (out / "best.json").write_text(json.dumps({"val_clean_agreement": 97.0}))
    chosen = finish(path)
    assert torch.equal(torch.load(chosen)["w"], torch.zeros(4))
    assert json.loads(chosen.with_suffix(".json").read_text())["selected"] == "best"
    assert Checkpoint(out).path.exists()  # the run can still resume
