"""A recursively retrained text generator, to show what model collapse does to a data stream.

Generation 0 is a word bigram model fitted on human text; generation g+1 is fitted on a finite sample
of generation g's output, which is the setting of Shumailov et al. (Nature 2024): rare words that the
sample happens to miss are gone for good, so the tails thin out generation after generation while the
text stays locally fluent.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

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
        return self._build(counts)

    def to_dict(self) -> dict:
        """The fitted state as plain JSON-ready data (the demo stores it so that loading it unpickles nothing)."""
        return {"min_words": self.min_words, "lengths": self.lengths_, "counts": self.counts_}

    @classmethod
    def from_dict(cls, state: dict) -> BigramGenerator:
        gen = cls(min_words=int(state["min_words"]))
        gen.lengths_ = [int(n) for n in state["lengths"]]
        return gen._build({ctx: Counter(nxt) for ctx, nxt in state["counts"].items()})

    def _build(self, counts: dict[str, Counter]) -> BigramGenerator:
        self.table_ = {}
        self.unigram_: Counter = Counter()
        for ctx, nxt in counts.items():
            words = list(nxt)
            weights = np.fromiter(nxt.values(), dtype=float)
            self.table_[ctx] = (words, np.cumsum(weights) / weights.sum())
            self.unigram_.update(nxt)
        self.counts_ = {ctx: dict(nxt) for ctx, nxt in counts.items()}
        self.context_totals_ = {ctx: sum(nxt.values()) for ctx, nxt in counts.items()}
        self.tokens_ = sum(self.unigram_.values())
        return self

    def loglik(self, text: str, mix: float = 0.7) -> tuple[float, int]:
        """Natural-log likelihood of the text's tokens (and the end mark) and how many there are.

        The bigram estimate is interpolated with an add-one unigram (one extra type for unseen words), so
        a word the model never saw costs a lot but not infinity.
        """
        seq = [_START, *tokens(text), _END]
        vocab = len(self.unigram_) + 1
        total = 0.0
        for a, b in zip(seq, seq[1:]):
            uni = (self.unigram_.get(b, 0) + 1) / (self.tokens_ + vocab)
            ctx = self.counts_.get(a)
            bi = ctx.get(b, 0) / self.context_totals_[a] if ctx else 0.0
            total += math.log(mix * bi + (1 - mix) * uni)
        return total, len(seq) - 1

    def continue_text(self, prompt: str, n_words: int, rng: random.Random) -> str:
        """Up to ``n_words`` words that follow the prompt's last word (a fresh start if it never saw it)."""
        toks = tokens(prompt)
        ctx = toks[-1] if toks and toks[-1] in self.table_ else _START
        out: list[str] = []
        while len(out) < n_words:
            word = self._next(ctx, rng)
            if word == _END:
                break
            out.append(word)
            ctx = word
        return detokenize(out)

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
    human: list[str], generations: int, refit_docs: int, seed: int = 0, accumulate: bool = False
) -> list[BigramGenerator]:
    """Generation 0 fitted on ``human``; each later one on ``refit_docs`` samples of the one before
    (*replace*), or, with ``accumulate``, on the human text plus every generation's samples so far (the
    setting in which Gerstgrasser et al. 2024 find that collapse does not happen)."""
    rng = random.Random(seed)
    models = [BigramGenerator().fit(human)]
    pooled = list(human)
    for _ in range(generations):
        fresh = models[-1].sample(refit_docs, rng)
        pooled += fresh
        models.append(BigramGenerator().fit(pooled if accumulate else fresh))
    return models


def classifier_lineage(train: list[tuple[str, str]], pool: list[str], generations: int, per_generation: int,
                       seed: int = 0, accumulate: bool = False) -> list[tuple[object, float]]:
    """A text classifier retrained on its own labels: generation 0 learns from human labels (``train``:
    (text, label) pairs); generation g+1 from ``per_generation`` unlabelled texts of ``pool`` labelled by
    generation g (*replace*), or from everything so far including the human labels (*accumulate*).

    Returns each generation's fitted pipeline and the synthetic (model-labelled) share of its training
    data. Rare classes are under-predicted, so under *replace* they fade from the labels and then from the
    model: the tail goes first.
    """
    rng = random.Random(seed)
    data = list(train)
    models = [(_fit_classifier(data), 0.0)]
    for _ in range(generations):
        texts = rng.sample(pool, per_generation)
        labelled = list(zip(texts, models[-1][0].predict(texts)))
        data = data + labelled if accumulate else labelled
        synthetic = 1 - len(train) / len(data) if accumulate else 1.0
        models.append((_fit_classifier(data), round(synthetic, 4)))
    return models


def _fit_classifier(data: list[tuple[str, str]]):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(sublinear_tf=True),
                          LogisticRegression(C=10, max_iter=1000, class_weight="balanced"))
    return model.fit([t for t, _ in data], [str(y) for _, y in data])


