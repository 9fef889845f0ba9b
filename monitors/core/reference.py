"""The human reference a dataset's batches are compared with.

A reference is built once from trusted human text and stored (JSON plus an ``.npz`` of embedding arrays,
MLflow artifacts) so that every check compares with the same thing. Its profiled documents (a bottom-k
sample of up to ``indicators.reference_docs``) are split by a hash of their id:

* 70 % (the *core*) define the reference: its rare (tail) types, the embedding and its clusters, and the
  sample that drift reports compare a batch's sample with;
* 30 % (the *held-out* part) are scored exactly like incoming batches: the *baseline* (what an independent
  human batch looks like, so ratios sit near 1.0) and the *bands* (how much independent human batches of
  a given size vary; see :mod:`monitors.core.bands`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from monitors.core import bands as bands_mod
from monitors.config import IndicatorSettings
from monitors.core.embedding import HashedEmbedding, occupancy
from monitors.core.errors import InputError
from monitors.core.indicators import Anchors, ngram_counts, tail_types, text_indicators
from monitors.core.profile import BatchProfile
from monitors.core.text import words

FORMAT = 2
HELD_OUT_SHARE = 0.3
REPLICATES = 8
DRIFT_REPLICATES = 3
DRIFT_MIN_SIZE = 100  # the domain classifier says little on fewer documents; smaller batches use this band
#: Whole-batch indicators that also get a band (the others are shares with a meaning of their own).
BANDED_BATCH = ("length.mean_words", "length.cv_words", "length.median_words")

DriftFn = Callable[[list[str], list[str]], dict[str, float]]


@dataclass(frozen=True)
class LMReference:
    """The local LM's statistics of held-out reference documents (:mod:`monitors.adapters.lmscore`), with each
    document's reference cluster: the human score distribution the share is estimated against."""

    tag: str  # the scorer that produced them (model, token budget, dtype); a check scores alike
    features: np.ndarray  # (documents, len(lmfeatures.FEATURES))
    clusters: np.ndarray  # (documents,) nearest reference cluster


def split_sample(profile: BatchProfile) -> tuple[list[str], list[str]]:
    """The profiled documents as (core, held-out), split by a hash of their id (see the module docstring)."""
    core, holdout = [], []
    for h, _, text in profile.sample:
        (holdout if h % 1000 < HELD_OUT_SHARE * 1000 else core).append(text)
    return core, holdout


@dataclass(frozen=True)
class ReferenceProfile:
    dataset: str
    documents: int
    tokens: int
    cutoff: date
    settings: IndicatorSettings
    tail: frozenset[str]
    baseline: dict[str, float]
    bands: dict[int, bands_mod.Band]
    sample: list[str]  # core texts that drift reports compare with
    embedding: HashedEmbedding | None = field(default=None, compare=False)
    occupancy: np.ndarray | None = field(default=None, compare=False)
    lm: LMReference | None = field(default=None, compare=False)

    @property
    def anchors(self) -> Anchors:
        return Anchors(self.tail, self.embedding, self.occupancy)

    # -- storage -------------------------------------------------------------------------------
    def to_json(self) -> str:
        d = {
            "format": FORMAT, "dataset": self.dataset, "documents": self.documents, "tokens": self.tokens,
            "cutoff": self.cutoff.isoformat(), "settings": self.settings.model_dump(), "tail": sorted(self.tail),
            "baseline": self.baseline, "sample": self.sample,
            "bands": {str(n): {k: list(v) for k, v in b.items()} for n, b in self.bands.items()},
            "lm_tag": self.lm.tag if self.lm is not None else None,
        }
        return json.dumps(d, sort_keys=True, allow_nan=True)

    def arrays_npz(self) -> bytes:
        buf = io.BytesIO()
        arrays = {**self.embedding.arrays(), "occupancy": self.occupancy} if self.embedding is not None else {}
        if self.lm is not None:
            arrays.update(lm_features=self.lm.features.astype(np.float32), lm_clusters=self.lm.clusters)
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_json(cls, text: str, npz: bytes | None = None) -> ReferenceProfile:
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise InputError(f"reference profile has format {d.get('format')!r}; this version reads {FORMAT}: "
                             f"rebuild it with `collapse-monitor reference build`")
        emb = occ = lm = None
        if npz:
            with np.load(io.BytesIO(npz)) as z:
                if "components" in z:
                    emb = HashedEmbedding.from_arrays({k: z[k] for k in ("idf", "components", "centroids")})
                    occ = z["occupancy"]
                if d.get("lm_tag") and "lm_features" in z:
                    lm = LMReference(d["lm_tag"], z["lm_features"].astype(float), z["lm_clusters"])
        return cls(
            dataset=d["dataset"], documents=d["documents"], tokens=d["tokens"],
            cutoff=date.fromisoformat(d["cutoff"]), settings=IndicatorSettings(**d["settings"]),
            tail=frozenset(d["tail"]),
            baseline={k: float(v) if v is not None else float("nan") for k, v in d["baseline"].items()},
            bands={int(n): {k: (float(m), float(s)) for k, (m, s) in b.items()} for n, b in d["bands"].items()},
            sample=d["sample"], embedding=emb, occupancy=occ, lm=lm,
        )

    def check_compatible(self, settings: IndicatorSettings) -> None:
        """Ratios and bands only mean something when batch and reference were measured alike."""
        if settings != self.settings:
            raise InputError(
                f"the reference of dataset {self.dataset!r} was built with indicator settings {self.settings.model_dump()}, "
                f"the current settings are {settings.model_dump()}: rebuild it with `collapse-monitor reference build`"
            )

    def band_for(self, records: int) -> bands_mod.Band:
        """Bands for a batch of ``records`` accepted documents: text indicators see at most the sample."""
        text_band = bands_mod.band_at(self.bands, min(records, self.settings.sample_size))
        whole = bands_mod.band_at(self.bands, records)
        return {k: (whole[k] if k in BANDED_BATCH and k in whole else v) for k, v in text_band.items()}


