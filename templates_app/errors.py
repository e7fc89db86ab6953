"""The one error a template can raise to its callers."""

from __future__ import annotations


class TemplateError(Exception):
    """A template could not be rendered within the rules; the message says why."""
