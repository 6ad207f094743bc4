"""Every Kubernetes manifest validates against the 1.37 schemas (strict: unknown fields
are errors), the kustomize overlays render and validate, and the probes, ports and GPU
settings say what the service actually does."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import kubernetes_validate
import pytest

from tests.conftest import REPO
from tests.deploy.kustomize import load_documents, render

K8S = REPO / "k8s"
K8S_VERSION = "1.37.0"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
PLAIN_MANIFESTS = sorted(
    p
    for p in K8S.rglob("*.yaml")
    if p.name != "kustomization.yaml" and p.parent.parent.name != "overlays"
)


def validate(resource: dict) -> None:
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def containers(resource: dict) -> list[dict]:
    spec = resource["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def purifier_container(resources: list[dict]) -> dict:
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    return next(c for c in containers(deployment) if c["image"].startswith("purifier:"))


def test_there_are_manifests_and_both_overlays():
    assert {p.name for p in OVERLAYS} == {"cpu", "gpu"}
    assert len(PLAIN_MANIFESTS) >= 6


@pytest.mark.parametrize("path", PLAIN_MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates(path: Path):
    for resource in load_documents(path):
        validate(resource)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_renders_and_validates(overlay: Path):
    resources = render(overlay)
    kinds = sorted(r["kind"] for r in resources)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    for resource in resources:
        validate(resource)
    assert purifier_container(resources)["image"] == f"purifier:{overlay.name}"


def test_the_validator_rejects_a_broken_manifest():
    deployment = load_documents(K8S / "base" / "deployment.yaml")[0]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    missing = copy.deepcopy(deployment)
    del missing["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(missing)


@pytest.mark.parametrize("source", ["overlays/cpu", "examples/sidecar.yaml"])
def test_probes_use_the_open_inference_protocol_routes_on_the_served_port(source, server):
    """Readiness asks the default model's own ready route (a quick start: the others warm
    in the background), liveness the server's; the running service answers both."""
    import httpx

    from service.app import default_model_name
    from service.config import PREFERRED_DEFAULT_MODELS

    path = K8S / source
    resources = render(path) if path.is_dir() else load_documents(path)
    container = purifier_container(resources)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    routes = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert port_names[get["port"]] == 8080
        routes[probe] = get["path"]
    settings = _settings_as_deployed(resources)
    models = json.loads(settings.get("PURIFIER_MODELS", json.dumps(PREFERRED_DEFAULT_MODELS)))
    default = default_model_name(settings.get("PURIFIER_DEFAULT_MODEL"), models)
    assert routes == {
        "startupProbe": f"/v2/models/{default}/ready",
        "readinessProbe": f"/v2/models/{default}/ready",
        "livenessProbe": "/v2/health/live",
    }
    test_default = httpx.get(f"{server.url}/models").json()["default"]  # the test server's
    for route in {"/v2/health/live", "/v2/health/ready", f"/v2/models/{test_default}/ready"}:
        assert httpx.get(f"{server.url}{route}").status_code == 200, route


