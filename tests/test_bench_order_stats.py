"""The order figures of the `ordering` benchmark (bench/order_stats.py)."""

from __future__ import annotations

from itertools import permutations

from bench.order_stats import adjacent_swaps, inversions, spread, view_figures


def _pairs_out_of_order(sequence: list[int]) -> int:
    return sum(1 for i, a in enumerate(sequence) for b in sequence[i + 1 :] if a > b)


def test_inversions_count_every_pair_out_of_order():
    for sequence in permutations(range(6)):
        assert inversions(list(sequence)) == _pairs_out_of_order(list(sequence))


def test_the_issue_sequence_has_one_inversion_and_one_adjacent_swap():
    sequence = [1000, 1002, 1001, 1003, 1004]
    assert (inversions(sequence), adjacent_swaps(sequence)) == (1, [1])


def test_a_late_item_counts_one_inversion_per_item_it_trails():
    assert (inversions([1, 2, 3, 0]), len(adjacent_swaps([1, 2, 3, 0]))) == (3, 1)


def test_view_figures_count_lost_and_duplicate_items_apart_from_order():
    figures = view_figures([0, 1, 1, 3, 0], expected=[0, 1, 2, 3])
    counts = ("items", "inversions", "adjacent_swaps", "lost", "duplicates")
    assert {k: figures[k] for k in counts} == {
        "items": 3,
        "inversions": 0,
        "adjacent_swaps": 0,
        "lost": 1,
        "duplicates": 2,
    }
    assert (figures["lost_examples"], figures["duplicate_examples"]) == ([2], [0, 1])


def test_view_figures_ignore_items_that_were_not_expected():
    assert view_figures([5, 0, None, 1], expected=[0, 1])["inversions"] == 0


def test_spread_gives_median_and_range_over_runs():
    assert spread([3, 0, 1]) == {"median": 1, "min": 0, "max": 3, "runs": [3, 0, 1]}


def test_spread_of_no_values_is_empty():
    assert spread([None, None])["median"] is None
