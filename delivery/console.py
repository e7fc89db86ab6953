"""A provider that writes each message to the log instead of sending it: for
development (`make run`) and for seeing exactly what would go out.

Each message is one log record holding a framed block (channel, to, the
subject or title, the body, then any other field), so it stands out among the
one-line records around it:

    email to lu@example.com (delivery 12), written here instead of sent
    ┌──────────────────────────────────────────────────────────────────────
    │ channel  email
    │ to       lu@example.com
    │ subject  Hi lu
    │
    │ a <b>
    │
    │ html     <p>a &lt;b&gt;</p>
    └──────────────────────────────────────────────────────────────────────
"""

from __future__ import annotations

import json
import logging
import re
import textwrap

from delivery.providers import Message, Outcome

log = logging.getLogger("clarion.delivery.console")

WIDTH = 72  # of the text inside the frame; longer lines wrap
TOP = "┌" + "─" * (WIDTH + 2)
BOTTOM = "└" + "─" * (WIDTH + 2)
SIDE = "│ "
LABEL_WIDTH = 8
HEADLINE_FIELDS = ("subject", "title")
BODY_FIELDS = ("text", "body")
# A template renders recipients' and producers' data: a terminal escape in it
# must not reach the developer's terminal as one (it could rewrite the screen).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _wrapped(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for line in text.splitlines() or [""]:
        lines.extend(
            textwrap.wrap(line, width, break_long_words=True, replace_whitespace=False) or [""]
        )
    return lines


def _field(label: str, value: object) -> list[str]:
    text = _wrapped(_printable(value), WIDTH - LABEL_WIDTH - 1)
    indent = " " * (LABEL_WIDTH + 1)
    return [f"{label:<{LABEL_WIDTH}} {text[0]}", *(indent + line for line in text[1:])]


def message_block(message: Message) -> str:
    """The framed text the console shows for one message (its log record's message)."""
    content = message.content if isinstance(message.content, dict) else {"body": message.content}
    # Push targets are device tokens or web-push subscriptions: long and not for reading.
    count = len(message.targets)
    to = message.address or (f"{count} device{'s' if count != 1 else ''}" if count else "-")
    rows = [*_field("channel", message.channel), *_field("to", to)]
    shown = set()
    for name in HEADLINE_FIELDS:
        if content.get(name) not in (None, ""):
            rows += _field(name, content[name])
            shown.add(name)
    for name in BODY_FIELDS:
        if content.get(name) not in (None, ""):
            rows += ["", *_wrapped(_printable(content[name]), WIDTH)]
            shown.add(name)
            break
    rest = [name for name in content if name not in shown]
    if rest:
        rows.append("")
        for name in rest:
            rows += _field(str(name), content[name])
    header = (
        f"{message.channel} to {to} (delivery {message.delivery_id}), written here instead of sent"
    )
    return "\n".join([_printable(header), TOP, *((SIDE + row).rstrip() for row in rows), BOTTOM])


class ConsoleProvider:
    def send(self, messages: list[Message]) -> list[Outcome]:
        for message in messages:
            log.info("%s", message_block(message), extra={"delivery_id": message.delivery_id})
        return [Outcome(message.delivery_id, "sent") for message in messages]
