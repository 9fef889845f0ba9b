"""Long-tail probe sets and the metrics computed on them. Pure: no Prefect, no MLflow.

A probe set is a JSONL file, one example per line::

    {"id": "p-0001", "text": "...", "label": "persuasion", "slice": "tail", "origin": "built"}

* ``slice``: ``head`` | ``torso`` | ``tail``. By class frequency (a class's place in the cumulative mass
  of the labels, most frequent first: the classes that make up the first ``head_mass`` of the examples are
  the head, those after ``1 - tail_mass`` the tail) or, for unlabelled text, by the rarity of a text's
  words in a human reference (the share of its words outside the reference's head vocabulary: the
  ``head_share`` least rare texts are the head, the ``tail_share`` rarest the tail).
* ``label``: the true class (classifiers); absent for text-only probe sets.
* ``prompt`` (optional): what a generative model is asked to continue; default: the first words of ``text``.
* ``origin``: ``built`` or ``edge_case`` (merged in from a hand-written file).

Classifier metrics per slice: accuracy, macro-F1 (over the classes present in the slice), expected
calibration error of the top-label confidence (when the model gives probabilities). Generative models:
perplexity of the slice's texts (when the model can score text) and the diversity of its outputs on the
slice's prompts, each as a ratio to the same measure on the slice's human texts (distinct-n, compression
ratio, self-similarity). Each slice also gets a *quality* (accuracy, or 1 / perplexity) from which the
comparison with earlier model versions is made.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitors.core.errors import InputError
from monitors.core.indicators import compression_ratio, ngram_counts, rarefied_distinct
from monitors.core.text import words
from monitors.core.schema import Tag

SLICES = ("head", "torso", "tail")
KINDS = ("classifier", "generator")
NAN = float("nan")
#: metrics that count examples, not measure them: never compared across versions (the memorization probe's too)
COUNTS = (".examples", ".records", ".control_records", ".canaries")


# -- building --------------------------------------------------------------------------------------------
def slices_by_frequency(counts: Counter, head_mass: float = 0.5, tail_mass: float = 0.2) -> dict[str, str]:
    """Each class's slice by its place in the cumulative label mass (most frequent first; ties by name).

    >>> slices_by_frequency(Counter(a=60, b=25, c=10, d=5))
    {'a': 'head', 'b': 'torso', 'c': 'tail', 'd': 'tail'}
    """
    if not 0 < head_mass <= 1 - tail_mass < 1:
        raise ValueError(f"need 0 < head_mass ({head_mass}) <= 1 - tail_mass ({1 - tail_mass}) < 1")
    total = sum(counts.values())
    out, before = {}, 0
    for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        share = before / total
        out[label] = "head" if share < head_mass else "tail" if share >= 1 - tail_mass else "torso"
        before += n
    return out


def rarity(text: str, head_vocabulary: frozenset[str] | set[str]) -> float:
    """Share of a text's words outside the reference's head vocabulary (nan for a text without words)."""
    toks = words(text)
    return sum(t not in head_vocabulary for t in toks) / len(toks) if toks else NAN


def head_vocabulary(texts: Iterable[str], head_mass: float = 0.8) -> frozenset[str]:
    """The most frequent words that together make up ``head_mass`` of the reference's tokens."""
    counts = Counter(t for text in texts for t in words(text))
    total, seen, head = sum(counts.values()), 0, set()
    for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if seen >= head_mass * total:
            break
        head.add(word)
        seen += n
    return frozenset(head)


def slices_by_rarity(scores: Sequence[float], head_share: float = 0.5, tail_share: float = 0.2) -> list[str]:
    """head for the ``head_share`` least rare texts, tail for the ``tail_share`` rarest, torso between
    (ranks, ties broken by position, so the slice sizes are exact)."""
    order = np.argsort(np.asarray(scores, dtype=float), kind="stable")
    n = len(order)
    n_head, n_tail = int(round(head_share * n)), int(round(tail_share * n))
    out = ["torso"] * n
    for rank, i in enumerate(order):
        out[i] = "head" if rank < n_head else "tail" if rank >= n - n_tail else "torso"
    return out


@dataclass
class BuildReport:
    rows: list[dict[str, Any]]
    by_slice: dict[str, int]
    classes: dict[str, str] = field(default_factory=dict)  # label -> slice (by label)
    edge_cases: int = 0


