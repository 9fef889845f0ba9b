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
