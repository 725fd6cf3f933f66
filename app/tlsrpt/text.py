"""Showing text from received reports and mails without letting it steer the reader.

A report or mail from a stranger may carry control characters: a newline that forges
a log line, an escape sequence that repaints a terminal, a bidirectional override that
reorders what an operator reads. `display` turns every such character into a visible
`\\uXXXX` escape and bounds the length, for log fields, error reasons and CLI tables.
Stored data keeps the original; only its presentation is escaped.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, line and paragraph separators, bidirectional controls,
# zero-width characters and the BOM.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]"
)


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def display(value: str, limit: int = 200) -> str:
    """`value` with unsafe characters escaped, cut to about `limit` characters."""
    if len(value) > limit:
        value = value[:limit] + "…"
    return _UNSAFE.sub(_escape, value)
