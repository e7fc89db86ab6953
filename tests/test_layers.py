"""group_send_many against real Redis and channels-redis's own receiver."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from realtime.layers import dispatch_batch


def run(coro):
    return asyncio.run(coro)


class Recorder:
    """The part of a consumer dispatch_batch uses: a channel name and handlers."""

    def __init__(self, channel_name: str):
        self.channel_name = channel_name
        self.seen: list[int] = []

    async def n(self, message: dict) -> None:
        self.seen.append(message["i"])


async def received(layer, channel: str) -> list[int]:
    """What a consumer on `channel` handles from its next layer message."""
    consumer = Recorder(channel)
    await dispatch_batch(consumer, await layer.receive(channel))
    return consumer.seen


@pytest.fixture
def layer(clean_redis):
    from channels.layers import channel_layers

    channel_layers.backends.clear()  # a fresh layer (and connection pool) for this event loop
    yield get_channel_layer()
    channel_layers.backends.clear()


def test_many_group_sends_arrive_on_every_member_in_the_order_given(layer):
    async def scenario():
        tab_a, tab_b, other = [await layer.new_channel() for _ in range(3)]
        await layer.group_add("inbox.1", tab_a)
        await layer.group_add("inbox.1", tab_b)
        await layer.group_add("inbox.2", other)
        dropped = await layer.group_send_many(
            [
                ("inbox.1", {"type": "n", "i": 1}),
                ("inbox.2", {"type": "n", "i": 2}),
                ("inbox.1", {"type": "n", "i": 3}),
                ("inbox.9", {"type": "n", "i": 4}),
                ("inbox.1", {"type": "n", "i": 5}),
            ]
        )
        handled = {
            name: await received(layer, channel)
            for name, channel in (("a", tab_a), ("b", tab_b), ("other", other))
        }
        return dropped, handled

    dropped, handled = run(scenario())

    assert dropped == 0
    assert handled == {"a": [1, 3, 5], "b": [1, 3, 5], "other": [2]}


def test_a_full_process_channel_drops_the_batch_and_counts_it(layer):
    layer.capacity = 1

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add("inbox.3", channel)
        first = await layer.group_send_many([("inbox.3", {"type": "n", "i": 0})])
        second = await layer.group_send_many([("inbox.3", {"type": "n", "i": 1})])
        return first, second, await received(layer, channel)

    assert run(scenario()) == (0, 1, [0])
