"""Data-parallel NRP training: two CPU processes under torchrun (gloo) on a tiny config
finish the run together and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO, write_yaml
from tests.live_server import free_port


def test_two_cpu_processes_end_with_identical_weights(nrp_config, tmp_path):
    config = write_yaml(tmp_path / "tiny.yaml", nrp_config)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            "-m",
            "purifier.cli",
            "train",
            str(config),
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    ranks = Path(nrp_config["output_dir"]) / "ranks"
    first, second = (torch.load(ranks / f"purifier_rank{r}.pt") for r in (0, 1))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    published = torch.load(nrp_config["weights"])
    assert all(torch.equal(published[k], first[k]) for k in first)
    summary = json.loads(Path(nrp_config["weights"]).with_suffix(".json").read_text())
    assert summary["world_size"] == 2 and summary["finished"]
