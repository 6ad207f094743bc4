"""A real Prometheus (Debian package `prometheus`) scrapes a real Purifier on loopback:
the request counts it reads back equal the requests sent, and every Grafana dashboard
query evaluates."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.test_compose import dashboard_queries
from tests.live_server import free_port, wait_for
from tests.service.conftest import encode_image, fmnist_images

PROMETHEUS = shutil.which("prometheus")
MISSING = "Prometheus is missing: install the Debian package `prometheus` (make test does)"


@pytest.fixture(scope="module")
def purifier(start_server):
    return start_server()  # its own server: counters start at zero


@pytest.fixture(scope="module")
def prometheus(purifier, tmp_path_factory) -> Iterator[str]:
    """Prometheus with the compose config, retargeted at the loopback server, 1 s scrapes."""
    assert PROMETHEUS, MISSING
    root = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((REPO / "docker" / "prometheus" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{purifier.port}"]
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (root / "log.txt").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200, 30, 0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def query(url: str, promql: str) -> dict:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def counts_by_status(url: str) -> dict[str, int]:
    data = query(url, 'sum by (status) (purifier_requests_total{route="purify"})')
    return {r["metric"]["status"]: int(float(r["value"][1])) for r in data["result"]}


def test_prometheus_reads_back_the_requests_sent(purifier, prometheus):
    bodies = [encode_image(img, "PNG") for img in fmnist_images(7)]
    sent = Counter()
    for body in bodies:
        r = httpx.post(
            f"{purifier.url}/purify", content=body, headers={"Content-Type": "image/png"}
        )
        sent[str(r.status_code)] += 1
    for body in (b"not an image", b"\x00" * 64):
        r = httpx.post(
            f"{purifier.url}/purify", content=body, headers={"Content-Type": "image/png"}
        )
        sent[str(r.status_code)] += 1
    assert sent == {"200": 7, "415": 2}

    assert wait_for(lambda: counts_by_status(prometheus) == dict(sent), 30, 0.5), (
        counts_by_status(prometheus),
        sent,
    )
    up = query(prometheus, 'up{job="purifier"}')["result"]
    assert [r["value"][1] for r in up] == ["1"]


def test_every_dashboard_query_evaluates(purifier, prometheus):
    assert wait_for(lambda: query(prometheus, "purifier_batch_size_count")["result"], 30, 0.5)
    for expr in dashboard_queries():
        promql = expr.replace("$__rate_interval", "1m").replace("$model", ".*")
        data = query(prometheus, promql)
        assert data["resultType"] == "vector", (expr, json.dumps(data)[:200])
