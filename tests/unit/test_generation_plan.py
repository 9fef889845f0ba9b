"""`detector train --generate N`: which human openings prompt the local LM and under which decoding settings
(pure; no model)."""

from collections import Counter

import pytest

from monitors.core.errors import UserError
from monitors.adapters.lmscore import (
    CHAT_PROMPT, DECODINGS, OPENING_WORDS, Decoding, GenerationJob, finish_text, generation_plan, prompt_for,
)

HUMAN = [f"Paragraph {i} opens with these several words and then goes on for a while about topic {i}." for i in range(20)]


def test_settings_rotate_over_the_required_ranges():
    temps = {d.temperature for d in DECODINGS}
    assert min(temps) == 0.7 and max(temps) == 1.1
    assert {d.top_p for d in DECODINGS} >= {0.9, 1.0} and all(0.9 <= d.top_p <= 1.0 for d in DECODINGS)
    assert min(d.repetition_penalty for d in DECODINGS) == 1.0 and max(d.repetition_penalty for d in DECODINGS) == 1.3
    assert {d.mode for d in DECODINGS} == {"chat", "continue"}
    assert len({d.name for d in DECODINGS}) == len(DECODINGS)

    jobs = generation_plan(HUMAN, 16)
    assert [j.decoding for j in jobs] == list(DECODINGS) * 2  # every setting equally often, interleaved
    assert Counter(j.decoding.mode for j in jobs) == {"chat": 8, "continue": 8}


def test_openings_are_distinct_human_texts_seeded_and_reused_only_past_the_pool():
    jobs = generation_plan(HUMAN, 20, seed=3)
    assert len({j.source for j in jobs}) == 20
    for j in jobs:
        assert j.opening == " ".join(HUMAN[j.source].split()[:OPENING_WORDS])
    assert generation_plan(HUMAN, 20, seed=3) == jobs  # seeded: the same plan, the same per-job seeds
    assert [j.source for j in generation_plan(HUMAN, 20, seed=4)] != [j.source for j in jobs]
    assert len({j.seed for j in jobs}) == 20
    more = generation_plan(HUMAN, 45, seed=3)
    assert Counter(j.source for j in more).most_common(1)[0][1] == 3  # cycled through the pool


def test_too_short_human_text_is_skipped_and_none_usable_is_a_clear_error():
    jobs = generation_plan(["too short", *HUMAN[:2]], 4)
    assert {j.source for j in jobs} == {1, 2}
    with pytest.raises(UserError, match="more than 8 words"):
        generation_plan(["a b c", "d e"], 3)


def test_prompts_chat_template_messages_or_plain_continuation():
    chat = GenerationJob(0, "It was a dark and stormy", Decoding("chat", 0.7, 0.9, 1.0), 1)
    cont = GenerationJob(0, "It was a dark and stormy", Decoding("continue", 0.7, 0.9, 1.0), 1)
    assert prompt_for(chat) == [{"role": "user", "content": CHAT_PROMPT.format(opening="It was a dark and stormy")}]
    assert prompt_for(cont) == "It was a dark and stormy"
    # a continuation keeps its opening; only the first paragraph is kept; quotes around a chat answer go
    assert finish_text(cont, " night; the rain fell.\n\nSecond paragraph") == "It was a dark and stormy night; the rain fell."
    assert finish_text(cont, ", said he.") == "It was a dark and stormy, said he."
    assert finish_text(chat, '"It was a dark and stormy night,\n the end."') == "It was a dark and stormy night, the end."


def test_each_row_gets_its_own_penalty_temperature_and_top_p():
    torch = pytest.importorskip("torch")
    from monitors.adapters.lmscore import _per_row_decoding

    jobs = [GenerationJob(0, "x", Decoding("chat", 1.0, 1.0, 1.0), 1),
            GenerationJob(0, "x", Decoding("chat", 0.5, 0.5, 2.0), 2)]
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]))
    seen = torch.tensor([[1], [1]])  # token 1 already in each row
    out = _per_row_decoding(jobs)(seen, logits.clone())
    torch.testing.assert_close(out[0], logits[0])  # neutral setting: unchanged
    assert out[1, 2] == float("-inf")  # top-p 0.5 keeps only the most likely token ...
    assert out[1, 1] == float("-inf")
    torch.testing.assert_close(out[1, 0], logits[1, 0] / 0.5)  # ... at temperature 0.5
    penalised = _per_row_decoding([GenerationJob(0, "x", Decoding("chat", 1.0, 1.0, 2.0), 2)])
    torch.testing.assert_close(penalised(seen[:1], logits[:1].clone())[0, 1], logits[0, 1] * 2.0)  # negative: times 2
