"""DRF's hook for per-API-key rate limits (the event-loop intake asks the same bucket)."""

from __future__ import annotations

from rest_framework.throttling import BaseThrottle

from notifications.api.auth import Producer
from notifications.services.ratelimits import rate_limit_take


class ApiKeyRateThrottle(BaseThrottle):
    """Takes a producer request's tokens; recipients and anonymous calls pass.

    Over the limit it raises RateLimited rather than returning False, so the
    429 carries the same problem body and Retry-After as the intake's. A view
    may define `rate_cost(request)` (the batch view: one token per event).
    """

    def allow_request(self, request, view) -> bool:
        producer = request.user
        if not isinstance(producer, Producer):
            return True
        rate = producer.rate
        if rate is None:
            return True
        cost = view.rate_cost(request) if hasattr(view, "rate_cost") else 1
        rate_limit_take(
            api_key_id=producer.api_key_id, key_name=producer.name, rate=rate, cost=cost
        )
        return True
