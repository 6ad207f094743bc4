"""Schema-driven fuzzing of every route (schemathesis over the service's own OpenAPI
schema, real HTTP): no request may crash the service or get an unexpected 5xx.

CI runs PURIFIER_FUZZ_EXAMPLES (default 25) examples per operation; `make fuzz` runs
enough for >= 10,000 requests and writes benchmarks/results/fuzz.json.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.conftest import REPO

EXAMPLES = int(os.environ.get("PURIFIER_FUZZ_EXAMPLES", "25"))
REPORT = os.environ.get("PURIFIER_FUZZ_REPORT")  # where `make fuzz` wants its figures
STATUSES: Counter[str] = Counter()
PER_OPERATION: Counter[str] = Counter()


# The noise key the fuzzed server holds: no answer to any fuzzed request may contain it.
NOISE_KEY = "fuzz-noise-key-" + "5e3c8a1f" * 4
LEAKS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzz_server(start_server, tmp_path_factory):
    """fmnist-nrp (the default) beside a stochastic model, whose noise is keyed."""
    from tests.service import stochastic_model

    repository = stochastic_model.write_repository(tmp_path_factory.mktemp("fuzz-models"))
    (repository / "fmnist-nrp").symlink_to(REPO / "exported_models" / "fmnist-nrp")
    # Wide admission limits: fuzzing measures correctness, not shedding.
    return start_server(
        PURIFIER_MAX_QUEUE_WAIT_S="60",
        PURIFIER_BODY_TIMEOUT_S="5",
        PURIFIER_MODEL_REPOSITORY=str(repository),
        PURIFIER_NOISE_KEY=NOISE_KEY,
    )


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


def operations() -> list[str]:
    """Every operation of the schema, as "METHOD /path" (read from the app, offline)."""
    from service.app import create_app

    openapi = create_app().openapi()
    return [f"{m.upper()} {p}" for p, methods in openapi["paths"].items() for m in methods]


# schemathesis' own pytest plugin does not run under pytest 9, so each operation's
# hypothesis strategy is driven here directly.
@pytest.mark.parametrize("operation", operations())
def test_no_server_errors(operation: str, api_schema, fuzz_server):
    method, path = operation.split(" ", 1)
    strategy = api_schema[path][method].as_strategy()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=strategy, real_model=st.sampled_from([None, "fmnist-nrp", "tiny-noisy"]))
    def fuzz(case, real_model: str | None) -> None:
        if real_model and "name" in (case.path_parameters or {}):
            case.path_parameters["name"] = real_model  # past the 404, into the handler
        response = case.call(base_url=fuzz_server.url, timeout=30)
        STATUSES[str(response.status_code)] += 1
        PER_OPERATION[operation] += 1
        answer = response.content + json.dumps(dict(response.headers)).encode()
        LEAKS[operation] += NOISE_KEY.encode() in answer
        case.validate_response(response, checks=[not_a_server_error])

    fuzz()


def test_the_service_survived_the_fuzzing(fuzz_server):
    assert fuzz_server.proc.poll() is None  # no crash
    assert httpx.get(f"{fuzz_server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{fuzz_server.url}/v2/health/ready").status_code == 200
    total = sum(STATUSES.values())
    server_errors = sum(n for s, n in STATUSES.items() if s.startswith("5"))
    assert total > 0 and server_errors == 0, STATUSES
    assert sum(LEAKS.values()) == 0, LEAKS  # the noise key in no answer
    assert NOISE_KEY.encode() not in fuzz_server.log.read_bytes()
    if REPORT:
        report = {
            "command": "make fuzz",
            "examples_per_operation": EXAMPLES,
            "requests": total,
            "by_status": dict(sorted(STATUSES.items())),
            "by_operation": dict(sorted(PER_OPERATION.items())),
            "server_errors": server_errors,
            "noise_key_in_answers": sum(LEAKS.values()),
            "crashed": False,
        }
        (REPO / REPORT).write_text(json.dumps(report, indent=2) + "\n")