def _text_of(row: dict, where: str, text_col: str) -> str:
    text = row.get(text_col)
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: '{text_col}' must be a non-empty string")
    return text


def build_by_label(rows: list[dict], source: str, *, frequencies: list[dict] | None = None, text_col: str = "text",
                   label_col: str = "label", id_col: str = "id", head_mass: float = 0.5, tail_mass: float = 0.2,
                   max_per_class: int = 0) -> BuildReport:
    """Probe rows sliced by class frequency (counted in ``frequencies`` if given, e.g. the training data,
    else in ``rows``). ``max_per_class`` > 0 keeps the first that many of each class."""
    for n, row in enumerate(rows, 1):
        _text_of(row, f"{source}, record {n}", text_col)
        if row.get(label_col) in (None, ""):
            raise InputError(f"{source}, record {n}: no '{label_col}' (give --by tokens for unlabelled text)")
    counts = Counter(str(r[label_col]) for r in (frequencies if frequencies is not None else rows)
                     if r.get(label_col) not in (None, ""))
    missing = sorted({str(r[label_col]) for r in rows} - set(counts))
    if missing:
        raise InputError(f"{source}: label(s) {missing[:5]} never occur in the frequency data; every probe class "
                         f"needs a frequency")
    classes = slices_by_frequency(counts, head_mass, tail_mass)
    kept, per_class = [], Counter()
    for n, row in enumerate(rows, 1):
        label = str(row[label_col])
        per_class[label] += 1
        if max_per_class and per_class[label] > max_per_class:
            continue
        kept.append({"id": str(row.get(id_col) or f"probe-{n:06d}"), "text": row[text_col], "label": label,
                     "slice": classes[label], "origin": "built"})
    return BuildReport(kept, dict(Counter(r["slice"] for r in kept)), classes)


def build_by_tokens(rows: list[dict], source: str, head_vocab: frozenset[str], *, text_col: str = "text",
                    id_col: str = "id", head_share: float = 0.5, tail_share: float = 0.2) -> BuildReport:
    """Probe rows sliced by the rarity of their words in the reference (its head vocabulary)."""
    texts = [_text_of(row, f"{source}, record {n}", text_col) for n, row in enumerate(rows, 1)]
    scores = [rarity(t, head_vocab) for t in texts]
    scores = [1.0 if s != s else s for s in scores]  # no words at all: as rare as it gets
    slices = slices_by_rarity(scores, head_share, tail_share)
    kept = [{"id": str(row.get(id_col) or f"probe-{n:06d}"), "text": t, "slice": s, "rarity": round(r, 4),
             "origin": "built", **({"label": str(row["label"])} if row.get("label") not in (None, "") else {})}
            for n, (row, t, s, r) in enumerate(zip(rows, texts, slices, scores), 1)]
    return BuildReport(kept, dict(Counter(slices)))


def merge_edge_cases(report: BuildReport, edge_rows: list[dict], source: str, text_col: str = "text") -> BuildReport:
    """Hand-written edge cases appended to a built set; their slice defaults to tail."""
    ids = {r["id"] for r in report.rows}
    for n, row in enumerate(edge_rows, 1):
        where = f"{source}, record {n}"
        text = _text_of(row, where, text_col)
        sl = row.get("slice") or "tail"
        if sl not in SLICES:
            raise InputError(f"{where}: slice {sl!r} is not one of {SLICES}")
        rid = str(row.get("id") or f"edge-{n:04d}")
        if rid in ids:
            raise InputError(f"{where}: id {rid!r} is already in the probe set")
        ids.add(rid)
        out = {"id": rid, "text": text, "slice": sl, "origin": "edge_case"}
        for key in ("label", "prompt"):
            if row.get(key) not in (None, ""):
                out[key] = str(row[key])
        report.rows.append(out)
        report.by_slice[sl] = report.by_slice.get(sl, 0) + 1
        report.edge_cases += 1
    return report


