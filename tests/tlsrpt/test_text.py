"""Text from strangers is shown with its control characters made visible."""

from __future__ import annotations

from app.tlsrpt.text import display


def test_controls_escaped() -> None:
    forged = 'ok"}\n{"level":"ERROR"}\r\x1b[2J\u202eevil\u2028\x00\x7f\x85'
    shown = display(forged)
    assert shown == (
        'ok"}\\u000a{"level":"ERROR"}\\u000d\\u001b[2J\\u202eevil\\u2028\\u0000\\u007f\\u0085'
    )


def test_printable_text_unchanged_and_long_text_cut() -> None:
    assert display("Google Inc. — café ✓") == "Google Inc. — café ✓"
    assert display("a" * 300, 10) == "a" * 10 + "…"
