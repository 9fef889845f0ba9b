"""Tokenisation shared by every text indicator, so that a batch and its reference are cut alike."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits; inner apostrophes kept).

    >>> words("Mr. Darcy's pride, and 2 balls!")
    ['mr', "darcy's", 'pride', 'and', '2', 'balls']
    """
    return _WORD.findall(text.lower())


def shown(path: str) -> str:
    """A file name as it may be printed: control characters (a newline in a name) escaped, never raw.

    >>> shown("a\\nb.jsonl")
    'a\\\\nb.jsonl'
    """
    return path if path.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)
