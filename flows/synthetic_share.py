"""The synthetic share of a batch: a registered detector's quantification estimate or, without one, the local
LM's mixture-proportion estimate against the human reference."""

from __future__ import annotations

import numpy as np

from flows.tasks import compute_task
from monitors.adapters import registry
from monitors.config import Settings
from monitors.core import quantify
from monitors.core.profile import BatchProfile
from monitors.core.quantify import Provenance, ShareEstimate, combine_with_declared
from monitors.core.reference import ReferenceProfile


def lm_scorer(settings: Settings, label: str = "LM scoring"):
    """The local LM scorer of the settings, with the content cache under the state directory (loads lazily)."""
    from monitors.adapters import lmscore

    cfg = lmscore.ScorerConfig(model_file=settings.lm.model_file, token_budget=settings.lm.token_budget,
                               dtype=settings.lm.dtype, batch_size=settings.lm.batch_size, threads=settings.lm.threads)
    folder = lmscore.cache_dir(settings.lm.cache_dir)
    cache = lmscore.ScoreCache(folder / "lm-scores.sqlite") if settings.lm.cache else None
    from flows import progress

    return lmscore.LMScorer(cfg, cache=cache, converted_dir=folder / "models" if settings.lm.cache else None,
                            progress=lambda done, total: progress.current.count(label, done, total))


@compute_task
def score_reference(ref: ReferenceProfile, prof: BatchProfile, settings: Settings) -> ReferenceProfile:
    """The reference with its held-out documents scored by the local LM (the human score distribution that
    the share is estimated against), or unchanged with a warning when the LM is unavailable."""
    import dataclasses

    from prefect import get_run_logger

    from monitors.adapters.lmscore import ScorerUnavailable
    from monitors.core.reference import LMReference, split_sample

    if not settings.lm.enabled:
        return ref
    from flows import progress

    texts = split_sample(prof)[1][: settings.lm.reference_docs]
    progress.current.stage(f"scoring {len(texts)} held-out documents with the local LM (cached by content)")
    try:
        scorer = lm_scorer(settings, "documents")
        features = scorer.score(texts)
    except ScorerUnavailable as exc:
        get_run_logger().warning("reference built without LM scores, so checks need a trained detector for the "
                       "synthetic share: %s", exc)
        return ref
    clusters = ref.embedding.assign(ref.embedding.transform(texts)) if ref.embedding is not None else np.zeros(len(texts), int)
    return dataclasses.replace(ref, lm=LMReference(scorer.tag, features, clusters))


@compute_task
def estimate_share(prof: BatchProfile, detector: registry.LoadedDetector | registry.NoDetector, settings: Settings,
                   reference: ReferenceProfile | None = None) -> ShareEstimate:
    """Declared provenance counted exactly; for the undeclared rest (on the uniform sample, whose bootstrap
    interval covers the sampling) the registered detector's quantification estimate or, without a detector,
    the local LM's mixture-proportion estimate against the human reference."""
    declared = Provenance(*prof.declared())
    if declared.undeclared == 0:
        return combine_with_declared(declared, ShareEstimate.unavailable(""))
    texts = prof.undeclared_sample_texts()
    if isinstance(detector, registry.NoDetector):
        return combine_with_declared(declared, share_from_reference(texts, reference, settings, detector.reason))
    method = detector.method if settings.detector.method == "auto" else settings.detector.method
    if detector.lm_tag and settings.lm.enabled and len(texts) > settings.lm.sample_size:
        # the LM's time bounds the check: the sample is in hash order, so any prefix is a uniform sample
        texts = texts[: settings.lm.sample_size]
    features, lm_note = detector_lm_features(texts, detector, settings)
    undeclared = quantify.estimate_share(detector.scores(texts, features), detector.validation, method=method,
                                         replicates=settings.detector.bootstrap, seed=settings.detector.seed)
    if lm_note:
        import dataclasses

        undeclared = dataclasses.replace(undeclared, note=". ".join(n for n in (undeclared.note, lm_note) if n))
    return combine_with_declared(declared, undeclared)


def detector_lm_features(texts: list[str], detector: registry.LoadedDetector, settings: Settings
                         ) -> tuple[np.ndarray | None, str]:
    """The LM features a detector trained with them needs, and a note when they could not be had as trained.

    Without the LM (off, or not loadable) the detector still scores: its LM block falls back to its training
    medians, so the n-grams alone decide, and its validation (made with real LM features) fits less well."""
    from monitors.adapters.lmscore import ScorerUnavailable

    if not detector.lm_tag or not texts:
        return None, ""
    fallback = (f"detector {detector.label} was trained with LM features, but {{why}}: it scored on its n-grams "
                f"alone (LM features set to their training medians), so its validated error rates may not hold")
    if not settings.lm.enabled:
        return None, fallback.format(why="the local LM is off (lm.enabled)")
    try:
        scorer = lm_scorer(settings, f"LM features of {len(texts)} documents for the detector")
        features = scorer.score(texts)
    except ScorerUnavailable as exc:
        return None, fallback.format(why=f"the local LM is unavailable ({exc})")
    if scorer.tag != detector.lm_tag:
        return features, (f"detector {detector.label} was trained with LM features of {detector.lm_tag!r}, but the "
                          f"settings give {scorer.tag!r} (lm.model_file, lm.token_budget, lm.dtype): its LM features "
                          f"may be shifted; retrain it or restore those settings")
    return features, ""


def share_from_reference(texts: list[str], reference: ReferenceProfile | None, settings: Settings,
                         no_detector: str) -> ShareEstimate:
    """The LM path of :func:`estimate_share`; unavailable (with every reason) when it cannot run."""
    from monitors.adapters.lmscore import ScorerUnavailable
    from monitors.core import mixture

    if not settings.lm.enabled:
        return ShareEstimate.unavailable(f"{no_detector}; the local LM is off (lm.enabled)")
    if reference is None or reference.lm is None:
        return ShareEstimate.unavailable(
            f"{no_detector}; and the dataset's reference has no LM scores to estimate against: rebuild it with "
            f"`collapse-monitor reference build` (the local LM scores its held-out documents)")
    texts = texts[: settings.lm.sample_size]  # the sample is in hash order: any prefix is a uniform sample
    try:
        scorer = lm_scorer(settings, "LM-scored documents")
        if scorer.tag != reference.lm.tag:
            scorer.load()  # a file that cannot be loaded is the better reason to give
            return ShareEstimate.unavailable(
                f"{no_detector}; the reference was scored by {reference.lm.tag!r} but the settings give "
                f"{scorer.tag!r} (lm.model_file, lm.token_budget, lm.dtype): rebuild the reference or restore them")
        features = scorer.score(texts)
    except ScorerUnavailable as exc:
        return ShareEstimate.unavailable(f"{no_detector}; {exc}")
    emb = reference.embedding
    clusters = emb.assign(emb.transform(texts)) if emb is not None else None
    return mixture.estimate_from_reference(
        mixture.machine_score(features), mixture.machine_score(reference.lm.features),
        batch_clusters=clusters, human_clusters=reference.lm.clusters if emb is not None else None,
        clusters=reference.settings.clusters, replicates=settings.detector.bootstrap, seed=settings.detector.seed,
        reweight=settings.lm.topic_weights)
