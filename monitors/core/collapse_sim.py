"""Recursive training, reproduced on models whose collapse has a closed form (pure: numpy and math only).

Each scenario refits a model on data drawn from the previous generation's model, under a data *policy*:

* ``replace``: generation t+1 is fitted on fresh samples of generation t only (Shumailov et al., Nature 2024);
* ``accumulate``: on the original human data plus every generation's samples so far (Gerstgrasser et al. 2024,
  "Is model collapse inevitable?");
* ``mix:p``: on a set of the same size as ``replace``'s in which a share ``p`` is fresh human data.

Generation 0 is the truth (the human distribution); generation t >= 1 is the t-th fit, the first one fitted on
human data. The formulas below use that numbering, so "generation n" means the n-th fit, as in the papers.

Also here: cheap diversity metrics the literature uses (Self-BLEU on a fixed-size sample, Zhu et al. 2018 /
Guo et al. 2023; the share of types seen once, Gambetta et al. 2024) and the lead-time table that turns a
simulation's per-generation alerts into "first generation at which each rule fired".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from monitors.core.errors import UserError


# -- policies ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    name: str  # replace | accumulate | mix
    human_share: float = 0.0  # mix only: the share of fresh human data in each generation's training set

    @property
    def label(self) -> str:
        return f"mix:{self.human_share:g}" if self.name == "mix" else self.name

    @property
    def slug(self) -> str:
        """A dataset-name-safe form (no ':')."""
        return f"mix{self.human_share:g}" if self.name == "mix" else self.name


POLICIES = ("replace", "mix:0.1", "accumulate")


def parse_policy(text: str) -> Policy:
    """``replace``, ``accumulate`` or ``mix:P`` with 0 < P < 1 (the share of fresh human data)."""
    value = text.strip().lower()
    if value in ("replace", "accumulate"):
        return Policy(value)
    if value.startswith("mix:"):
        try:
            share = float(value[4:])
        except ValueError:
            share = float("nan")
        if 0 < share < 1:
            return Policy("mix", share)
    raise UserError(f"--policy {text!r} is not a policy: use replace, accumulate or mix:P with 0 < P < 1 "
                    f"(P is the share of fresh human data in each generation, e.g. mix:0.1)")


def _mix_sizes(n: int, policy: Policy) -> tuple[int, int]:
    """(human, synthetic) sample sizes of one generation's fresh data under replace / mix."""
    human = round(policy.human_share * n) if policy.name == "mix" else 0
    return human, n - human


# -- gaussian (Shumailov et al. 2024, Thm 3.1) ----------------------------------------------------------------

def gaussian_theory(n: int, t: int, sigma0: float = 1.0) -> dict[str, float]:
    """Closed forms for ``replace`` with the maximum-likelihood fit (sample mean, variance with divisor n):
    sigma_t^2 = sigma_{t-1}^2 * chi2_{n-1} / n, so

    * E[sigma_t^2] = sigma_0^2 * ((n-1)/n)^t (falls geometrically);
    * E[log sigma_t^2] = log sigma_0^2 + t * (digamma((n-1)/2) + log(2/n)) (the typical variance; it falls even
      for the unbiased n-1 divisor, whose E[sigma_t^2] stays sigma_0^2: it collapses almost surely);
    * E[W2^2] to the original N(mu_0, sigma_0^2) = sigma_0^2 * (sum_{i<t} r^i / n + r^t - 2 c^t + 1), with
      r = (n-1)/n, c = E[sqrt(chi2_{n-1}/n)] = sqrt(2/n) Gamma(n/2) / Gamma((n-1)/2).
    """
    r = (n - 1) / n
    c = math.exp(0.5 * math.log(2 / n) + math.lgamma(n / 2) - math.lgamma((n - 1) / 2))
    s2 = sigma0 ** 2
    return {"variance": s2 * r ** t,
            "log_variance": math.log(s2) + t * (_digamma((n - 1) / 2) + math.log(2 / n)),
            "w2_squared": s2 * (sum(r ** i for i in range(t)) / n + r ** t - 2 * c ** t + 1)}


def _digamma(x: float) -> float:
    result = 0.0
    while x < 6:
        result -= 1 / x
        x += 1
    f = 1 / (x * x)
    return result + math.log(x) - 0.5 / x - f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f / 240)))


