"""Human text shipped with the project: 7,087 paragraphs of Jane Austen's six novels (public domain).

Rebuilt from Debian's ``r-cran-janeaustenr`` by ``monitors/data/rebuild_austen.py``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

AUSTEN = Path(__file__).resolve().parent / "data" / "austen_paragraphs.jsonl.gz"


def austen_paragraphs() -> list[dict[str, str]]:
    """``[{"id", "book", "text"}, ...]`` in book order."""
    with gzip.open(AUSTEN, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]
