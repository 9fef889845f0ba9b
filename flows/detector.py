"""``train_detector``: fit the synthetic-text detector on labelled text and register it in MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger

from flows import batches, progress, synthetic_share, tasks
from monitors.adapters.files import atomic_write_text
from monitors.adapters.lmscore import ScorerUnavailable
from monitors.adapters.runtime import Runtime
from monitors.config import Settings
from monitors.core.detector import TrainedDetector, data_hash, train_detector
from monitors.core.errors import InputError

EXPERIMENT = "detectors"  # MLflow experiment collapse-monitor/detectors
MIN_GENERATED_WORDS = 10  # a generated text the model cut shorter is not a paragraph: dropped


@dataclass(frozen=True)
class TrainingResult:
    name: str
    version: str
    alias: str | None
    detector: TrainedDetector
    documents: dict[str, int]
    quarantined: dict[str, int]
    #: why the detector has no LM features ("" when it has them, or when --no-lm asked for none)
    lm_note: str = ""
    #: what --generate did (counts, speed, decoding settings); {} without it
    generated: dict | None = None


@tasks.compute_task
def lm_features(texts: dict[str, list[str]], settings: Settings, lm: bool | None
                ) -> tuple[tuple[np.ndarray, np.ndarray] | None, str, str]:
    """The LM statistics of both classes, the scorer's tag, and why there are none (when there are none).

    ``lm`` True: required (an unavailable LM is an error); None: used when lm.enabled and the LM loads."""
    if lm is False:
        return None, "", ""
    if lm is None and not settings.lm.enabled:
        return None, "", "the local LM is off (lm.enabled), so the detector uses n-grams alone"
    try:
        scorer = synthetic_share.lm_scorer(settings, f"LM features of {sum(map(len, texts.values()))} training texts")
        rows = scorer.score(texts["human"] + texts["synthetic"])
    except ScorerUnavailable as exc:
        if lm:
            raise
        get_run_logger().warning("training the detector without LM features: %s", exc)
        return None, "", f"the local LM is unavailable, so the detector uses n-grams alone ({exc})"
    n = len(texts["human"])
    return (rows[:n], rows[n:]), scorer.tag, ""


@tasks.compute_task
def generate_synthetic(human: list[str], n: int, settings: Settings, seed: int, folder: Path
                       ) -> tuple[list[str], dict[str, Path], dict]:
    """``n`` domain-matched synthetic examples from the local LM, prompted with openings of the human texts under
    rotating decoding settings; the texts with their settings and the run's settings and speed as artifacts."""
    import json

    from monitors.adapters import lmscore

    jobs = lmscore.generation_plan(human, n, seed=seed)
    scorer = synthetic_share.lm_scorer(settings)
    progress.stage(f"generating {n} synthetic examples with the local LM ({len(lmscore.DECODINGS)} decoding "
                   f"settings, {lmscore.GENERATE_TOKENS} new tokens each)")
    rows = scorer.generate(jobs, progress=lambda done, total: progress.current.count("generated", done, total))
    kept = [r for r in rows if len(r["text"].split()) >= MIN_GENERATED_WORDS]
    info = {"requested": n, "kept": len(kept), "dropped_short": len(rows) - len(kept), "seed": seed,
            "min_words": MIN_GENERATED_WORDS, "max_new_tokens": lmscore.GENERATE_TOKENS,
            "opening_words": lmscore.OPENING_WORDS, "model": scorer.tag.split("|budget")[0],
            "chat_prompt": lmscore.CHAT_PROMPT, "speed": scorer.last_generation,
            "decodings": [d.__dict__ | {"name": d.name} for d in lmscore.DECODINGS]}
    texts_file, info_file = folder / "synthetic.jsonl", folder / "decoding.json"
    atomic_write_text(texts_file, "".join(json.dumps({"id": f"gen-{i:05d}", **r}) + "\n" for i, r in enumerate(rows)))
    atomic_write_text(info_file, json.dumps(info, indent=1))
    return [r["text"] for r in kept], {"generated/synthetic.jsonl": texts_file, "generated/decoding.json": info_file}, info