def gaussian_run(n: int, generations: int, policy: Policy, repeats: int = 1000, seed: int = 0,
                 mu0: float = 0.0, sigma0: float = 1.0) -> list[dict[str, float]]:
    """``repeats`` independent lineages; per generation 0..generations the mean, median and mean log of the
    fitted variance and the mean squared Wasserstein-2 distance to N(mu0, sigma0^2), with the replace theory."""
    rng = np.random.default_rng(seed)
    mu = np.full(repeats, mu0, dtype=float)
    sd = np.full(repeats, sigma0, dtype=float)
    pooled: list[np.ndarray] = []  # accumulate: every sample so far, per lineage (repeats x k)
    rows = [_gaussian_row(0, mu, sd, mu0, sigma0, n)]
    for t in range(1, generations + 1):
        if policy.name == "accumulate":
            fresh = rng.normal(mu0, sigma0, (repeats, n)) if t == 1 else mu[:, None] + sd[:, None] * rng.standard_normal((repeats, n))
            pooled.append(fresh)
            data = np.concatenate(pooled, axis=1)
        else:
            human, synthetic = _mix_sizes(n, policy) if t > 1 else (n, 0)
            data = np.concatenate([rng.normal(mu0, sigma0, (repeats, human)),
                                   mu[:, None] + sd[:, None] * rng.standard_normal((repeats, synthetic))], axis=1)
        mu, sd = data.mean(axis=1), data.std(axis=1)  # MLE: divisor = sample size
        rows.append(_gaussian_row(t, mu, sd, mu0, sigma0, n))
    return rows


def _gaussian_row(t: int, mu: np.ndarray, sd: np.ndarray, mu0: float, sigma0: float, n: int) -> dict[str, float]:
    var = sd ** 2
    theory = gaussian_theory(n, t, sigma0)
    with np.errstate(divide="ignore"):
        logv = np.log(var)
    return {"generation": t, "variance_mean": float(var.mean()), "variance_median": float(np.median(var)),
            "log_variance_mean": float(logv.mean()), "w2_squared_mean": float(((mu - mu0) ** 2 + (sd - sigma0) ** 2).mean()),
            "theory_variance": theory["variance"], "theory_log_variance": theory["log_variance"],
            "theory_w2_squared": theory["w2_squared"]}


# -- regression (Gerstgrasser et al. 2024) ---------------------------------------------------------------------

def regression_theory(d: int, T: int, sigma: float, n: int, policy: Policy) -> float | None:
    """Expected test error E||w_n - w*||^2 (isotropic Gaussian inputs, fixed design of T rows) at generation n:
    replace sigma^2 d/(T-d-1) * n; accumulate sigma^2 d/(T-d-1) * sum_{i<=n} 1/i^2 (< ... * pi^2/6).
    ``None`` for mix (no closed form in the paper)."""
    unit = sigma ** 2 * d / (T - d - 1)
    if policy.name == "replace":
        return unit * n
    if policy.name == "accumulate":
        return unit * sum(1 / i ** 2 for i in range(1, n + 1))
    return None


def regression_bound(d: int, T: int, sigma: float) -> float:
    return sigma ** 2 * d / (T - d - 1) * math.pi ** 2 / 6


def regression_run(d: int, T: int, sigma: float, generations: int, policy: Policy, repeats: int = 400,
                   seed: int = 0) -> list[dict[str, float]]:
    """Linear regression refit on its own labels, as in Gerstgrasser et al.: a fixed design X (T x d, standard
    normal rows, drawn per lineage); generation 1 is least squares on y = X w* + noise; generation n+1 on
    y = X w_n + fresh noise (replace), on every (X, y) so far (accumulate), or with a share of its rows labelled
    by w* (mix). Test error = ||w_n - w*||^2, the excess squared error on an isotropic test point."""
    if T <= d + 1:
        raise UserError(f"regression needs more rows than features plus one (T={T}, d={d}): raise --rows")
    rng = np.random.default_rng(seed)
    errors = np.zeros((generations + 1, repeats))
    for rep in range(repeats):
        X = rng.standard_normal((T, d))
        w_star = rng.standard_normal(d)
        pinv = np.linalg.pinv(X)
        w = w_star.copy()
        ys: list[np.ndarray] = []
        human, _ = _mix_sizes(T, policy)
        for t in range(1, generations + 1):
            teacher = X @ w
            if policy.name == "mix" and t > 1:
                teacher[:human] = X[:human] @ w_star
            y = teacher + sigma * rng.standard_normal(T)
            if policy.name == "accumulate":
                ys.append(y)
                # least squares on k stacked copies of X = least squares on the mean of their labels
                w = pinv @ np.mean(ys, axis=0)
            else:
                w = pinv @ y
            errors[t, rep] = float(np.sum((w - w_star) ** 2))
    return [{"generation": t, "test_error": float(errors[t].mean()),
             "theory": 0.0 if t == 0 else regression_theory(d, T, sigma, t, policy)}
            for t in range(generations + 1)]


