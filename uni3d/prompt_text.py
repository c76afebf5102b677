"""What a prompt may hold: visible text without control characters (the one rule of ``generate``, ``batch`` and the app).

A control character (a newline, a tab, a terminal escape such as ``ESC [ 31 m``) would be echoed raw into logs,
tables and the terminal, and a prompt of only invisible characters (a zero-width space) would run an empty prompt
silently; both are refused with one line naming the problem.
"""

from __future__ import annotations

import unicodedata

from uni3d.errors import UsageError

_INVISIBLE = frozenset({"Cf", "Zs", "Zl", "Zp"})
"""Unicode categories that print nothing on their own: format characters (zero-width space, joiners) and spaces."""


def control_characters(text: str) -> list[str]:
    """The distinct control characters (Unicode category ``Cc``) of ``text``, as ``U+XXXX`` names."""
    return list(dict.fromkeys(f"U+{ord(ch):04X}" for ch in text if unicodedata.category(ch) == "Cc"))


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: empty, or only spaces and invisible format characters."""
    return all(unicodedata.category(ch) in _INVISIBLE for ch in text)


def check_prompt(text: str, *, what: str = "the prompt", allow_blank: bool = False) -> None:
    """One-line :class:`UsageError` when ``text`` holds control characters or (unless ``allow_blank``) shows nothing."""
    found = control_characters(text)
    if found:
        raise UsageError(f"{what} holds control characters ({', '.join(found[:3])}); give plain text on one line")
    if not allow_blank and is_blank(text):
        shown = "empty" if not text.strip() else "only invisible characters"
        raise UsageError(f"{what} is {shown}; give a text such as 'a red cube'")
