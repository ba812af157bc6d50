"""Text from the data made inert before it is shown: on a terminal, in an error line, on a page.

Ids, file names, instructions and responses come from whoever made the data set (an attacker,
possibly). A control character in them could move the cursor, set a terminal's window title
(OSC), forge an extra "error:" line (a newline), or, with a bidirectional override such as
U+202E, make a page show text in another order than it is stored. `inert` writes each such
character as a visible escape (\\x1b, \\n, \\u202e), so what is shown is what is there.
"""

from __future__ import annotations

import unicodedata

# Unicode's bidirectional formatting characters: embeddings, overrides, isolates and marks.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown(char: str) -> str:
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def _is_control(char: str) -> bool:
    # Cc: C0 and C1 controls (ESC, CSI, NEL, ...); Zl/Zp: line and paragraph separators
    return char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Zl", "Zp")


def inert(text: str, keep: str = "") -> str:
    """`text` with every control character and bidirectional control written as a visible escape;
    the characters in `keep` (a page's newlines and tabs, say) stay as they are."""
    return "".join(_shown(c) if c not in keep and _is_control(c) else c for c in str(text))
