"""What every work route does around its body: refuse when not ready, turn any failure
into a JSON error, and count the outcome."""

from __future__ import annotations

from types import TracebackType

from service.errors import ServiceError, as_service_error
from service.state import ServiceState

REJECTION_STATUSES = (408, 413, 415, 503, 504)


class TrackedRequest:
    """`with TrackedRequest(state, "purify"):` - counts requests by route and status and
    rejections by reason; re-raises failures as ServiceError (JSON by the handlers)."""

    def __init__(self, state: ServiceState, route: str) -> None:
        self.state, self.route = state, route

    def __enter__(self) -> TrackedRequest:
        if not self.state.accepting:
            self._count(503)
            self.state.metrics.rejections.labels("not_ready").inc()
            raise ServiceError(503, "not_ready", "the service is not ready", retry_after=1)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if err is None:
            self._count(200)
            return
        if not isinstance(err, Exception):  # cancellation and the like pass through
            return
        service_error = as_service_error(err)
        self._count(service_error.status)
        if service_error.status in REJECTION_STATUSES:
            self.state.metrics.rejections.labels(service_error.code).inc()
        if service_error is not err:
            raise service_error from err

    def _count(self, status: int) -> None:
        self.state.metrics.requests.labels(self.route, str(status)).inc()
