"""The match language: anchors chosen (pure), and the sweep's SQL agreeing
with the Python reading of `match` over a random corpus."""

from __future__ import annotations

import random

import pytest

from notifications.models import Event
from tests.test_saved_searches import load, put_items, sweep, watch
from tests.test_saved_searches import load_type as load_type  # noqa: F401, PLC0414 (fixture)
from triggers.matching import MAX_ANCHOR_ROWS, Anchor, anchor_of, matches


def test_strings_and_lists_up_to_three_anchor_the_trigger_together():
    anchor = anchor_of(
        {"origin": "D", "dest": ["A", "B"], "equipment": ["van"], "extra": ["1", "2", "3"]}
    )

    assert anchor.attributes == ("dest", "equipment", "origin")
    assert anchor.keys == (("A", "van", "D"), ("B", "van", "D"))


def test_two_string_equalities_anchor_the_trigger_together():
    assert anchor_of({"origin": "Dallas", "rate": {"gte": 2}, "dest": "Austin"}) == Anchor(
        ("dest", "origin"), (("Austin", "Dallas"),)
    )


def test_an_any_of_list_is_one_anchor_key_per_value():
    assert anchor_of({"origin": "Dallas", "equipment": ["van", "reefer"]}) == Anchor(
        ("equipment", "origin"), (("van", "Dallas"), ("reefer", "Dallas"))
    )


def test_the_item_id_anchors_a_favourite_alone():
    assert anchor_of({"id": ["L-1", "L-2"], "origin": "Dallas"}) == Anchor(
        ("id",), (("L-1",), ("L-2",))
    )


def test_a_product_of_lists_too_large_leaves_the_widest_list_to_the_check():
    big = [f"v{i}" for i in range(MAX_ANCHOR_ROWS)]
    anchor = anchor_of({"a": big, "b": ["x", "y"]})
    assert anchor.attributes == ("b",) and len(anchor.keys) == 2


def test_numbers_and_booleans_anchor_only_when_nothing_else_does():
    assert anchor_of({"origin": "D", "weight": 40000, "hazmat": True}).attributes == ("origin",)
    assert anchor_of({"weight": 40000, "hazmat": True}).attributes == ("weight",)


def test_ranges_only_anchor_on_nothing():
    assert anchor_of({"rate": {"gte": 1}}) == Anchor((), ((),))
    assert anchor_of({}) == Anchor((), ((),))


def test_booleans_anchor_last():
    assert anchor_of({"hazmat": True}).attributes == ("hazmat",)


CITIES = ["A", "B", "C", "D"]
EQUIPMENT = ["van", "reefer", "flatbed"]


def _random_match(rng: random.Random) -> dict:
    match: dict = {}
    if rng.random() < 0.7:
        match["origin"] = rng.choice(CITIES)
    if rng.random() < 0.5:
        match["dest"] = rng.sample(CITIES, rng.randint(1, 3))
    if rng.random() < 0.5:
        match["equipment"] = rng.choice([rng.choice(EQUIPMENT), rng.sample(EQUIPMENT, 2)])
    if rng.random() < 0.5:
        bounds = rng.sample(["gte", "gt", "lte", "lt"], rng.randint(1, 2))
        match["rate"] = {b: rng.choice([1, 1.5, 2, 2.5, 3]) for b in bounds}
    if rng.random() < 0.2:
        match["hazmat"] = rng.choice([True, False])
    if rng.random() < 0.1:
        match["id"] = rng.choice(["I1", "I2", ["I3", "I4"]])
    return match


def _random_attributes(rng: random.Random) -> dict:
    attributes: dict = {}
    if rng.random() < 0.9:
        attributes["origin"] = rng.choice(CITIES)
    if rng.random() < 0.9:
        attributes["dest"] = rng.choice([rng.choice(CITIES), rng.sample(CITIES, 2)])
    if rng.random() < 0.9:
        attributes["equipment"] = rng.choice(
            [rng.choice(EQUIPMENT), rng.sample(EQUIPMENT, 2), 7, None]
        )
    if rng.random() < 0.9:
        attributes["rate"] = rng.choice([1, 1.5, 2, 2.0, 2.5, 3, "2", True])
    if rng.random() < 0.5:
        attributes["hazmat"] = rng.choice([True, False, 1, "true"])
    return attributes


@pytest.mark.django_db
def test_the_sweep_fires_exactly_the_pairs_the_match_language_names(load_type):
    rng = random.Random(20261202)
    triggers = {f"t{i}": _random_match(rng) for i in range(150)}
    items = {f"I{i}": _random_attributes(rng) for i in range(150)}
    for key, match in triggers.items():
        watch(f"r-{key}", key=key, match=match)
    put_items(*(load(item_id, **attributes) for item_id, attributes in items.items()))

    sweep()

    fired = {
        (e.data["trigger"], e.data["item_id"]) for e in Event.objects.filter(type__key="load.match")
    }
    expected = {
        (key, item_id)
        for key, match in triggers.items()
        for item_id, attributes in items.items()
        if matches(match, attributes, item_id)
    }
    assert len(expected) > 100
    assert fired == expected
