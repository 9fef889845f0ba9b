"""The human reference a dataset's batches are compared with.

A reference is built once from trusted human text and stored (as JSON, an MLflow artifact) so that every
check compares with the same thing. Its documents are split by a hash of their id: 70 % define the
reference's vocabulary and tail, the other 30 % are scored exactly like an incoming batch, which gives the
*baseline*: what an independent human batch looks like. Ratios are value / baseline, so a human batch sits
near 1.0 rather than below it (a set of types always covers itself better than it covers new text).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date

from monitors.config import IndicatorSettings
from monitors.errors import InputError
from monitors.indicators import compute_indicators, tail_types
from monitors.profile import TextProfile, id_hash, profile_documents

FORMAT = 1
HELD_OUT_SHARE = 0.3


@dataclass(frozen=True)
class ReferenceProfile:
    dataset: str
    documents: int
    tokens: int
    cutoff: date
    settings: IndicatorSettings
    tail: frozenset[str]
    baseline: dict[str, float]

    def to_json(self) -> str:
        d = asdict(self)
        d.update(format=FORMAT, cutoff=self.cutoff.isoformat(), settings=self.settings.model_dump(), tail=sorted(self.tail))
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        d = json.loads(text)
        if d.pop("format", None) != FORMAT:
            raise InputError(f"reference profile has format {d.get('format')!r}; this version reads {FORMAT}: rebuild it")
        return cls(
            dataset=d["dataset"],
            documents=d["documents"],
            tokens=d["tokens"],
            cutoff=date.fromisoformat(d["cutoff"]),
            settings=IndicatorSettings(**d["settings"]),
            tail=frozenset(d["tail"]),
            baseline={k: float(v) if v is not None else float("nan") for k, v in d["baseline"].items()},
        )

    def check_compatible(self, settings: IndicatorSettings) -> None:
        """Ratios only mean something when batch and reference were measured alike."""
        if settings != self.settings:
            raise InputError(
                f"the reference of dataset {self.dataset!r} was built with indicator settings {self.settings.model_dump()}, "
                f"the current settings are {settings.model_dump()}: rebuild it with `collapse-monitor reference build`"
            )


def build_reference(
    ids: list[str], texts: list[str], created: list, *, dataset: str, settings: IndicatorSettings, cutoff: date
) -> ReferenceProfile:
    """Profile trusted human text into a reference (see the module docstring for the held-out split)."""
    held = [id_hash(i) % 1000 < HELD_OUT_SHARE * 1000 for i in ids]

    def part(flag: bool) -> TextProfile:
        rows = [(i, t, c) for i, t, c, h in zip(ids, texts, created, held, strict=True) if h is flag]
        return profile_documents(
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], cutoff=cutoff, sample_size=settings.sample_size
        )

    core, holdout = part(False), part(True)
    need = max(settings.window, settings.coverage_tokens)
    if holdout.tokens < need or core.tokens < need:
        raise InputError(
            f"the reference is too small: {core.tokens + holdout.tokens} tokens in {len(ids)} documents; "
            f"it needs at least {int(need / HELD_OUT_SHARE)} tokens (indicators.coverage_tokens={settings.coverage_tokens})"
        )
    tail = tail_types(core.ngrams[0], settings.head_mass)
    return ReferenceProfile(
        dataset=dataset,
        documents=len(ids),
        tokens=core.tokens + holdout.tokens,
        cutoff=cutoff,
        settings=settings,
        tail=tail,
        baseline=compute_indicators(holdout, settings, tail),
    )