# -- zipf unigram (tails; Dohmatob et al. 2024, "A tale of tails") ---------------------------------------------

def zipf_probs(vocab: int, alpha: float) -> np.ndarray:
    p = np.arange(1, vocab + 1, dtype=float) ** -alpha
    return p / p.sum()


def head_size(probs: np.ndarray, head_mass: float = 0.8) -> int:
    """How many of the most probable types (probs sorted descending) hold ``head_mass``; the rest is the tail."""
    return int(np.searchsorted(np.cumsum(probs), head_mass) + 1)


def truncate(probs: np.ndarray, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Decoding truncation of a distribution: keep the ``top_k`` most probable types and/or the smallest set
    holding ``top_p`` of the mass, renormalised."""
    out = probs.copy()
    order = np.argsort(-out, kind="stable")
    keep = np.zeros(out.size, dtype=bool)
    limit = out.size if top_k is None else min(top_k, out.size)
    if top_p is not None:
        limit = min(limit, int(np.searchsorted(np.cumsum(out[order]), top_p) + 1))
    keep[order[:limit]] = True
    out[~keep] = 0
    return out / out.sum()


def zipf_run(vocab: int, alpha: float, tokens: int, generations: int, policy: Policy, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0, hapax_window: int = 10_000) -> list[dict[str, float]]:
    """A unigram model (maximum likelihood: counts / total) refit on ``tokens`` tokens sampled from the previous
    one (through top-k / top-p truncation if given; the human data of generation 1 and of mix is never
    truncated). Per generation: the types the model keeps, the probability mass it gives to the true
    distribution's tail (types outside the head holding 80 % of the mass), its entropy, and the share of
    hapax types in a window of ``hapax_window`` tokens of its training sample."""
    rng = np.random.default_rng(seed)
    true = zipf_probs(vocab, alpha)
    tail = np.zeros(vocab, dtype=bool)
    tail[head_size(true):] = True
    probs = true
    pooled = np.zeros(vocab)
    rows = [_zipf_row(0, true, tail, None)]
    for t in range(1, generations + 1):
        if t == 1:
            human, synthetic = tokens, 0
        else:
            human, synthetic = _mix_sizes(tokens, policy) if policy.name != "accumulate" else (0, tokens)
        counts_h = rng.multinomial(human, true) if human else np.zeros(vocab, dtype=np.int64)
        counts_s = rng.multinomial(synthetic, truncate(probs, top_k, top_p)) if synthetic else np.zeros(vocab, dtype=np.int64)
        fresh = counts_h + counts_s
        pooled = pooled + fresh if policy.name == "accumulate" else fresh
        probs = pooled / pooled.sum()
        window = rng.multivariate_hypergeometric(fresh, min(hapax_window, int(fresh.sum())))
        rows.append(_zipf_row(t, probs, tail, window))
    return rows


def _zipf_row(t: int, probs: np.ndarray, tail: np.ndarray, window: np.ndarray | None) -> dict[str, float]:
    nz = probs[probs > 0]
    row = {"generation": t, "types": int((probs > 0).sum()), "tail_mass": float(probs[tail].sum()),
           "entropy_bits": float(-(nz * np.log2(nz)).sum())}
    if window is not None:
        seen = window[window > 0]
        row["hapax_share"] = float((seen == 1).sum() / seen.size)
    return row


# -- diversity metrics ---------------------------------------------------------------------------------------

def hapax_share(tokens: Sequence[str], window: int | None = None) -> float:
    """The share of the distinct words of the first ``window`` tokens that occur exactly once there (hapax
    legomena / types; Gambetta et al. 2024 track its fall under recursive training). A fixed window keeps
    samples of different sizes comparable. NaN on no tokens."""
    counts = Counter(tokens[:window] if window else tokens)
    return sum(1 for c in counts.values() if c == 1) / len(counts) if counts else float("nan")


def _ngrams(toks: Sequence[str], n: int) -> Counter:
    return Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


def self_bleu(docs: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Mean BLEU-``max_n`` of each tokenized document against all the others as references (Zhu et al. 2018,
    Texygen; used by Guo et al. 2023 for the diversity decline of recursive training). Higher = less diverse.
    Clipped n-gram precisions (a count is clipped to its largest count in any other document), uniform weights,
    add-one smoothing of the precisions for n > 1 (Lin and Och 2004), brevity penalty against the closest other
    length. Compute it on a fixed-size sample: it depends on the number of references. NaN under 2 documents."""
    docs = [list(d) for d in docs if len(d) > 0]
    if len(docs) < 2:
        return float("nan")
    lengths = np.array([len(d) for d in docs])
    per_n = []
    for n in range(1, max_n + 1):
        grams = [_ngrams(d, n) for d in docs]
        top: dict[tuple, list[tuple[int, int]]] = {}  # n-gram -> its two largest (count, doc) pairs
        for i, g in enumerate(grams):
            for k, c in g.items():
                best = top.setdefault(k, [])
                best.append((c, i))
                if len(best) > 2:
                    best.sort(reverse=True)
                    best.pop()
        per_n.append((grams, top))
    scores = []
    for i, doc in enumerate(docs):
        logp = 0.0
        for n, (grams, top) in enumerate(per_n, start=1):
            total = max(len(doc) - n + 1, 0)
            match = 0
            for k, c in grams[i].items():
                other = max((cnt for cnt, j in top[k] if j != i), default=0)
                match += min(c, other)
            if n == 1:
                if match == 0:
                    logp = -math.inf
                    break
                logp += math.log(match / total)
            else:
                logp += math.log((match + 1) / (total + 1))
        others = np.delete(lengths, i)
        ref_len = int(others[np.argmin(np.abs(others - len(doc)) * 1.0 + others * 1e-9)])
        bp = 1.0 if len(doc) > ref_len else math.exp(1 - ref_len / len(doc))
        scores.append(0.0 if logp == -math.inf else bp * math.exp(logp / max_n))
    return float(np.mean(scores))


# -- lead times ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleTimeline:
    rule: str
    severity: str
    first_firing: int | None  # generation
    first_breach: int | None  # first generation at which it was pending or firing
    firing_generations: int

    def to_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "first_firing": self.first_firing,
                "first_breach": self.first_breach, "firing_generations": self.firing_generations}


