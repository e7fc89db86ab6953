"""Domain errors that the API turns into problem+json responses."""

from __future__ import annotations


class ClarionError(Exception):
    """An error a client can act on; carries its HTTP status and field errors."""

    status = 400
    title = "Bad request"

    def __init__(
        self, detail: str, *, errors: dict[str, list[str]] | None = None, status: int | None = None
    ):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}
        if status is not None:
            self.status = status

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the answer must carry (e.g. Retry-After)."""
        return {}

    @property
    def extra(self) -> dict[str, object]:
        """Members the problem body carries besides type/title/status/detail/errors."""
        return {}


class InvalidInput(ClarionError):
    status = 422
    title = "Invalid input"


class TooLarge(ClarionError):
    status = 413
    title = "Payload too large"


class NotFound(ClarionError):
    status = 404
    title = "Not found"


class Conflict(ClarionError):
    status = 409
    title = "Conflict"


class RateLimited(ClarionError):
    status = 429
    title = "Too many requests"

    def __init__(self, *, retry_after: int):
        super().__init__(f"This API key's rate limit is used up; retry in {retry_after} s.")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Overloaded(ClarionError):
    """Backpressure: the fan-out backlog is past this priority's bound."""

    status = 429
    title = "Too many requests"

    def __init__(
        self, *, priority: str, backlog_seconds: float, bound_seconds: float, retry_after: int
    ):
        super().__init__(
            f"Fan-out is {backlog_seconds:.1f} s behind, past the {bound_seconds:g} s bound for"
            f" {priority!r} events; retry in {retry_after} s. 'high' and 'critical' events"
            " are accepted.",
            errors={
                "priority": [
                    f"{priority!r} events are refused while the fan-out backlog passes"
                    f" {bound_seconds:g} s."
                ]
            },
        )
        self.priority = priority
        self.backlog_seconds = backlog_seconds
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}

    @property
    def extra(self) -> dict[str, object]:
        # `retry_after` too: a refused item of a batch answer has no headers of its own.
        return {"backlog_seconds": round(self.backlog_seconds, 1), "retry_after": self.retry_after}
