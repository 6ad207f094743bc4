import subprocess
import sys

from tests.conftest import REPO, write_yaml


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "purifier.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


def test_help_lists_the_subcommands():
    out = run_cli("--help")
    assert out.returncode == 0
    for sub in ("train", "eval", "export"):
        assert sub in out.stdout


def test_train_a_classifier_from_yaml_then_resume(tmp_path):
    config = write_yaml(
        tmp_path / "clf.yaml",
        {
            "name": "tiny-lenet",
            "method": "classifier",
            "seed": 0,
            "device": "cpu",
            "output_dir": str(tmp_path / "run"),
            "weights": str(tmp_path / "lenet.pt"),
            "data": {"dataset": "fashion_mnist", "train_limit": 512, "test_limit": 256},
            "model": {"arch": "lenet", "in_channels": 1},
            "train": {"epochs": 1, "batch_size": 64, "lr": 1.0e-3},
        },
    )
    first = run_cli("train", str(config))
    assert first.returncode == 0, first.stderr
    assert "epoch 1 test error" in first.stdout and (tmp_path / "lenet.pt").exists()
    second = run_cli("train", str(config), "--set", "train.epochs=2")
    assert second.returncode == 0, second.stderr
    assert "epoch 1 test error" not in second.stdout and "epoch 2 test error" in second.stdout
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3


def test_unknown_method_is_a_clear_error(tmp_path):
    config = write_yaml(tmp_path / "bad.yaml", {"method": "magic"})
    out = run_cli("train", str(config))
    assert out.returncode != 0 and "unknown method 'magic'" in out.stderr
