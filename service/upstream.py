"""The user's model server behind the proxy (PURIFIER_UPSTREAM_URL): one pooled HTTP client
for the process, every call bounded by the request's deadline, and transport failures
turned into the JSON errors a caller can act on (502 unreachable, 504 too slow)."""

from __future__ import annotations

import time

import httpx

from service.config import Settings
from service.errors import ServiceError

# Readiness probes ask the upstream too; a probe must answer within its own timeout.
PROBE_TIMEOUT_S = 1.0
# An upstream's error message is passed on up to this long (it may quote the request).
MESSAGE_CHARS = 300


class Upstream:
    def __init__(self, settings: Settings) -> None:
        if not settings.upstream_url:
            raise ValueError("PURIFIER_UPSTREAM_URL is not set")
        self.url = settings.upstream_url.rstrip("/")
        self.connect_timeout_s = settings.upstream_connect_timeout_s
        limit = settings.upstream_max_connections
        self.client = httpx.AsyncClient(
            base_url=self.url,
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            # Request bodies are forwarded as they are: never re-encoded, never spooled.
            follow_redirects=False,
        )

    async def request(
        self,
        method: str,
        path: str,
        deadline: float,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One call that must end by `deadline` (time.perf_counter()): the upstream's
        answer, whatever its status; 504 past the deadline, 502 when it cannot be
        reached or breaks the connection."""
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise ServiceError(504, "upstream_timeout", "no time left for the upstream call")
        timeout = httpx.Timeout(remaining, connect=min(self.connect_timeout_s, remaining))
        try:
            return await self.client.request(
                method, path, content=content, headers=headers, timeout=timeout
            )
        except httpx.ConnectTimeout as err:
            raise ServiceError(
                502, "upstream_unreachable", f"upstream {self.url}: connect timed out"
            ) from err
        except httpx.TimeoutException as err:
            raise ServiceError(
                504,
                "upstream_timeout",
                f"upstream {self.url} did not answer {method} {path} within {remaining:.2f} s",
            ) from err
        except httpx.HTTPError as err:
            raise ServiceError(
                502, "upstream_unreachable", f"upstream {self.url}: {type(err).__name__}: {err}"
            ) from err

    async def probe(self, path: str) -> httpx.Response | None:
        """A GET for a health or metadata route: the answer, or None when there is none
        within PROBE_TIMEOUT_S."""
        try:
            return await self.request("GET", path, time.perf_counter() + PROBE_TIMEOUT_S)
        except ServiceError:
            return None

    async def aclose(self) -> None:
        await self.client.aclose()


def upstream_message(response: httpx.Response) -> str:
    """The upstream's own error message, at most MESSAGE_CHARS: the protocol's
    {"error": "..."} (or a JSON body's `error`/`detail`/`message`), else its text."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body = next((body[k] for k in ("error", "detail", "message") if k in body), body)
    text = body if isinstance(body, str) else str(body)
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."