def long_tail_split(rows: list[dict[str, str]], label: str, train_counts: Sequence[int], test_per_class: int,
                    pool_factor: float = 1.5, seed: int = 0, min_words: int = 20) -> tuple[list[dict], list[dict], list[dict]]:
    """Labelled rows cut into a long-tailed training set (the i-th most common label in ``rows`` gets
    ``train_counts[i]`` examples), a balanced test set and an unlabelled pool with the training set's long
    tail (``pool_factor`` times its counts: the stream a later generation is labelled on), each shuffled."""
    rng = random.Random(seed)
    by: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if len(row["text"].split()) >= min_words:
            by[row[label]].append(row)
    classes = sorted(by, key=lambda c: (-len(by[c]), c))[:len(train_counts)]
    train, test, pool = [], [], []
    for c, n in zip(classes, train_counts):
        items = by[c][:]
        rng.shuffle(items)
        if len(items) < test_per_class + n + round(n * pool_factor):
            raise ValueError(f"label {c!r} has {len(items)} rows, fewer than the split needs")
        test += items[:test_per_class]
        train += items[test_per_class:test_per_class + n]
        pool += items[test_per_class + n:test_per_class + n + round(n * pool_factor)]
    for part in (train, test, pool):
        rng.shuffle(part)
    return train, test, pool


class NGramGenerator:
    """A word n-gram model of configurable ``order`` (2 = bigram) with decoding truncation: ``top_k`` keeps the k
    most probable next words of each context, ``top_p`` the smallest set of them holding that share of its
    mass (nucleus sampling). Untruncated sampling is the unbiased refit of Shumailov et al.; truncation is the
    decoding that also removes the tail's mass (Dohmatob et al. 2024). Every context it can reach was seen in
    training, so no back-off is needed."""

    def __init__(self, order: int = 2, top_k: int | None = None, top_p: float | None = None, min_words: int = 15):
        if order < 1:
            raise ValueError(f"order must be at least 1, not {order}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {top_p}")
        self.order, self.top_k, self.top_p, self.min_words = order, top_k, top_p, min_words

    def fit(self, texts: Iterable[str]) -> NGramGenerator:
        counts: dict[tuple, Counter] = defaultdict(Counter)
        self.lengths_: list[int] = []
        pad = [_START] * (self.order - 1)
        for text in texts:
            seq = [*pad, *tokens(text), _END]
            self.lengths_.append(len(seq) - len(pad) - 1)
            for i in range(len(pad), len(seq)):
                counts[tuple(seq[i - len(pad):i])][seq[i]] += 1
        if not self.lengths_:
            raise ValueError("cannot fit a generator on no text")
        self.table_ = {}
        for ctx, nxt in counts.items():
            ranked = sorted(nxt.items(), key=lambda kv: (-kv[1], kv[0]))
            weights = np.array([c for _, c in ranked], dtype=float)
            keep = len(ranked) if self.top_k is None else min(self.top_k, len(ranked))
            if self.top_p is not None:
                keep = min(keep, int(np.searchsorted(np.cumsum(weights) / weights.sum(), self.top_p) + 1))
            w = weights[:keep]
            self.table_[ctx] = ([word for word, _ in ranked[:keep]], np.cumsum(w) / w.sum())
        self.types_ = len({word for nxt in counts.values() for word in nxt} - {_END})
        return self

    def _next(self, ctx: tuple, rng: random.Random) -> str:
        words, cum = self.table_[ctx]
        return words[min(int(np.searchsorted(cum, rng.random(), side="right")), len(words) - 1)]

    def sample(self, n: int, rng: random.Random) -> list[str]:
        """``n`` documents, each exactly as many tokens long as a training document drawn at random: the length
        distribution is refit like everything else, without a bias of its own. (:class:`BigramGenerator` stops
        at the first end mark after a few words, which shortens every generation by a fifth and would make the
        length rule fire for a reason that is not collapse.) An end mark before that length starts a new
        sentence; the document is cut at the length."""
        start = (_START,) * (self.order - 1)
        docs = []
        for _ in range(n):
            target = max(rng.choice(self.lengths_), 1)
            out: list[str] = []
            ctx = start
            while len(out) < target:
                word = self._next(ctx, rng)
                if word == _END:
                    ctx = start
                    continue
                out.append(word)
                ctx = (*ctx[1:], word) if ctx else ()
            docs.append(detokenize(out))
        return docs


def text_lineage(human: list[str], generations: int, policy_name: str, human_share: float = 0.0, order: int = 2,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0):
    """Generation 1 fitted on ``human``; generation t+1 on ``len(human)`` documents sampled from generation t
    (``replace``), on those with a share ``human_share`` of them drawn from ``human`` instead (``mix``), or on
    ``human`` plus every generation's samples so far (``accumulate``). Yields ``(generation, model, sample)``
    where ``sample`` is that generation's ``len(human)`` documents: what the next generation trains on and what
    a monitor would see arrive."""
    rng = random.Random(seed)
    size = len(human)
    pooled = list(human)
    model = NGramGenerator(order, top_k, top_p).fit(human)
    for t in range(1, generations + 1):
        sample = model.sample(size, rng)
        yield t, model, sample
        if t == generations:
            return
        if policy_name == "accumulate":
            pooled += sample
            train = pooled
        elif policy_name == "mix":
            k = round(human_share * size)
            train = rng.sample(human, k) + sample[: size - k]
        else:
            train = sample
        model = NGramGenerator(order, top_k, top_p).fit(train)
