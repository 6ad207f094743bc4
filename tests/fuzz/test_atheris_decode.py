"""CI runs the atheris decode target for a bounded time, seeded with the hostile corpus
and valid images of every accepted format."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO
from tests.hostile_corpus import CASES, photo, save

SECONDS = int(os.environ.get("PURIFIER_ATHERIS_SECONDS", "20"))
# libFuzzer's -rss_limit_mb reads the peak RSS (getrusage), and Linux keeps a process's
# peak across exec: a fuzzer exec'd straight from a pytest worker that holds 3.4 GB of
# models was "out of memory" before its first input. A small launcher forks it instead.
FRESH_PEAK_RSS = [
    sys.executable,
    "-c",
    "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
]


def test_decode_survives_coverage_guided_fuzzing(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for case in CASES:
        if case.name != "body_over_limit":
            (seeds / case.name).write_bytes(case.make())
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "TIFF"):
        (seeds / f"valid.{fmt.lower()}").write_bytes(save(photo(12, 9), fmt))
    run = subprocess.run(
        [
            *FRESH_PEAK_RSS,
            sys.executable,
            "-m",
            "tests.fuzz.atheris_decode",
            f"-max_total_time={SECONDS}",
            f"-artifact_prefix={tmp_path}/",
            "-rss_limit_mb=2048",
            "-max_len=65536",
            str(seeds),
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash", "oom")))
    assert run.returncode == 0 and not crashes, (crashes, run.stderr[-3000:])
    assert "Done" in run.stderr  # libFuzzer's summary: it really ran