# -- loading ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeSet:
    path: str
    digest: str  # sha256 of the file: results are compared only on the same probe set
    rows: tuple[dict[str, Any], ...]

    @property
    def texts(self) -> list[str]:
        return [r["text"] for r in self.rows]

    @property
    def slices(self) -> list[str]:
        return [r["slice"] for r in self.rows]

    @property
    def labels(self) -> list[str]:
        return [r.get("label", "") for r in self.rows]

    def prompts(self, prompt_words: int) -> list[str]:
        return [r.get("prompt") or " ".join(r["text"].split()[:prompt_words]) for r in self.rows]

    def counts(self) -> dict[str, int]:
        c = Counter(self.slices)
        return {s: c[s] for s in SLICES if c[s]}


# -- classifier metrics ----------------------------------------------------------------------------------
def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - mean confidence| x bin share.

    >>> expected_calibration_error(np.array([0.9, 0.9]), np.array([1, 0]))
    0.4
    """
    if len(confidence) == 0:
        return NAN
    idx = np.minimum((np.asarray(confidence) * bins).astype(int), bins - 1)
    err = 0.0
    for b in np.unique(idx):
        m = idx == b
        err += m.mean() * abs(np.mean(correct[m]) - np.mean(confidence[m]))
    return round(float(err), 12)


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Macro-F1 over the classes present in ``y_true`` (a class never predicted scores 0)."""
    from sklearn.metrics import f1_score

    labels = sorted(set(y_true))
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def classifier_metrics(probes: ProbeSet, predicted: Sequence[str], confidence: np.ndarray | None,
                       bins: int = 10) -> dict[str, float]:
    """``probe.<slice>.{accuracy,macro_f1,ece,examples}`` for each slice and ``all``."""
    y_true = np.asarray(probes.labels, dtype=object)
    y_pred = np.asarray([str(p) for p in predicted], dtype=object)
    slices = np.asarray(probes.slices)
    out = {}
    for sl in (*SLICES, "all"):
        m = np.ones(len(y_true), bool) if sl == "all" else slices == sl
        if not m.any():
            continue
        correct = (y_true[m] == y_pred[m]).astype(float)
        out[f"probe.{sl}.examples"] = float(m.sum())
        out[f"probe.{sl}.accuracy"] = float(correct.mean())
        out[f"probe.{sl}.macro_f1"] = macro_f1(list(y_true[m]), list(y_pred[m]))
        out[f"probe.{sl}.ece"] = expected_calibration_error(confidence[m], correct, bins) if confidence is not None else NAN
        out[f"probe.{sl}.quality"] = out[f"probe.{sl}.accuracy"]
    return out


# -- generative-model metrics ----------------------------------------------------------------------------
def self_similarity(texts: list[str]) -> float:
    """Mean pairwise cosine similarity of the texts' TF-IDF vectors (up = more alike; nan under 2 texts)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [t for t in texts if words(t)]
    if len(texts) < 2:
        return NAN
    x = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit_transform(texts)
    sims = (x @ x.T).toarray()
    n = len(texts)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def diversity(texts: list[str], window: int, compress_bytes: int) -> dict[str, float]:
    """distinct-1..3 (rarefied to ``window`` n-grams, so lengths compare), compression ratio, self-similarity."""
    counts = ngram_counts([words(t) for t in texts])
    out = {f"distinct_{n}": rarefied_distinct(counts[n - 1], window) for n in (1, 2, 3)}
    out["compression_ratio"] = compression_ratio(texts, compress_bytes)
    out["self_similarity"] = self_similarity(texts)
    return out


def generator_metrics(probes: ProbeSet, outputs: list[str], loglik: np.ndarray | None, tokens: np.ndarray | None,
                      compress_bytes: int = 32_768) -> dict[str, float]:
    """Per slice: perplexity of the human texts (exp of minus the mean log-likelihood per token) when scored,
    and each diversity measure of the outputs with its ratio to the slice's human texts."""
    slices = np.asarray(probes.slices)
    texts = probes.texts
    out = {}
    for sl in (*SLICES, "all"):
        m = np.ones(len(texts), bool) if sl == "all" else slices == sl
        if not m.any():
            continue
        idx = np.flatnonzero(m)
        out[f"probe.{sl}.examples"] = float(len(idx))
        if loglik is not None and tokens is not None and tokens[idx].sum() > 0:
            ppl = math.exp(-float(loglik[idx].sum()) / float(tokens[idx].sum()))
            out[f"probe.{sl}.perplexity"] = ppl
            out[f"probe.{sl}.quality"] = 1.0 / ppl
        gen = [outputs[i] for i in idx]
        human = [texts[i] for i in idx]
        # the same window for every n and both sides: the smaller side's trigram count caps it
        window = max(1, min(sum(max(len(words(t)) - 2, 0) for t in side) for side in (gen, human)))
        window = min(window, 1000)
        g, h = diversity(gen, window, compress_bytes), diversity(human, window, compress_bytes)
        for key, value in g.items():
            out[f"probe.{sl}.{key}"] = value
            out[f"probe.{sl}.{key}.ratio"] = value / h[key] if h[key] and h[key] == h[key] else NAN
    return out


