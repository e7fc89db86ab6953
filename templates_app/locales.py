"""Locale fallback: `pt-BR` → `pt` → the type's default locale → any."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def locale_chain(wanted: str, default: str) -> list[str]:
    chain: list[str] = []
    if wanted:
        chain.append(wanted)
        language = wanted.split("-", 1)[0]
        if language != wanted:
            chain.append(language)
    if default and default not in chain:
        chain.append(default)
        language = default.split("-", 1)[0]
        if language not in chain:
            chain.append(language)
    return chain


def pick_locale(variants: Mapping[str, T], wanted: str, default: str) -> T | None:
    """The variant for the first locale of the fallback chain that exists.

    Locale tags compare case-insensitively (`pt-br` finds `pt-BR`).
    """
    if not variants:
        return None
    lowered = {key.lower(): value for key, value in variants.items()}
    for locale in locale_chain(wanted, default):
        hit = lowered.get(locale.lower())
        if hit is not None:
            return hit
    return next(iter(variants.values()))
