"""Order figures of one view of a recipient's items (pure functions, no I/O).

A view is the sequence numbers of the items as they came (live frames in
receipt order, a resume in frame order, the inbox oldest first); the
acceptance order is 0, 1, 2, ... (each event was posted after the previous
one's 202).
"""

from __future__ import annotations

import statistics
from collections import Counter


def inversions(sequence: list[int]) -> int:
    """Pairs (i < j) with sequence[i] > sequence[j], by merge sort (n log n)."""

    def sort_count(items: list[int]) -> tuple[list[int], int]:
        if len(items) <= 1:
            return items, 0
        middle = len(items) // 2
        left, left_count = sort_count(items[:middle])
        right, right_count = sort_count(items[middle:])
        merged: list[int] = []
        count = left_count + right_count
        i = j = 0
        while i < len(left) and j < len(right):
            if right[j] < left[i]:
                merged.append(right[j])
                count += len(left) - i  # right[j] comes before every item left in `left`
                j += 1
            else:
                merged.append(left[i])
                i += 1
        merged.extend(left[i:])
        merged.extend(right[j:])
        return merged, count

    return sort_count(list(sequence))[1]


def adjacent_swaps(sequence: list[int]) -> list[int]:
    """Positions i where sequence[i] > sequence[i + 1] (a neighbour pair out of order)."""
    return [i for i in range(len(sequence) - 1) if sequence[i] > sequence[i + 1]]


def view_figures(received: list[int], expected: list[int]) -> dict:
    """Inversions, adjacent swaps, lost and duplicate items of one view.

    Order figures count each item at its first appearance; a repeat counts
    as a duplicate only. Items that are not expected (another run's) are ignored.
    """
    wanted = set(expected)
    seen: set[int] = set()
    first: list[int] = []
    repeats: Counter = Counter()
    for seq in received:
        if seq not in wanted:
            continue
        if seq in seen:
            repeats[seq] += 1
            continue
        seen.add(seq)
        first.append(seq)
    swaps = adjacent_swaps(first)
    lost = sorted(wanted - seen)
    return {
        "items": len(first),
        "inversions": inversions(first),
        "adjacent_swaps": len(swaps),
        "lost": len(lost),
        "duplicates": sum(repeats.values()),
        "swap_examples": [(first[i], first[i + 1]) for i in swaps[:20]],
        "lost_examples": lost[:20],
        "duplicate_examples": sorted(repeats)[:20],
    }


def spread(values: list[float | int | None]) -> dict:
    """Median, min and max over runs (None values, e.g. a failed figure, are left out)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "runs": values}
    median = statistics.median(present)
    whole = all(isinstance(v, int) for v in present)
    if whole and isinstance(median, float) and median.is_integer():
        median = int(median)
    return {"median": median, "min": min(present), "max": max(present), "runs": values}