def lead_times(per_generation: Iterable[tuple[int, Iterable[tuple[str, str, str]]]]) -> list[RuleTimeline]:
    """From ``(generation, [(rule, severity, status), ...])`` per checked generation, each rule that was ever
    pending or firing: the first generation it fired, first breached, and in how many generations it was firing.
    Sorted: critical first, then by first firing (never last), then by name."""
    seen: dict[str, dict] = {}
    for gen, alerts in per_generation:
        for rule, severity, status in alerts:
            if status not in ("pending", "firing"):
                continue
            s = seen.setdefault(rule, {"severity": severity, "firing": None, "breach": None, "count": 0})
            s["breach"] = gen if s["breach"] is None else s["breach"]
            if status == "firing":
                s["firing"] = gen if s["firing"] is None else s["firing"]
                s["count"] += 1
    out = [RuleTimeline(r, s["severity"], s["firing"], s["breach"], s["count"]) for r, s in seen.items()]
    return sorted(out, key=lambda x: (x.severity != "critical", x.first_firing is None, x.first_firing or 0, x.rule))


def first_critical(timelines: Iterable[RuleTimeline]) -> int | None:
    gens = [t.first_firing for t in timelines if t.severity == "critical" and t.first_firing is not None]
    return min(gens) if gens else None
