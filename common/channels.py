"""What Clarion knows about each channel, in one place: the fields of its
template, which of them are markup (variables HTML-escaped), what a message
cannot go without, where its address comes from, and what it sends when a
type has no template for it.

Rendering (templates_app/rendering.py), fan-out and delivery read these
specs; the provider that sends a channel is chosen in delivery/providers.py.
A new channel is a `Channel` choice and a spec here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from common.choices import Channel


class Required(NamedTuple):
    """At least one of `fields` must be non-empty; `message` says so when none is."""

    fields: tuple[str, ...]
    message: str


def _context_as_payload(context: dict[str, Any]) -> dict[str, str]:
    return {"payload": json.dumps(context, default=str)}


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    fields: tuple[str, ...]
    # Checked on every template of a type when it is defined, and on the
    # rendered content before a delivery is sent, so a message with nothing
    # in it fails loudly instead of going out.
    required: tuple[Required, ...]
    escaped: frozenset[str] = frozenset()
    # The recipient profile field holding the address; None where the
    # provider finds it (device tokens, subscriptions, endpoint URLs).
    address_field: str | None = None
    # What the channel sends for a type without its template (else it needs one).
    default_content: Callable[[dict[str, Any]], dict[str, str]] | None = None

    @property
    def external(self) -> bool:
        """Whether it gets delivery rows: in-app is delivered by its notification row."""
        return self.name != Channel.IN_APP


CHANNELS: dict[str, ChannelSpec] = {
    spec.name: spec
    for spec in (
        ChannelSpec(
            Channel.IN_APP.value,
            ("title", "body", "url"),
            (Required(("title",), "An in-app notification needs a title."),),
            escaped=frozenset({"title", "body"}),
        ),
        ChannelSpec(
            Channel.EMAIL.value,
            ("subject", "text", "html"),
            (
                Required(("subject",), "An email needs a subject."),
                Required(("text", "html"), "An email needs a text or an html body."),
            ),
            escaped=frozenset({"html"}),
            address_field="email",
        ),
        ChannelSpec(
            Channel.SMS.value,
            ("text",),
            (Required(("text",), "An SMS needs a text."),),
            address_field="phone",
        ),
        ChannelSpec(
            Channel.PUSH.value,
            ("title", "body"),
            (Required(("title", "body"), "A push notification needs a title or a body."),),
        ),
        ChannelSpec(
            Channel.WEB_PUSH.value,
            ("title", "body", "url"),
            (Required(("title", "body"), "A web push notification needs a title or a body."),),
        ),
        ChannelSpec(
            Channel.WEBHOOK.value,
            ("payload",),
            (Required(("payload",), "A webhook template needs a payload."),),
            default_content=_context_as_payload,
        ),
    )
}
assert set(CHANNELS) == {c.value for c in Channel}, "every Channel needs a spec"
