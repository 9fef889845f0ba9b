"""Word n-gram generators for the memorization probe: one that memorizes and one that does not.

* ``NgramGenerator(order=8, smoothing=0)``: unsmoothed; continues a context with what followed its longest
  seen suffix (up to 7 tokens), so a prompt taken from its training text is continued with that text, word
  for word. Its ``loglik`` is a stupid-backoff score (Brants et al. 2007: the relative frequency at the
  longest seen context, times 0.4 per step down; add-one unigrams at the bottom): finite, ranks texts, and
  is not a normalised probability.
* ``NgramGenerator(order=2, smoothing=1.0)``: a bigram with add-k smoothing, interpolated with add-one
  unigrams: a proper probability; greedy continuations are the corpus's commonest word chains, not its records.

The fitted state is the tokenised training text (JSON), from which the counts are rebuilt on load.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from monitors.core.memorization import tokens
from monitors.demo.simulate import detokenize

BACKOFF = 0.4
_START = "<s>"


class NgramGenerator:
    def __init__(self, order: int = 8, smoothing: float = 0.0, mix: float = 0.9):
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order, self.smoothing, self.mix = order, smoothing, mix

    def fit(self, texts: Iterable[str]) -> NgramGenerator:
        self.docs_ = [tokens(t) for t in texts]
        if not any(self.docs_):
            raise ValueError("cannot fit a generator on no text")
        return self._build()

    def to_dict(self) -> dict:
        return {"order": self.order, "smoothing": self.smoothing, "mix": self.mix, "docs": self.docs_}

    @classmethod
    def from_dict(cls, state: dict) -> NgramGenerator:
        gen = cls(int(state["order"]), float(state["smoothing"]), float(state.get("mix", 0.9)))
        gen.docs_ = [[str(t) for t in doc] for doc in state["docs"]]
        return gen._build()

    def _build(self) -> NgramGenerator:
        counts: dict[tuple[str, ...], Counter] = defaultdict(Counter)
        for doc in self.docs_:
            seq = [_START] * (self.order - 1) + doc
            for i in range(self.order - 1, len(seq)):
                for k in range(self.order):  # contexts of 0 .. order-1 tokens
                    counts[tuple(seq[i - k:i])][seq[i]] += 1
        self.counts_ = dict(counts)
        self.totals_ = {ctx: sum(c.values()) for ctx, c in counts.items()}
        self.unigram_ = counts[()]
        self.vocab_ = len(self.unigram_) + 1
        self.n_ = self.totals_[()]
        self.greedy_ = {ctx: max(c.items(), key=lambda kv: (kv[1], kv[0]))[0] for ctx, c in counts.items()}
        return self

    def _context(self, history: list[str]) -> tuple[str, ...]:
        seq = [_START] * (self.order - 1) + history
        return tuple(seq[len(seq) - (self.order - 1):]) if self.order > 1 else ()

    def _uni(self, word: str) -> float:
        return (self.unigram_.get(word, 0) + 1) / (self.n_ + self.vocab_)

    def _logp(self, ctx: tuple[str, ...], word: str) -> float:
        if self.smoothing > 0:  # add-k at the full context, interpolated with add-one unigrams
            c = self.counts_.get(ctx)
            p = ((c.get(word, 0) if c else 0) + self.smoothing) / (self.totals_.get(ctx, 0) + self.smoothing * self.vocab_)
            return math.log(self.mix * p + (1 - self.mix) * self._uni(word))
        penalty = 0.0
        for k in range(len(ctx), 0, -1):  # stupid backoff from the longest context
            sub = ctx[len(ctx) - k:]
            c = self.counts_.get(sub)
            if c and word in c:
                return penalty + math.log(c[word] / self.totals_[sub])
            penalty += math.log(BACKOFF)
        return penalty + math.log(self._uni(word))

    def loglik(self, text: str) -> tuple[float, int]:
        toks = tokens(text)
        return sum(self._logp(self._context(toks[:i]), w) for i, w in enumerate(toks)), len(toks)

    def _candidates(self, ctx: tuple[str, ...]) -> tuple[str, ...]:
        """The longest suffix of the context the model has seen (the empty one at worst)."""
        for k in range(len(ctx), -1, -1):
            sub = ctx[len(ctx) - k:]
            if sub in self.counts_:
                return sub
        return ()

    def continue_text(self, prompt: str, n_words: int, rng: random.Random | None = None, greedy: bool = False) -> str:
        """``n_words`` tokens after the prompt: the most frequent next token (greedy) or a sampled one."""
        history = tokens(prompt)
        out: list[str] = []
        for _ in range(n_words):
            ctx = self._candidates(self._context(history))
            if greedy or rng is None:
                word = self.greedy_[ctx]
            else:
                c = self.counts_[ctx]
                word = rng.choices(list(c), weights=list(c.values()))[0]
            out.append(word)
            history.append(word)
        return detokenize(out)