# -- comparison with earlier versions ----------------------------------------------------------------------
def _relative_drop(new: float | None, old: float | None) -> float:
    """How far a quality fell, as a share of what it was (negative: it rose); nan when unknown."""
    if new is None or old is None or not (new == new and old == old) or old <= 0:
        return NAN
    return (old - new) / old


def tail_head_ratio(metrics: dict[str, float]) -> float:
    head, tail = metrics.get("probe.head.quality"), metrics.get("probe.tail.quality")
    if head is None or tail is None or not head == head or head <= 0 or tail != tail:
        return NAN
    return tail / head


def compare(current: dict[str, float], previous: dict[str, float] | None, first: dict[str, float] | None,
            head_tolerance: float) -> dict[str, float]:
    """Deltas of every metric (per slice, and the memorization probe's) against the previous and the first evaluated version, the relative
    quality drops of head and tail, and ``probe.early_collapse``: the tail's relative drop when the head held
    (fell by no more than ``head_tolerance``), the larger of the two comparisons; 0 when the head fell too
    or the tail did not fall."""
    out: dict[str, float] = {"probe.tail_head_ratio": tail_head_ratio(current)}
    signature = []
    for name, base in (("prev", previous), ("first", first)):
        if base is None:
            continue
        base = {**base, "probe.tail_head_ratio": tail_head_ratio(base)}
        for key, value in current.items():
            if key.endswith(COUNTS) or key not in base:
                continue
            out[f"{key}.delta_{name}"] = value - base[key]
        out[f"probe.tail_head_ratio.delta_{name}"] = out["probe.tail_head_ratio"] - base["probe.tail_head_ratio"]
        tail = _relative_drop(current.get("probe.tail.quality"), base.get("probe.tail.quality"))
        head = _relative_drop(current.get("probe.head.quality"), base.get("probe.head.quality"))
        out[f"probe.tail.drop_{name}"] = tail
        out[f"probe.head.drop_{name}"] = head
        if tail == tail and head == head:
            signature.append(max(tail, 0.0) if head <= head_tolerance else 0.0)
    out["probe.early_collapse"] = max(signature) if signature else NAN
    return out


# -- lineage ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lineage:
    depth: int  # teacher hops: 0 = trained on no model's outputs
    chain: tuple[str, ...]  # this model, its teacher, its teacher's teacher, ...
    synthetic_fraction: float  # of this model's own training data (nan when not declared)
    note: str = ""


def _fraction(tags: dict[str, str]) -> float:
    try:
        f = float(tags.get(Tag.SYNTHETIC_FRACTION, "nan"))
    except ValueError:
        return NAN
    return f if 0 <= f <= 1 else NAN


def follow_lineage(start: str, tags: dict[str, str], lookup: Callable[[str], dict[str, str] | None],
                   max_depth: int = 50) -> Lineage:
    """Follow ``collapse.teacher`` tags from a model (``start``, with its ``tags``) up its teacher chain.

    ``lookup(teacher)`` returns the teacher's tags, or None when it is not in the registry: the chain ends
    there and still counts that teacher. A cycle ends the chain with a note.
    """
    chain, notes, current = [start], [], tags
    while current.get(Tag.TEACHER):
        teacher = current[Tag.TEACHER].strip()
        if teacher in chain:
            notes.append(f"the teacher chain loops back to {teacher}")
            break
        chain.append(teacher)
        if len(chain) > max_depth:
            notes.append(f"the teacher chain is longer than {max_depth}; stopped there")
            break
        current = lookup(teacher)
        if current is None:
            notes.append(f"teacher {teacher} is not in the registry; its own teachers are unknown")
            break
    return Lineage(len(chain) - 1, tuple(chain), _fraction(tags), "; ".join(notes))
