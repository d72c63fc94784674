"""Text from the server (run names, notes, messages, tags) made safe to print: a terminal obeys escape
sequences, so a run named "\x1b[2J..." would clear the screen of whoever lists it, and "\x1b]8;;..." would
plant a link. ANSI CSI and OSC sequences are removed whole, every other control character is dropped; a
newline and a tab are kept where the caller allows several lines (a table)."""

from __future__ import annotations

import re

_SEQUENCES = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI (7- or 8-bit): cursor, erase, colours
                        r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c|$)"  # OSC: title, link (to BEL or ST)
                        r"|\x1b[PX^_][^\x1b]*(?:\x1b\\|$)"  # DCS, SOS, PM, APC strings
                        r"|\x1b.?")  # any other escape
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROLS_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(text: object, lines: bool = False) -> str:
    """`text` as str without escape sequences or control characters (but \\n and \\t when `lines`)."""
    cleaned = _SEQUENCES.sub("", str(text))
    return (_CONTROLS_BUT_LINES if lines else _CONTROLS).sub("", cleaned)
