"""The Dockerfiles: hadolint-clean, non-root, no torch, models baked in, the health check
on the readiness route, and install steps that match `make run` (the hash-locked
requirements, which must satisfy pyproject's extras)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile*"))
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def locked(extra: str) -> dict[str, str]:
    """name -> pinned version in requirements/<extra>.txt (first pin of each name)."""
    pins: dict[str, str] = {}
    for line in (REPO / "requirements" / f"{extra}.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if match:
            pins.setdefault(canonicalize_name(match.group(1)), match.group(2))
    return pins


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile", "Dockerfile.gpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_nothing(dockerfile: Path):
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_does_report_problems(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    result = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3006" in result.stdout and "DL3008" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stage_is_non_root_with_models_and_a_readiness_healthcheck(dockerfile: Path):
    stage = final_stage(dockerfile)
    ops = dict(stage)
    assert ops["USER"] not in {"root", "0"}
    assert "service.probe" in ops["HEALTHCHECK"]
    assert ops["ENTRYPOINT"] == '["purifier", "serve"]'
    copies = [args for op, args in stage if op == "COPY"]
    assert "exported_models /models" in copies
    env = ops["ENV"]
    assert "PURIFIER_MODEL_REPOSITORY=/models" in env and "PURIFIER_HOST=0.0.0.0" in env
    assert not any(op == "RUN" and "pip install" in args for op, args in stage)  # multi-stage


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_paths_exist_and_pass_dockerignore(dockerfile: Path):
    allowed = {
        line[1:].strip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for op, args in instructions(dockerfile):
        if op != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert (REPO / source).exists(), source
            assert source.split("/")[0] in allowed, f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize(
    ("dockerfile", "extra"), [("Dockerfile", "serve"), ("Dockerfile.gpu", "gpu")]
)
def test_images_install_the_lock_like_make_run(dockerfile: str, extra: str):
    text = (REPO / "docker" / dockerfile).read_text()
    assert f"--require-hashes -r requirements/{extra}.txt" in text
    assert "pip install --no-deps ." in text
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements/serve.txt" in makefile


@pytest.mark.parametrize("extra", ["serve", "gpu"])
def test_lock_satisfies_pyproject_and_has_no_torch(extra: str):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked(extra)
    wanted = project["dependencies"] + project["optional-dependencies"][extra]
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements/{extra}.txt: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert "torch" not in pins and "torchvision" not in pins
    runtime = "onnxruntime-gpu" if extra == "gpu" else "onnxruntime"
    other = "onnxruntime" if extra == "gpu" else "onnxruntime-gpu"
    assert runtime in pins and other not in pins  # both would shadow one module


def test_probe_reports_ready_and_not_ready(server):
    from service.probe import probe

    assert probe(server.port)
    from tests.live_server import free_port

    assert not probe(free_port(), timeout=0.5)
