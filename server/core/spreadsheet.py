"""CSV cells a spreadsheet opens safely: text that starts like a formula (`= + - @`, a tab or a CR) gets a
leading apostrophe, OWASP's advice against CSV injection. Numbers are written as numbers, untouched."""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_START) else text
