"""The model-collapse papers' figures next to this project's simulator, as one table (the README's).

    PYTHONPATH=. .venv/bin/python benchmarks/collapse_papers.py            # about 5 minutes on a busy 2-core machine
    PYTHONPATH=. .venv/bin/python benchmarks/collapse_papers.py --no-text  # the closed-form scenarios only, seconds

Rows: Shumailov et al. (Nature 2024) Thm 3.1 for the Gaussian refit; Gerstgrasser et al. (2024) for linear
regression under replace and accumulate; this project's own Zipf measurement and Dohmatob et al. (2024) for
the tails; and, for the word n-gram text lineage, the lead time of the real check's alerts (``collapse-monitor
simulate text --json``, run in a child process on a temporary MLflow store and Prefect home), untruncated and
with nucleus sampling. Everything is seeded; re-running prints the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monitors.core import collapse_sim as cs  # noqa: E402

REPLACE, ACCUMULATE, MIX = (cs.parse_policy(p) for p in ("replace", "accumulate", "mix:0.1"))


def gaussian_rows(n: int = 10, t: int = 10, repeats: int = 4000) -> list[tuple[str, str, str, str]]:
    rep = cs.gaussian_run(n, t, REPLACE, repeats=repeats, seed=0)[t]
    acc = cs.gaussian_run(n, t, ACCUMULATE, repeats=repeats, seed=0)[t]
    mix = cs.gaussian_run(n, t, MIX, repeats=repeats, seed=0)[t]
    src = "Shumailov et al. 2024, Thm 3.1"
    return [
        (f"Gaussian, n={n}, replace: E[var] at gen {t}", src, f"((n-1)/n)^t = {rep['theory_variance']:.3f}", f"{rep['variance_mean']:.3f}"),
        (f"Gaussian, replace: E[log var] at gen {t}", src, f"t(psi((n-1)/2)+log(2/n)) = {rep['theory_log_variance']:.3f}",
         f"{rep['log_variance_mean']:.3f} (median var {rep['variance_median']:.3f})"),
        (f"Gaussian, replace: E[W2^2] to N(0,1) at gen {t}", src, f"grows; closed form {rep['theory_w2_squared']:.3f}", f"{rep['w2_squared_mean']:.3f}"),
        (f"Gaussian, accumulate / mix:0.1: E[var] at gen {t}", "Gerstgrasser et al. 2024 (accumulate)",
         "no collapse", f"{acc['variance_mean']:.3f} / {mix['variance_mean']:.3f}"),
    ]


def regression_rows(d: int = 10, T: int = 50, t: int = 10, repeats: int = 1000) -> list[tuple[str, str, str, str]]:
    src = "Gerstgrasser et al. 2024"
    rep = cs.regression_run(d, T, 1.0, t, REPLACE, repeats=repeats, seed=0)
    acc = cs.regression_run(d, T, 1.0, t, ACCUMULATE, repeats=repeats, seed=0)
    mix = cs.regression_run(d, T, 1.0, t, MIX, repeats=repeats, seed=0)
    bound = cs.regression_bound(d, T, 1.0)
    return [
        (f"Regression d={d} T={T}, replace: test error at gen 1 / {t}", src,
         f"sigma^2 d/(T-d-1) * n = {rep[1]['theory']:.3f} / {rep[t]['theory']:.3f}",
         f"{rep[1]['test_error']:.3f} / {rep[t]['test_error']:.3f}"),
        (f"Regression, accumulate: test error at gen {t}", src,
         f"sum 1/i^2 form {acc[t]['theory']:.3f}, bound pi^2/6 form {bound:.3f}",
         f"{acc[t]['test_error']:.3f} (max over gens {max(r['test_error'] for r in acc):.3f})"),
        (f"Regression, mix:0.1: test error at gen {t}", "(no closed form)", "-", f"{mix[t]['test_error']:.3f}"),
    ]


def zipf_rows() -> list[tuple[str, str, str, str]]:
    rep = cs.zipf_run(10_000, 1.1, 100_000, 5, REPLACE, seed=0)
    acc = cs.zipf_run(10_000, 1.1, 100_000, 5, ACCUMULATE, seed=0)
    mix = cs.zipf_run(10_000, 1.1, 100_000, 5, MIX, seed=0)
    topp = cs.zipf_run(10_000, 1.1, 100_000, 5, REPLACE, top_p=0.95, seed=0)
    topk = cs.zipf_run(10_000, 1.1, 100_000, 5, REPLACE, top_k=2000, seed=0)
    own = "this project (DESIGN.md)"
    return [
        ("Zipf(1.1), 10k types, 100k tokens, replace: types at gen 1 / 5", own, "7.4k / 4.3k",
         f"{rep[1]['types'] / 1000:.1f}k / {rep[5]['types'] / 1000:.1f}k"),
        ("Zipf, accumulate / mix:0.1: types at gen 5", "Gerstgrasser et al. 2024 (accumulate)", "no loss after gen 1",
         f"{acc[5]['types'] / 1000:.1f}k / {mix[5]['types'] / 1000:.1f}k"),
        ("Zipf, replace: tail mass (outside 80 % head) gen 0 -> 5", own, "barely moves",
         f"{rep[0]['tail_mass']:.3f} -> {rep[5]['tail_mass']:.3f}"),
        ("Zipf, replace, top-p 0.95 / top-k 2000: tail mass gen 5", "Dohmatob et al. 2024 (tails cut)", "falls",
         f"{topp[5]['tail_mass']:.3f} / {topk[5]['tail_mass']:.3f}"),
        ("Zipf, replace: hapax share of 10k tokens, gen 1 -> 5", "Gambetta et al. 2024 (falls)", "falls",
         f"{rep[1]['hapax_share']:.3f} -> {rep[5]['hapax_share']:.3f}"),
    ]


def run_text(extra: list[str], generations: int) -> dict:
    """``simulate text --json`` in a child process on a throwaway store."""
    with tempfile.TemporaryDirectory(prefix="collapse-papers-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLAPSE_MONITOR_", "PREFECT_", "MLFLOW_"))}
        env.update({"PYTHONPATH": str(REPO), "PREFECT_HOME": str(Path(tmp) / "prefect"),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
                    "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"})
        cmd = [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main(sys.argv[1:]))",
               "simulate", "text", "--generations", str(generations), "--json", "--state-dir", str(Path(tmp) / "state"), *extra]
        out = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            raise SystemExit(f"simulate text failed with exit code {out.returncode}")
        return json.loads(out.stdout)


def _first(policy: dict, severity: str | None = None) -> str:
    """The first generation at which a rule of ``severity`` fired, with the rules that fired then."""
    fired = [t for t in policy["lead_times"]
             if t["first_firing"] is not None and (severity is None or t["severity"] == severity)]
    if not fired:
        return "never"
    first = min(t["first_firing"] for t in fired)
    return f"{first} ({', '.join(sorted(t['rule'] for t in fired if t['first_firing'] == first))})"


def text_rows(generations: int) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, extra in (("untruncated", []), ("top-p 0.9", ["--top-p", "0.9"])):
        print(f"running simulate text ({label}, {generations} generations, 3 policies) ...", file=sys.stderr, flush=True)
        res = run_text(extra, generations)["policies"]
        rep, mix, acc = res["replace"], res["mix:0.1"], res["accumulate"]
        g = lambda p, k: p["generations"][k - 1]  # noqa: E731 - generation k (1-based)
        last = generations
        rows += [
            (f"Text bigram ({label}), replace: first warning / first critical", "Shumailov et al. 2024 (tails go first)",
             "target: critical by gen 2", f"gen {_first(rep, 'warning')} / gen {_first(rep, 'critical')}"),
            (f"Text ({label}), replace: rare-word coverage, Self-BLEU, hapax gen 1 -> {last}", "Guo 2023, Gambetta 2024",
             "coverage and hapax fall, Self-BLEU rises",
             f"{g(rep, 1)['indicators']['tail.rare_coverage.ratio']:.2f} -> {g(rep, last)['indicators']['tail.rare_coverage.ratio']:.2f}, "
             f"{g(rep, 1)['self_bleu']:.3f} -> {g(rep, last)['self_bleu']:.3f}, {g(rep, 1)['hapax_share']:.3f} -> {g(rep, last)['hapax_share']:.3f}"),
            (f"Text ({label}), accumulate: critical alerts / alerts firing in {last} gens", "Gerstgrasser et al. 2024",
             "target: no critical", f"first critical {_first(acc, 'critical')}; {acc['alerts_firing']} rule-generations firing, "
                                    f"first warning gen {_first(acc, 'warning')}"),
            (f"Text ({label}), mix:0.1: first warning / first critical", "(report)", "-",
             f"gen {_first(mix, 'warning')} / gen {_first(mix, 'critical')}; {mix['alerts_firing']} rule-generations firing"),
        ]
    return rows


def table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("scenario and quantity", "source", "paper / closed form", "ours (measured)")
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-text", action="store_true", help="skip the text lineage (the real check; minutes)")
    ap.add_argument("--text-generations", type=int, default=10, help="generations of the text lineage (default 10)")
    args = ap.parse_args()
    started = time.monotonic()
    rows = gaussian_rows() + regression_rows() + zipf_rows()
    if not args.no_text:
        rows += text_rows(args.text_generations)
    print(table(rows))
    print(f"\n(generation t = the t-th fit; generation 1 is fitted on the human data. {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
