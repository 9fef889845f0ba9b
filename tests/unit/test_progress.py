"""Long commands show progress on stderr: stages, and a bar where there is a count (issue 20, item 7)."""

import io

from flows.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _clock():
    ticks = iter(range(1000))
    return lambda: float(next(ticks))


def test_stages_and_a_bar_redrawn_in_place_on_a_terminal():
    out = _Terminal()
    p = Progress(out, clock=_clock())
    p.stage("reading human.jsonl")
    for i in range(1, 11):
        p.count("fitting bands", i, 10)
    p.stage("saving the reference to MLflow")
    text = out.getvalue()
    assert text.startswith("[    1 s] reading human.jsonl\n")
    assert text.count("\r") == 10 and "[###############...............] 5/10" in text
    assert f"[{'#' * 30}] 10/10\n[" in text and text.endswith("saving the reference to MLflow\n")


def test_elsewhere_a_count_is_a_line_per_quarter():
    out = io.StringIO()
    p = Progress(out, clock=_clock())
    for i in range(1, 101):
        p.count("fitting bands", i, 100)
    assert out.getvalue().splitlines() == [f"        fitting bands: {n}/100" for n in (1, 25, 50, 75, 100)]


def test_silent_until_enabled():
    from flows import progress

    progress.current = Progress(None)
    progress.stage("nothing to see")
    progress.count("x")(1, 2)  # no stream: no error, no output


def test_the_reference_build_reports_stages_and_counts_its_pseudo_batches(austen):
    from datetime import date

    from monitors.config import Columns, IndicatorSettings, IngestSettings
    from monitors.adapters.ingest import ReadOptions, profile_rows, records_from_dicts
    from monitors.core.reference import build_reference

    settings = IndicatorSettings(reference_docs=1500, embedding_dims=16, clusters=8)
    objs = [{"id": p["id"], "text": p["text"]} for p in austen[:1500]]
    prof = profile_rows(records_from_dicts(objs), ReadOptions(Columns(), IngestSettings(), 1500, date(2024, 1, 1)), file="m")
    stages, ticks = [], []
    build_reference(prof, dataset="t", settings=settings, progress=stages.append, tick=lambda d, t: ticks.append((d, t)))
    assert any(s.startswith("fitting bands") for s in stages)
    total = ticks[-1][1]
    assert ticks == [(i, total) for i in range(1, total + 1)] and total >= 10


def test_detector_training_reports_its_stages():
    from monitors.core.detector import train_detector

    human = [f"the committee met on day {i} and agreed to revisit the budget {i % 7}" for i in range(60)]
    machine = [f"As an AI language model, I can summarise item {i} in a helpful way {i % 5}" for i in range(60)]
    stages = []
    train_detector(human, machine, progress=stages.append)
    assert [s.split()[0] for s in stages] == ["fitting", "scoring", "choosing"]