@tasks.compute_task
def fit(human: list[str], synthetic: list[str], seed: int,
        features: tuple[np.ndarray, np.ndarray] | None = None, lm_tag: str = "") -> TrainedDetector:
    try:
        return train_detector(human, synthetic, seed=seed, lm_features=features, lm_tag=lm_tag,
                              progress=progress.stage)
    except ValueError as exc:
        raise InputError(str(exc)) from None


@tasks.io_task
def register(runtime: Runtime, detector: TrainedDetector, name: str, alias: str | None, data: dict,
             artifacts: dict[str, Path]) -> str:
    tracker = tasks.tracker_for(runtime)
    return tracker.register_detector(detector, scope=EXPERIMENT, name=name, alias=alias, data=data, artifacts=artifacts)


@flow(name="train_detector", flow_run_name="detector {name}", validate_parameters=False)
def train_detector_flow(human_path: str, synthetic_path: str | None, name: str, alias: str | None, settings: Settings,
                        runtime: Runtime, max_docs: int = 100_000, seed: int = 0, lm: bool | None = None,
                        generate: int = 0) -> TrainingResult:
    """Read both labelled inputs (records that cannot be used are quarantined, as in a check), train and
    evaluate the detector on a held-out split, register it with its figures and data hashes.

    ``lm``: add the local LM's statistics as features (True: required; None: when the LM is available).
    ``generate``: this many synthetic examples made by the local LM from openings of the human texts (in
    addition to ``synthetic_path``'s, or instead of them when it is None)."""
    logger = get_run_logger()
    texts, counts, quarantined, data, artifacts, info = {}, {}, {}, {}, {}, None
    with batches.workspace() as work:
        texts["synthetic"], counts["synthetic"], quarantined["synthetic"] = [], 0, 0
        for label, spec in (("human", human_path), ("synthetic", synthetic_path)):
            if spec is None:
                continue
            folder = work / label
            folder.mkdir()
            progress.stage(f"reading the {label} text: {spec}")
            prof, shards = batches.profile_batch(spec, settings, folder, sample_size=max_docs)
            texts[label] = prof.sample_texts
            counts[label], quarantined[label] = prof.records, prof.quarantined_total
            if prof.records > max_docs:
                logger.warning(f"{spec}: {prof.records} usable records, training on a uniform sample of {max_docs}")
            if prof.quarantined_total:
                artifacts[f"quarantine/{label}/quarantine.jsonl"] = batches.write_quarantine(prof, shards, folder, settings)
            data |= {f"{label}_source": spec, f"{label}_docs": len(texts[label]), f"{label}_sha256": data_hash(texts[label]),
                     f"{label}_quarantined": prof.quarantined_total}
        if generate:
            folder = work / "generated"
            folder.mkdir()
            made, files, info = generate_synthetic(texts["human"], generate, settings, seed, folder)
            texts["synthetic"] = texts["synthetic"] + made
            artifacts |= files
            data |= {"generated_docs": len(made), "generated_sha256": data_hash(made),
                     "generated_dropped_short": info["dropped_short"],
                     "generated_tokens_per_s": info["speed"].get("tokens_per_s", 0.0),
                     "generated_decodings": ",".join(d["name"] for d in info["decodings"])}
            if synthetic_path is None:
                data |= {"synthetic_source": f"generated by the local LM ({info['model']})", "synthetic_docs": len(made),
                         "synthetic_sha256": data_hash(made), "synthetic_quarantined": 0}
        features, lm_tag, lm_note = lm_features(texts, settings, lm)
        detector = fit(texts["human"], texts["synthetic"], seed, features, lm_tag)
        progress.stage(f"registering {name} in the MLflow model registry")
        version = register(runtime, detector, name, alias, data, artifacts)
    return TrainingResult(name, version, alias, detector, {k: len(v) for k, v in texts.items()}, quarantined, lm_note, info)
