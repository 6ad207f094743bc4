"""API keys, request ids, CORS, the in-flight limit, slow bodies, and what reaches the
logs: over real HTTP to a real server."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from tests.service.conftest import encode_image, fmnist_images, post_concurrently
from tests.service.test_errors import assert_error

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode_image(fmnist_images(1)[0], "PNG")


@pytest.fixture(scope="module")
def locked(start_server):
    return start_server(PURIFIER_API_KEY=KEY, PURIFIER_CORS_ORIGINS='["https://app.example"]')


def test_every_response_has_a_request_id_and_a_safe_caller_id_is_kept(server, png):
    first = httpx.post(f"{server.url}/purify", content=png)
    second = httpx.get(f"{server.url}/nope")
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)
    kept = httpx.get(f"{server.url}/v2", headers={"X-Request-Id": "trace-42.a_b"})
    assert kept.headers["x-request-id"] == "trace-42.a_b"
    replaced = httpx.get(f"{server.url}/v2", headers={"X-Request-Id": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"


def test_without_a_key_configured_no_auth_is_needed_and_cors_is_off(server, png):
    response = httpx.post(
        f"{server.url}/purify", content=png, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = httpx.options(
        f"{server.url}/purify",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_api_key_is_required_on_work_and_metadata_routes(locked, png):
    for method, path in (("POST", "/purify"), ("GET", "/metrics"), ("GET", "/models")):
        assert_error(httpx.request(method, f"{locked.url}{path}", content=png), 401, "unauthorized")
    wrong = httpx.post(f"{locked.url}/purify", content=png, headers={"X-API-Key": KEY + "x"})
    assert_error(wrong, 401, "unauthorized")
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(f"{locked.url}/purify", content=png, headers=bearer).status_code == 200
    header = {"X-API-Key": KEY}
    assert httpx.post(f"{locked.url}/purify", content=png, headers=header).status_code == 200


def test_probes_and_the_page_need_no_key(locked):
    assert httpx.get(f"{locked.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{locked.url}/v2/health/live").status_code == 200
    page = httpx.get(f"{locked.url}/")
    assert page.status_code == 200 and 'id="key"' in page.text  # the page asks for the key


def test_cors_allows_only_the_configured_origin(locked):
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{locked.url}/purify",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )

    ok = preflight("https://app.example")
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in preflight("https://evil.example").headers


def test_unauthorised_requests_are_counted(locked):
    metrics = httpx.get(f"{locked.url}/metrics", headers={"X-API-Key": KEY}).text
    assert 'purifier_rejections_total{reason="unauthorized"}' in metrics


def test_in_flight_limit_refuses_with_503_json(start_server):
    capped = start_server(
        PURIFIER_MAX_CONCURRENT_REQUESTS="2",
        PURIFIER_MAX_QUEUE_DELAY_MS="300",
        PURIFIER_MAX_QUEUE_WAIT_S="60",
    )
    bodies = [encode_image(img, "PNG") for img in fmnist_images(12)]
    responses = asyncio.run(post_concurrently(capped.url, bodies))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}, statuses
    rejected = next(r for r in responses if r.status_code == 503)
    assert_error(rejected, 503, "too_many_requests")
    assert rejected.headers["retry-after"] == "1"
    assert httpx.get(f"{capped.url}/v2/health/ready").status_code == 200  # probes not capped


def read_http_reply(sock: socket.socket) -> str:
    """Headers and the whole Content-Length body: one recv may return the headers alone."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                0,
            )  # fmt: skip
            if len(body) >= length:
                return data.decode("latin-1")
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode("latin-1")
        data += chunk


def test_a_body_that_never_finishes_gets_408_and_others_are_served(start_server, png):
    slow = start_server(PURIFIER_BODY_TIMEOUT_S="1.0")
    with socket.create_connection(("127.0.0.1", slow.port)) as sock:
        sock.sendall(
            b"POST /purify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n" + png[:100]
        )
        # Meanwhile another client is served at once.
        t0 = time.perf_counter()
        assert httpx.post(f"{slow.url}/purify", content=png).status_code == 200
        assert time.perf_counter() - t0 < 1.0
        sock.settimeout(10)
        reply = read_http_reply(sock)
    assert reply.startswith("HTTP/1.1 408"), reply[:200]
    assert '"body_timeout"' in reply


def test_logs_carry_request_ids_but_no_request_data(server, png):
    logged = server
    secret_query = "model=fmnist-nrp&format=png&quality=77"
    response = httpx.post(
        f"{logged.url}/purify?{secret_query}", content=png, headers={"X-Request-Id": "req-123"}
    )
    assert response.status_code == 200
    httpx.post(f"{logged.url}/purify", content=b"GIF89a-not-really")
    time.sleep(0.3)
    log = logged.log.read_text()
    line = next(line for line in log.splitlines() if "[req-123]" in line)
    assert "POST /purify 200" in line
    assert "quality=77" not in log and "GIF89a" not in log


def test_a_large_multipart_upload_never_touches_the_disk(monkeypatch):
    """Multipart parts are parsed in memory (Starlette's own parser spools parts over
    1 MB to a temporary file)."""
    import tempfile

    from tests.live_server import in_process_server

    rollovers = []
    original = tempfile.SpooledTemporaryFile.rollover

    def spy(self):
        rollovers.append(self)
        return original(self)

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", spy)
    with in_process_server() as (url, _):
        big = b"\x89PNG\r\n\x1a\n" + bytes(3 * 1024 * 1024)  # 3 MiB, not a valid PNG
        response = httpx.post(f"{url}/purify", files={"image": ("big.png", big, "image/png")})
    assert response.status_code in (400, 415), response.text  # parsed, then refused
    assert rollovers == []
