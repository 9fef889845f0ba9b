"""Text shipped with the project, for the demo, the tests and the benchmarks.

* ``austen_paragraphs.jsonl.gz``: 7,087 paragraphs of Jane Austen's six novels (public domain), rebuilt
  from Debian's ``r-cran-janeaustenr`` by ``monitors/data/rebuild_austen.py``.
* ``detector_set.jsonl.gz``: labelled human and machine text for the synthetic-share detector. Human:
  prose paragraphs of the Python 3.11 documentation (PSF licence, Debian ``python3.11-doc``) and of Austen;
  machine: SmolLM2-135M-Instruct (Apache-2.0) prompted with the opening words of other such paragraphs, at
  two decoding settings. Rebuilt by ``monitors/data/rebuild_detector_set.py``.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
AUSTEN = DATA / "austen_paragraphs.jsonl.gz"
DETECTOR_SET = DATA / "detector_set.jsonl.gz"


def _read(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def austen_paragraphs() -> list[dict[str, str]]:
    """``[{"id", "book", "text"}, ...]`` in book order."""
    return _read(AUSTEN)


def detector_set() -> list[dict[str, str]]:
    """``[{"id", "label": "human"|"synthetic", "domain", "generator", "text"}, ...]`` sorted by id.

    ``generator`` is ``human``, ``smollm2-t0.8`` (the decoding setting to train on) or ``smollm2-t1.3``
    (held back: a decoding setting a detector trained on the other has not seen).
    """
    return _read(DETECTOR_SET)


_SENT = re.compile(r"(?<=[.!?])\s+")


def sentences(texts: list[str]) -> list[str]:
    """The sentences (of 4 words or more) of ``texts``."""
    return [s for t in texts for s in _SENT.split(t) if len(s.split()) >= 4]


def distinct_documents(sentences: list[str], n: int, rng: random.Random) -> list[str]:
    """``n`` documents of 20-200 words for benchmarks, made of random sentences (a random sentence from a random
    word on, then whole random sentences): realistic text that is not one paragraph repeated."""
    docs = []
    for _ in range(n):
        first = sentences[rng.randrange(len(sentences))].split()
        words = first[rng.randrange(len(first) // 2 + 1):]
        target = rng.randint(20, 200)
        while len(words) < target:
            words += sentences[rng.randrange(len(sentences))].split()
        docs.append(" ".join(words[:target]))
    return docs
