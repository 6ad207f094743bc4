"""docker/compose.yaml and what it names: build files, mounted files, ports, the
Prometheus scrape target and the Grafana provisioning all agree with each other."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from tests.conftest import REPO
from tests.deploy.test_docker import HADOLINT

DOCKER = REPO / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
DASHBOARD = DOCKER / "grafana" / "dashboards" / "purifier.json"


def container_port(service: str) -> int:
    return int(SERVICES[service]["ports"][0].split(":")[-1])


def mounts(service: str) -> dict[str, Path]:
    """container path -> host path, for every bind mount of a compose service."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        host, container = volume.split(":")[:2]
        out[container] = (DOCKER / host).resolve()
    return out


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def test_the_four_services():
    assert set(SERVICES) == {"purifier", "classifier", "prometheus", "grafana"}


def test_build_context_and_dockerfile_exist():
    for service in ("purifier", "classifier"):
        build = SERVICES[service]["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO and (context / build["dockerfile"]).is_file()


def test_purifier_proxies_to_the_classifier_which_has_no_host_port():
    """Issue 39: the upstream model server is reached through Purifier only."""
    env = SERVICES["purifier"]["environment"]
    classifier = SERVICES["classifier"]
    port = classifier["expose"][0]
    assert env["PURIFIER_UPSTREAM_URL"] == f"http://classifier:{port}"
    assert "ports" not in classifier and "classifier" in SERVICES["purifier"]["depends_on"]
    dockerfile = (REPO / classifier["build"]["dockerfile"]).read_text()
    assert f"EXPOSE {port}" in dockerfile and f"--http_port={port}" in dockerfile


def test_the_classifier_image_is_hadolint_clean_and_copies_what_it_is_given():
    dockerfile = REPO / SERVICES["classifier"]["build"]["dockerfile"]
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "!examples/kserve_classifier/" in ignore
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            source = line.split()[1]
            assert source.startswith("examples/kserve_classifier/"), source
    assert (dockerfile.parent / "server.py").is_file()


def test_every_bind_mount_exists():
    for service in SERVICES:
        for container, host in mounts(service).items():
            assert host.exists(), f"{service}: {host} (for {container}) is missing"


def test_host_ports_are_distinct_and_purifier_listens_where_the_image_says():
    host_ports = [p.split(":")[0] for s in SERVICES.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports))
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert f"EXPOSE {container_port('purifier')}" in dockerfile
    assert f"PURIFIER_PORT={container_port('purifier')}" in dockerfile


def test_prometheus_scrapes_the_purifier_service():
    config_path = mounts("prometheus")["/etc/prometheus/prometheus.yml"]
    job = yaml.safe_load(config_path.read_text())["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"purifier:{container_port('purifier')}"]


def test_promtool_accepts_the_config():
    assert shutil.which("promtool"), "promtool is missing: install the Debian package prometheus"
    config_path = mounts("prometheus")["/etc/prometheus/prometheus.yml"]
    result = subprocess.run(
        ["promtool", "check", "config", str(config_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard():
    grafana = mounts("grafana")
    datasource_file = grafana["/etc/grafana/provisioning"] / "datasources" / "prometheus.yaml"
    datasource = yaml.safe_load(datasource_file.read_text())["datasources"][0]
    assert datasource["url"] == f"http://prometheus:{container_port('prometheus')}"
    provider_file = grafana["/etc/grafana/provisioning"] / "dashboards" / "purifier.yaml"
    provider = yaml.safe_load(provider_file.read_text())["providers"][0]
    dashboards_dir = provider["options"]["path"]
    assert grafana[dashboards_dir] == DASHBOARD.parent
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert grafana[str(Path(home).parent)] / Path(home).name == DASHBOARD
    uids = {
        t["datasource"]["uid"]
        for p in json.loads(DASHBOARD.read_text())["panels"]
        for t in p["targets"]
    }
    assert uids == {datasource["uid"]}


def test_dashboard_covers_what_the_issue_asks():
    titles = " | ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for topic in ("requests per second", "latency", "batch size", "queue depth", "errors"):
        assert topic in titles


def test_dashboard_metrics_exist_in_the_service(server):
    from tests.service.conftest import encode_image, fmnist_images

    for body in (encode_image(fmnist_images(1)[0], "PNG"), b"not an image"):
        httpx.post(f"{server.url}/purify", content=body)  # every labelled series appears
    exposed = set(re.findall(r"^(purifier_[a-z_]+)", httpx.get(f"{server.url}/metrics").text, re.M))
    used = {m for q in dashboard_queries() for m in re.findall(r"purifier_[a-z_]+", q)}
    assert used and used <= exposed, used - exposed