def test_configmap_port_matches_the_container_and_the_service():
    resources = render(K8S / "overlays" / "cpu")
    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    service = next(r for r in resources if r["kind"] == "Service")
    container = purifier_container(resources)
    assert int(config["PURIFIER_PORT"]) == container["ports"][0]["containerPort"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert config["PURIFIER_HOST"] == "0.0.0.0"  # probes and Services reach the Pod IP


def test_settings_in_the_configmaps_exist_and_parse(monkeypatch):
    from service.config import Settings

    fields = {f"PURIFIER_{name.upper()}" for name in Settings.model_fields}
    for overlay in OVERLAYS:
        data = next(r for r in render(overlay) if r["kind"] == "ConfigMap")["data"]
        assert set(data) <= fields, set(data) - fields  # a typo would be silently ignored
        for key, value in data.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.port == int(data["PURIFIER_PORT"])
        assert settings.request_timeout_s == float(data["PURIFIER_REQUEST_TIMEOUT_S"])


def test_gpu_overlay_asks_for_a_gpu_and_refuses_to_fall_back():
    resources = render(K8S / "overlays" / "gpu")
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = purifier_container(resources)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    assert config["PURIFIER_REQUIRE_GPU"] == "true"
    assert config["PURIFIER_PROVIDERS"].startswith('["cuda"')


def test_sidecar_starts_purifier_first_and_the_classifier_calls_localhost():
    deployment, service = load_documents(K8S / "examples" / "sidecar.yaml")
    pod = deployment["spec"]["template"]["spec"]
    sidecar = pod["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: started before the app
    classifier = pod["containers"][0]
    env = {e["name"]: e["value"] for e in classifier["env"]}
    assert env["PURIFIER_URL"] == "http://127.0.0.1:8080/purify"
    assert service["spec"]["ports"][0]["targetPort"] == "http"  # the purifier is not exposed


def test_proxy_layout_exposes_only_purifier_which_calls_the_model_server_on_localhost(
    monkeypatch,
):
    """Issue 39: the model server is a native sidecar on a Pod-local port; Purifier's
    settings parse, point at it, and its readiness includes the upstream's."""
    from service.config import Settings

    deployment, service = load_documents(K8S / "examples" / "proxy.yaml")
    pod = deployment["spec"]["template"]["spec"]
    model_server = pod["initContainers"][0]
    assert model_server["restartPolicy"] == "Always"  # up before Purifier, down after it
    upstream_port = model_server["ports"][0]["containerPort"]
    assert f"--http_port={upstream_port}" in model_server["args"]
    container = purifier_container([deployment])
    for item in container["env"]:
        monkeypatch.setenv(item["name"], item["value"])
    settings = Settings()
    assert settings.upstream_url == f"http://127.0.0.1:{upstream_port}"
    assert settings.upstream_image_inputs == ["image"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == container["ports"][0]["name"] == "purifier"


@pytest.mark.parametrize(
    "source", ["overlays/cpu", "overlays/gpu", "examples/sidecar.yaml", "examples/proxy.yaml"]
)
def test_the_noise_key_comes_from_a_secret_mounted_read_only(source):
    path = K8S / source
    resources = render(path) if path.is_dir() else load_documents(path)
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = purifier_container(resources)
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    key_file = Path(env["PURIFIER_NOISE_KEY_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(key_file.parent))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "purifier-noise-key"
    assert volume["secret"]["items"] == [{"key": "noise-key", "path": key_file.name}]
    # Readable by the non-root user through its group, by nobody else.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    assert volume["secret"]["defaultMode"] == 0o440
    assert "PURIFIER_NOISE_KEY" not in env  # never the key itself in a manifest


def test_hpa_and_pdb_select_the_deployment():
    resources = {r["kind"]: r for r in render(K8S / "overlays" / "cpu")}
    deployment = resources["Deployment"]
    assert (
        resources["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == (deployment["metadata"]["name"])
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "Service"):
        spec = resources[kind]["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items()


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def _settings_as_deployed(resources: list[dict]) -> dict[str, str]:
    """The purifier container's PURIFIER_* settings: its ConfigMap, then its own env."""
    container = purifier_container(resources)
    env = {}
    if container.get("envFrom"):
        env |= next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    env |= {e["name"]: e["value"] for e in container.get("env", [])}
    return env


@pytest.mark.parametrize("source", ["overlays/cpu", "examples/sidecar.yaml"])
def test_the_memory_limit_holds_the_warmed_up_server_as_deployed(source, tmp_path):
    """Started with the container's settings and the models the image bakes in (every
    exported model), the warmed-up server - each session's arena holding its largest
    batch - uses at most 3/4 of the container's memory limit, the rest being for the
    requests in flight. A model added to exported_models/ can push a manifest over."""
    from service.config import Settings
    from tests.live_server import Server

    path = K8S / source
    resources = render(path) if path.is_dir() else load_documents(path)
    limit = _bytes(purifier_container(resources)["resources"]["limits"]["memory"])
    defaults = Settings.model_fields
    env = {  # undo the test server's one-model, small-warm-up defaults
        "PURIFIER_INTRA_OP_THREADS": str(defaults["intra_op_threads"].default),
        "PURIFIER_WARMUP_SIZES": json.dumps(defaults["warmup_sizes"].default),
        "PURIFIER_CODEC_THREADS": str(defaults["codec_threads"].default),
        "OMP_NUM_THREADS": str(os.cpu_count()),
        **_settings_as_deployed(resources),
        "PURIFIER_MODEL_REPOSITORY": str(REPO / "exported_models"),  # the image's /models
        "PURIFIER_HOST": "127.0.0.1",
    }
    if "PURIFIER_NOISE_KEY_FILE" in env:  # the Secret's mount, here a file of our own
        key_file = tmp_path / "noise-key"
        key_file.write_text("a-test-key-of-32-characters-long")
        env["PURIFIER_NOISE_KEY_FILE"] = str(key_file)
    server = Server(env, tmp_path / "log.txt")
    try:
        server.wait_ready(timeout=180)
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        rss = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1]) * 1024
    finally:
        server.stop()
    assert rss <= 0.75 * limit, f"{rss / 2**20:.0f} MB resident of a {limit / 2**20:.0f} MB limit"


def test_the_batch_job_runs_the_purify_command_with_a_served_model():
    """Issue 39: the Job's command line is one `purifier purify` accepts, for a model the
    image bakes in, writing to a different folder than it reads."""
    from purifier.cli import build_parser

    (job,) = load_documents(K8S / "examples" / "batch-job.yaml")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("purifier:") and container["command"][0] == "purifier"
    args = build_parser().parse_args(container["command"][1:] + container["args"])
    assert args.command == "purify" and (REPO / "exported_models" / args.model).is_dir()
    assert Path(args.out) not in [Path(i) for i in args.inputs]
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert all(any(str(p).startswith(m) for m in mounted) for p in [*args.inputs, args.out])
