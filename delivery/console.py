"""A provider that writes each message to the log instead of sending it: for
development (`make run`) and for seeing exactly what would go out."""

from __future__ import annotations

import json
import logging

from delivery.providers import Message, Outcome

log = logging.getLogger("clarion.delivery.console")


class ConsoleProvider:
    def send(self, messages: list[Message]) -> list[Outcome]:
        for message in messages:
            log.info(
                "%s to %s (delivery %s): %s",
                message.channel,
                message.address or "-",
                message.delivery_id,
                json.dumps(message.content, ensure_ascii=False),
            )
        return [Outcome(message.delivery_id, "sent") for message in messages]