def _length_indicators(texts: list[str]) -> dict[str, float]:
    w = np.array([len(t.split()) for t in texts], dtype=float)
    if not len(w):
        return {}
    return {"length.mean_words": float(w.mean()), "length.cv_words": float(w.std() / w.mean()) if w.mean() else float("nan"),
            "length.median_words": float(np.median(w))}


def build_reference(
    profile: BatchProfile, *, dataset: str, settings: IndicatorSettings, drift: DriftFn | None = None,
    progress: Callable[[str], None] = lambda msg: None,
    tick: Callable[[int, int], None] = lambda done, total: None,
) -> ReferenceProfile:
    """Turn the profile of trusted human text into a reference (see the module docstring). ``progress`` is
    told each stage, ``tick(done, total)`` each pseudo-batch measured for the bands."""
    if profile.sample_size != settings.reference_docs:
        raise ValueError("profile the reference with sample_size=settings.reference_docs")
    core, holdout = split_sample(profile)
    need = max(settings.window, settings.coverage_tokens)
    core_tokens = [words(t) for t in core]
    hold_tokens = sum(len(words(t)) for t in holdout)
    n_core_tokens = sum(map(len, core_tokens))
    if hold_tokens < need or n_core_tokens < need or len(holdout) < 2 * bands_mod.LADDER[0]:
        raise InputError(
            f"the reference is too small: {n_core_tokens + hold_tokens} tokens in {len(profile.sample)} documents; "
            f"it needs at least {int(need / HELD_OUT_SHARE)} tokens (indicators.coverage_tokens={settings.coverage_tokens}) "
            f"and {int(2 * bands_mod.LADDER[0] / HELD_OUT_SHARE)} documents"
        )
    tail = tail_types(ngram_counts(core_tokens)[0], settings.head_mass)
    progress(f"fitting the embedding on {len(core)} core documents")
    embedding = HashedEmbedding(settings.embedding_dims, settings.clusters).fit(core)
    occ = occupancy(embedding.assign(embedding.transform(core)), settings.clusters)
    anchors = Anchors(tail, embedding, occ)
    sample = core[: settings.sample_size]

    def measure(idx: np.ndarray, self_bleu_too: bool = False) -> dict[str, float]:
        # Self-BLEU gets a baseline (its .ratio) but no band: 70 ms a call, 24 calls for a band, and no rule reads it
        texts = [holdout[i] for i in idx]
        return {**text_indicators(texts[: settings.sample_size], settings, anchors, self_bleu_too),
                **_length_indicators(texts)}

    sizes = bands_mod.ladder(len(holdout), settings.sample_size)
    progress(f"fitting bands on {len(holdout)} held-out documents at sizes {sizes}")
    fitted = bands_mod.fit_bands(len(holdout), sizes, REPLICATES, measure, tick=tick)
    if drift is not None:
        progress("fitting drift bands (Evidently)")
        drift_sizes = [n for n in sizes if n >= DRIFT_MIN_SIZE][-2:] or sizes[-1:]
        drift_bands = bands_mod.fit_bands(len(holdout), drift_sizes, DRIFT_REPLICATES,
                                          lambda idx: drift([holdout[i] for i in idx], sample), seed=1, tick=tick)
        for n, b in drift_bands.items():
            fitted[n].update(b)
    progress("measuring the baseline on every held-out document")
    baseline = measure(np.arange(len(holdout)), self_bleu_too=True)
    if drift is not None:
        baseline.update(drift(holdout[: settings.sample_size], sample))
    return ReferenceProfile(
        dataset=dataset, documents=profile.records, tokens=n_core_tokens + hold_tokens, cutoff=profile.cutoff,
        settings=settings, tail=tail, baseline=baseline, bands=fitted, sample=sample,
        embedding=embedding, occupancy=occ,
    )
