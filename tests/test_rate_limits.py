"""Per-API-key rate limits: one token bucket in Redis for the intake and the DRF views."""

from __future__ import annotations

import asyncio
import io
import time

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from common.errors import RateLimited
from notifications.api.auth import api_key_create
from notifications.models import ApiKey, Event
from notifications.rates import Rate, rate_parse
from notifications.services import ratelimits
from tests.redis_server import free_port
from tests.workers import database_url_for

GOOD = {"type": "comment.created", "recipients": ["ana"], "actor": "bo", "data": {"comment": "hi"}}
PROBLEM = "application/problem+json"


def drf_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def bearer(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


async def _post_all(base_url: str, raw_key: str, count: int, path: str, body) -> list:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=base_url, headers=bearer(raw_key), limits=limits, timeout=30
    ) as http:
        return await asyncio.gather(*[http.post(path, json=body) for _ in range(count)])


def post_concurrently(
    base_url: str, raw_key: str, count: int, path: str = "/api/v1/events", body=GOOD
) -> list[httpx.Response]:
    return asyncio.run(_post_all(base_url, raw_key, count, path, body))


def assert_too_many(response, content_type: str, retry_after: str | None) -> None:
    assert response.status_code == 429
    assert content_type == PROBLEM
    assert retry_after is not None and int(retry_after) >= 1
    assert response.json()["status"] == 429


# --- the rate and where it is set ---------------------------------------------
@pytest.mark.parametrize(
    ("text", "rate"),
    [("20/s", Rate(20, 1)), ("600/m", Rate(600, 60)), (" 10000 / h ", Rate(10000, 3600))],
)
def test_a_rate_is_n_per_second_minute_or_hour(text, rate):
    assert rate_parse(text) == rate


@pytest.mark.parametrize("text", ["", "20", "20/d", "fast", "0/s", "-1/s", "2.5/s", "20/sec"])
def test_anything_else_is_not_a_rate(text):
    with pytest.raises(ValueError):
        rate_parse(text)


@pytest.mark.django_db
def test_create_api_key_stores_the_rate_it_is_given():
    out = io.StringIO()
    call_command(
        "create_api_key", "billing", "--rate-limit", "20/s", stdout=out, stderr=io.StringIO()
    )

    key = ApiKey.objects.get(name="billing")
    assert key.rate_limit == "20/s"
    assert out.getvalue().strip().splitlines()[-1].startswith(key.prefix)


@pytest.mark.django_db
def test_create_api_key_refuses_a_malformed_rate_and_creates_nothing():
    with pytest.raises(CommandError, match="--rate-limit"):
        call_command(
            "create_api_key", "billing", "--rate-limit", "20 per second", stderr=io.StringIO()
        )
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_the_admin_form_refuses_a_malformed_rate_and_stores_a_valid_one(admin_client):
    add = "/admin/notifications/apikey/add/"
    refused = admin_client.post(add, {"name": "a", "rate_limit": "lots"})
    assert refused.status_code == 200
    assert "is not a rate" in refused.content.decode()
    assert not ApiKey.objects.exists()

    admin_client.post(add, {"name": "b", "rate_limit": "600/m"})
    assert ApiKey.objects.get(name="b").rate_limit == "600/m"


# --- the DRF views --------------------------------------------------------------
@pytest.mark.django_db
def test_a_drf_endpoint_answers_429_problem_json_with_retry_after_over_the_limit(clean_redis):
    # Per minute, not per second: on a loaded machine five requests can take
    # longer than the 200 ms in which a 5/s bucket earns its next token.
    _, raw = api_key_create(name="five", rate_limit="5/m")
    client = drf_client(raw)

    statuses = [client.get("/api/v1/notification-types").status_code for _ in range(5)]
    refused = client.get("/api/v1/notification-types")

    assert statuses == [200] * 5
    assert_too_many(refused, refused["Content-Type"], refused.get("Retry-After"))


@pytest.mark.django_db
def test_the_bucket_refills_after_retry_after(clean_redis):
    _, raw = api_key_create(name="five", rate_limit="5/s")
    client = drf_client(raw)
    while client.get("/api/v1/notification-types").status_code != 429:
        pass
    refused = client.get("/api/v1/notification-types")
    time.sleep(int(refused["Retry-After"]))

    assert client.get("/api/v1/notification-types").status_code == 200


