"""A plain-text part for an email that only has HTML: text, line breaks, link targets.

One pass over the markup, never rescanning: html.parser rescans the rest of
the input for every unclosed `<` (262 s for 256 KiB of `<a x`; an AssertionError
for `<![<![`), and the markup here is whatever a template rendered. Markup that
is cut off (a tag, comment or declaration without its end) is kept as text
from there on, as html.parser does at the end of its input.
"""

from __future__ import annotations

import re
from html import unescape

_BLOCKS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
)
_SKIPPED = frozenset({"script", "style", "head"})  # their text is not shown
_RAW_TEXT = frozenset({"script", "style"})  # their content is not markup
# A start or end tag up to its `>`, quoted attribute values included; possessive, so a tag
# that never closes is given up in one scan.
_TAG = re.compile(r"""<(/?)([a-zA-Z][^\s/>\x00]*+)((?:[^>"']++|"[^"]*+"|'[^']*+')*+)>""")
_UNESCAPE_SLICE = 8192
_SPACE_OR_QUOTE = " \t\n\r\f\"'"
_OPEN = re.compile(r"<[a-zA-Z/!?]")
# Past this many tags the rest is converted by two regular-expression passes
# (blocks become line breaks, other tags vanish, links lose their targets):
# the walk costs a few microseconds of Python per tag, and 65,536 `<p>` made
# it 200 ms. Real emails have hundreds of tags.
MAX_WALKED_TAGS = 10_000
_BLOCK_TAG = re.compile(r"</?(?:" + "|".join(sorted(_BLOCKS)) + r")\b[^>]*+>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[a-zA-Z/][^>]*+>")
_HREF = re.compile(r"""(?:^|[\s/])href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE)


def _unescape(text: str) -> str:
    """html.unescape, a slice at a time: it makes one object per `&`, all kept until the end.
    A slice ends before an `&`, and no reference contains one, so none is cut in two."""
    if len(text) <= _UNESCAPE_SLICE:
        return unescape(text)
    parts = []
    start = 0
    while start < len(text):
        end = text.rfind("&", start + 1, start + _UNESCAPE_SLICE)
        if end < 0 or start + _UNESCAPE_SLICE >= len(text):
            end = min(len(text), start + _UNESCAPE_SLICE)
        parts.append(unescape(text[start:end]))
        start = end
    return "".join(parts)


class _Text:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.skip = 0
        self.links: list[str] = []

    def data(self, text: str) -> None:
        if text and not self.skip:
            self.parts.append(_unescape(text) if "&" in text else text)

    def start(self, tag: str, attributes: str) -> None:
        if tag in _SKIPPED:
            self.skip += 1
        if tag in _BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            match = _HREF.search(attributes)
            values = match.groups() if match else ()
            href = next((value for value in values if value is not None), "")
            self.links.append(unescape(href))

    def end(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip = max(0, self.skip - 1)
        if tag == "a" and self.links:
            href = self.links.pop()
            if href:
                self.parts.append(f" ({href})")
        if tag in _BLOCKS:
            self.parts.append("\n")


def _walk(markup: str, text: _Text) -> None:
    pos = 0
    lowered: str | None = None  # for finding a raw-text element's end tag
    tags = 0
    while True:  # leaves with a return at the end of the markup, a break where it is cut off
        tags += 1
        if tags > MAX_WALKED_TAGS:
            rest = _ANY_TAG.sub("", _BLOCK_TAG.sub("\n", markup[pos:]))
            text.data(rest)
            return
        opening = _OPEN.search(markup, pos)  # a `<` followed by anything else is text
        if opening is None:
            text.data(markup[pos:])
            return
        start = opening.start()
        kind = markup[start + 1]
        if kind == "!" and markup.startswith("<!--", start):
            end = markup.find("-->", start + 4)
            if end < 0:
                break
            end += 3
        elif kind in "!?" or kind == "/" and not markup[start + 2 : start + 3].isalpha():
            # a declaration, a processing instruction or a bogus comment
            end = markup.find(">", start + 2)
            if end < 0:
                break
            end += 1
        else:
            tag = _TAG.match(markup, start)
            if tag is None:
                break  # a tag that never closes
            end = tag.end()
            closing, name, attributes = tag.groups()
            text.data(markup[pos:start])
            pos = end
            name = name.lower()
            if closing:
                text.end(name)
                continue
            text.start(name, attributes)
            # <br/>, <img src='x' /> (in <a href=x/> the slash is the value's)
            if attributes == "/" or attributes.endswith("/") and attributes[-2] in _SPACE_OR_QUOTE:
                text.end(name)
            elif name in _RAW_TEXT:
                lowered = lowered if lowered is not None else markup.lower()
                content_end = lowered.find(f"</{name}", pos)
                if content_end < 0:
                    return  # the rest is the element's content
                pos = content_end  # the content is skipped (script and style never show)
            continue
        text.data(markup[pos:start])
        pos = end
    text.data(markup[pos:])


def text_from_html(markup: str) -> str:
    """A plain-text part for an email that only has HTML: text, line breaks, link targets."""
    text = _Text()
    _walk(markup, text)
    joined = "".join(text.parts)
    joined = re.sub(r"[ \t]+", " ", joined)
    joined = re.sub(r" *\n *", "\n", joined)
    return re.sub(r"\n{3,}", "\n\n", joined).strip()
