"""A recursively retrained text generator, to show what model collapse does to a data stream.

Generation 0 is a word bigram model fitted on human text; generation g+1 is fitted on a finite sample
of generation g's output, which is the setting of Shumailov et al. (Nature 2024): rare words that the
sample happens to miss are gone for good, so the tails thin out generation after generation while the
text stays locally fluent.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|[^\w\s]")
_START, _END = "<s>", "</s>"
_ATTACH = set(".,;:!?)'’")


def tokens(text: str) -> list[str]:
    """Words and punctuation marks, case kept (the generator writes what it reads)."""
    return _TOKEN.findall(text)


def detokenize(toks: Iterable[str]) -> str:
    """Join tokens with spaces, attaching closing punctuation to the word before it.

    >>> detokenize(["Yes", ",", "she", "said", "."])
    'Yes, she said.'
    """
    out = ""
    for t in toks:
        out += t if (t in _ATTACH or not out) else " " + t
    return out


class BigramGenerator:
    """A word bigram model. Constructor stores parameters; :meth:`fit` does the work (sklearn-style)."""

    def __init__(self, min_words: int = 15):
        self.min_words = min_words

    def fit(self, texts: Iterable[str]) -> BigramGenerator:
        counts: dict[str, Counter] = defaultdict(Counter)
        self.lengths_: list[int] = []
        for text in texts:
            seq = [_START, *tokens(text), _END]
            self.lengths_.append(len(seq) - 2)
            for a, b in zip(seq, seq[1:]):
                counts[a][b] += 1
        if not self.lengths_:
            raise ValueError("cannot fit a generator on no text")
        self.table_ = {}
        for ctx, nxt in counts.items():
            words = list(nxt)
            weights = np.fromiter(nxt.values(), dtype=float)
            self.table_[ctx] = (words, np.cumsum(weights) / weights.sum())
        return self

    def _next(self, ctx: str, rng: random.Random) -> str:
        words, cum = self.table_[ctx]
        return words[min(int(np.searchsorted(cum, rng.random(), side="right")), len(words) - 1)]

    def sample(self, n: int, rng: random.Random) -> list[str]:
        """``n`` documents whose lengths follow the training documents' lengths."""
        docs = []
        for _ in range(n):
            target = rng.choice(self.lengths_)
            out: list[str] = []
            ctx = _START
            while len(out) < target + 20:
                word = self._next(ctx, rng)
                if word == _END:
                    if len(out) >= min(self.min_words, target):
                        break
                    ctx = _START
                    continue
                out.append(word)
                ctx = word
            docs.append(detokenize(out))
        return docs


def recursive_generations(
    human: list[str], generations: int, refit_docs: int, seed: int = 0
) -> list[BigramGenerator]:
    """Generation 0 fitted on ``human``; each later one on ``refit_docs`` samples of the one before."""
    rng = random.Random(seed)
    models = [BigramGenerator().fit(human)]
    for _ in range(generations):
        models.append(BigramGenerator().fit(models[-1].sample(refit_docs, rng)))
    return models