@pytest.mark.django_db
def test_the_default_rate_applies_to_keys_without_their_own(clean_redis, settings):
    settings.CLARION = {**settings.CLARION, "API_RATE_LIMIT": "2/h"}
    _, default_raw = api_key_create(name="default")
    _, own_raw = api_key_create(name="own", rate_limit="100/h")

    def statuses(raw: str) -> list[int]:
        return [drf_client(raw).get("/api/v1/notification-types").status_code for _ in range(3)]

    defaults, owns = statuses(default_raw), statuses(own_raw)

    assert defaults == [200, 200, 429]
    assert owns == [200, 200, 200]


@pytest.mark.django_db
def test_keys_without_a_rate_and_without_a_default_are_not_limited(clean_redis):
    _, raw = api_key_create(name="free")
    client = drf_client(raw)

    assert {client.get("/api/v1/notification-types").status_code for _ in range(20)} == {200}
    assert not clean_redis.keys(f"{ratelimits.KEY_PREFIX}*")


@pytest.mark.django_db
def test_a_drf_batch_costs_one_token_per_event(clean_redis, comment_type):
    _, raw = api_key_create(name="ten", rate_limit="10/h")
    client = drf_client(raw)

    def batch(size: int) -> int:
        body = {"events": [GOOD] * size}
        return client.post("/api/v1/events/batch", body, format="json").status_code

    assert [batch(4), batch(7), batch(6), batch(1)] == [207, 429, 207, 429]


@pytest.mark.django_db
def test_with_redis_unreachable_drf_requests_are_let_through_and_counted(clean_redis, settings):
    from prometheus_client import REGISTRY

    _, raw = api_key_create(name="five", rate_limit="1/h")
    before = REGISTRY.get_sample_value("clarion_rate_limiter_errors_total") or 0
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    ratelimits.rate_limit_clients_reset()
    try:
        statuses = [drf_client(raw).get("/api/v1/notification-types").status_code for _ in range(3)]
    finally:
        ratelimits.rate_limit_clients_reset()

    assert statuses == [200, 200, 200]
    assert REGISTRY.get_sample_value("clarion_rate_limiter_errors_total") - before == 3


# --- the event-loop limiter's leases (two limiters stand for two web processes) -----
def take_all(limiters: list, rate: Rate, count: int, api_key_id: int = 7) -> int:
    """How many of `count` takes, spread over the limiters in turn, pass."""

    async def scenario() -> int:
        passed = 0
        for n in range(count):
            try:
                limiter = limiters[n % len(limiters)]
                await limiter.take(api_key_id=api_key_id, key_name="k", rate=rate)
                passed += 1
            except RateLimited:
                pass
        return passed

    return asyncio.run(scenario())


def tokens_left(redis_client, api_key_id: int = 7) -> float:
    return float(redis_client.hget(ratelimits.bucket_key(api_key_id), "tokens"))


def test_leasing_processes_together_never_pass_more_than_the_bucket(clean_redis):
    rate = rate_parse("1000/h")  # leases of 10 tokens; the refill adds ~0.3 a second

    passed = take_all([ratelimits.AsyncRateLimiter(), ratelimits.AsyncRateLimiter()], rate, 1100)

    assert 1000 <= passed <= 1002


def test_a_lease_left_over_is_given_back_to_the_bucket(clean_redis, monkeypatch):
    monkeypatch.setattr(ratelimits, "LEASE_SECONDS", 0.05)
    limiter = ratelimits.AsyncRateLimiter()
    rate = rate_parse("1000/h")

    take_all([limiter], rate, 1)  # 1 taken, 10 leased
    after_lease = tokens_left(clean_redis)
    time.sleep(0.1)
    take_all([limiter], rate, 1)  # the lease is stale: its 10 go back, 1 taken, 10 leased again

    assert after_lease == pytest.approx(989, abs=0.1)
    assert tokens_left(clean_redis) == pytest.approx(988, abs=0.1)


def test_a_refused_key_is_refused_without_asking_redis_until_retry_after(clean_redis):
    limiter = ratelimits.AsyncRateLimiter()
    rate = rate_parse("1/h")
    assert take_all([limiter], rate, 2) == 1

    clean_redis.delete(ratelimits.bucket_key(7))  # Redis would now let one through

    assert take_all([limiter], rate, 1) == 0


def test_small_buckets_are_not_leased(clean_redis):
    limiter = ratelimits.AsyncRateLimiter()

    take_all([limiter], rate_parse("99/s"), 1)

    assert tokens_left(clean_redis) == pytest.approx(98, abs=0.1)


