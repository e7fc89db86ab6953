"""No input makes a 500: schemathesis generates requests from the OpenAPI
schema (valid, invalid and boundary values, NUL and non-ASCII strings
included) against the real server. tests/test_hostile_paths.py adds the
path ids no generator reliably finds: NUL, 10,000 characters, %2F."""

from __future__ import annotations

import subprocess

import pytest

from notifications.api.auth import api_key_create
from notifications.models import Recipient
from notifications.services.tokens import recipient_token_issue
from tests.helpers import schemathesis_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]


def schemathesis(server, header: str, *extra: str) -> subprocess.CompletedProcess:
    """Schemathesis against the running server, NUL bytes included: no answer is a 5xx."""
    return schemathesis_run(
        server.base_url,
        header,
        checks="not_a_server_error",
        examples=20,
        seed=20261126,
        extra=("--generation-allow-x00", "true", "--generation-codec", "utf-8", *extra),
    )


def test_no_generated_producer_request_makes_a_500(asgi_server, comment_type):
    key = api_key_create(name="fuzz")[1]
    result = schemathesis(
        asgi_server, f"Authorization: Bearer {key}", "--exclude-path-regex", "inbox"
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_no_generated_inbox_request_makes_a_500(asgi_server):
    recipient = Recipient.objects.create(external_id="fuzz-reader")
    token = recipient_token_issue(recipient_id=recipient.id).token
    result = schemathesis(
        asgi_server, f"Authorization: Recipient {token}", "--include-path-regex", "inbox"
    )
    assert result.returncode == 0, result.stdout[-4000:]
