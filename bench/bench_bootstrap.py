"""Issue 16: the paired bootstrap interval, N = 10,000 paired examples, 10,000 resamples, well under a second.

Figures (two aligned correctness arrays, 70% right, 15% of the pairs discordant; numpy's default_rng(1)):
  bootstrap_s     engine.analysis.stats.paired_bootstrap_interval(a, b, resamples, seed=0): what
                  `labtui compare --ci bootstrap` and `labtui report --ci bootstrap` call per comparison
                  (in-process, numpy already imported)
  compare_s       stats.compare_paired(a, b, ci="bootstrap"): the whole comparison with that interval
                  (McNemar exact, Cohen's h, Wilson intervals, the bootstrap at its 10,000 resamples)
  wald_s          stats.paired_diff_interval(a, b): the Wald interval it sits beside, for reference

    .venv/bin/python bench/bench_bootstrap.py [--n N] [--resamples R] [--repeats K] [--quick]
"""

from __future__ import annotations

import time

from common import Report, parser, wait_quiet


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="paired examples (default 10,000)")
    ap.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10,000)")
    args = ap.parse_args()
    n = 1_000 if args.quick else args.n
    resamples = 1_000 if args.quick else args.resamples
    repeats = 2 if args.quick else args.repeats

    import numpy as np
    from labtui.engine.analysis import stats

    rng = np.random.default_rng(1)
    a = rng.random(n) < 0.70
    b = np.where(rng.random(n) < 0.15, ~a, a)  # 15% discordant pairs
    wait_quiet(timeout=args.wait_quiet)
    rep = Report("bootstrap", args, f"Paired bootstrap interval: N = {n:,}, {resamples:,} resamples")
    stats.paired_bootstrap_interval(a[:100], b[:100], resamples=100, seed=0)  # warm numpy's code paths
    boot, whole, wald = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        diff, lo, hi = stats.paired_bootstrap_interval(a, b, resamples=resamples, seed=0)
        boot.append(time.perf_counter() - t)
        t = time.perf_counter()
        stats.compare_paired(a, b, ci="bootstrap")
        whole.append(time.perf_counter() - t)
        t = time.perf_counter()
        _, wlo, whi = stats.paired_diff_interval(a, b)
        wald.append(time.perf_counter() - t)
    rep.add("bootstrap_s", boot, "s", target=1.0, label=f"paired_bootstrap_interval, N {n:,}, {resamples:,} resamples")
    rep.add("compare_s", whole, "s", label=f"  compare_paired(ci='bootstrap'): the whole comparison, "
                                           f"{stats.BOOTSTRAP_RESAMPLES:,} resamples")
    rep.add("wald_s", wald, "s", label="  paired_diff_interval (Wald), for reference")
    rep.extra["result"] = {"n": n, "resamples": resamples, "diff": diff, "bootstrap_ci": [lo, hi], "wald_ci": [wlo, whi]}
    rep.note(f"diff {diff * 100:+.2f} points; bootstrap 95% CI [{lo * 100:+.2f}, {hi * 100:+.2f}], "
             f"Wald [{wlo * 100:+.2f}, {whi * 100:+.2f}]")
    rep.finish(args.out)


if __name__ == "__main__":
    main()