# --- the event-loop intake (a real uvicorn) ----------------------------------------
intake = pytest.mark.usefixtures("comment_type", "clean_redis")


@intake
@pytest.mark.django_db(transaction=True)
@pytest.mark.pipeline
def test_the_sixth_quick_intake_request_on_a_5_per_second_key_is_429_and_counted(asgi_server):
    _, raw = api_key_create(name="intake five", rate_limit="5/s")

    responses = post_concurrently(asgi_server.base_url, raw, 6)

    assert sorted(r.status_code for r in responses) == [202] * 5 + [429]
    refused = next(r for r in responses if r.status_code == 429)
    assert_too_many(refused, refused.headers["content-type"], refused.headers.get("retry-after"))
    assert Event.objects.count() == 5
    metrics = httpx.get(f"{asgi_server.base_url}/metrics").text
    assert 'clarion_rate_limited_total{key="intake five"} 1.0' in metrics


@intake
@pytest.mark.django_db(transaction=True)
@pytest.mark.pipeline
def test_an_intake_key_refused_passes_again_after_retry_after(asgi_server):
    _, raw = api_key_create(name="intake refill", rate_limit="5/s")
    refused = [r for r in post_concurrently(asgi_server.base_url, raw, 7) if r.status_code == 429]
    time.sleep(int(refused[0].headers["retry-after"]))

    (again,) = post_concurrently(asgi_server.base_url, raw, 1)

    assert again.status_code == 202


@intake
@pytest.mark.django_db(transaction=True)
@pytest.mark.pipeline
def test_fifty_concurrent_intake_requests_on_a_bucket_of_ten_accept_exactly_ten(asgi_server):
    # 10/h: the bucket of a 10/s key, with a refill too slow to change the
    # count however long 50 requests take on a busy machine.
    _, raw = api_key_create(name="ten", rate_limit="10/h")

    responses = post_concurrently(asgi_server.base_url, raw, 50)

    assert sorted(r.status_code for r in responses) == [202] * 10 + [429] * 40
    assert Event.objects.count() == 10


@intake
@pytest.mark.django_db(transaction=True)
@pytest.mark.pipeline
def test_the_intake_and_a_drf_view_in_another_process_share_one_bucket(asgi_server):
    _, raw = api_key_create(name="shared", rate_limit="5/h")

    served = post_concurrently(asgi_server.base_url, raw, 3)
    viewed = [drf_client(raw).get("/api/v1/notification-types").status_code for _ in range(3)]

    assert [r.status_code for r in served] == [202] * 3
    assert viewed == [200, 200, 429]


@intake
@pytest.mark.django_db(transaction=True)
@pytest.mark.pipeline
def test_an_intake_batch_costs_one_token_per_event_and_may_exceed_the_bucket(asgi_server):
    _, raw = api_key_create(name="batches", rate_limit="10/h")
    _, big_raw = api_key_create(name="big", rate_limit="10/h")

    def batch(key: str, size: int) -> int:
        body = {"events": [GOOD] * size}
        (response,) = post_concurrently(asgi_server.base_url, key, 1, "/api/v1/events/batch", body)
        return response.status_code

    assert [batch(raw, 4), batch(raw, 7), batch(raw, 6), batch(raw, 1)] == [207, 429, 207, 429]
    assert [batch(big_raw, 15), batch(big_raw, 1)] == [207, 429]  # a full bucket, then in debt
    assert Event.objects.count() == 25


@pytest.mark.django_db(transaction=True)
@pytest.mark.pipeline
def test_with_redis_unreachable_the_intake_answers_and_counts_the_failures(comment_type):
    from tests.servers import AsgiServer

    _, raw = api_key_create(name="no redis")
    server = AsgiServer(
        database_url=database_url_for(connection.settings_dict),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        extra_env={"CLARION_API_RATE_LIMIT": "1/h"},
    )
    server.start()
    try:
        started = time.monotonic()
        statuses = [r.status_code for r in post_concurrently(server.base_url, raw, 3)]
        elapsed = time.monotonic() - started
        metrics = httpx.get(f"{server.base_url}/metrics").text
    finally:
        server.stop()

    assert statuses == [202, 202, 202]
    assert elapsed < 5
    assert "clarion_rate_limiter_errors_total 3.0" in metrics
