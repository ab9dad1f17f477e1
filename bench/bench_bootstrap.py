"""The paired bootstrap interval (engine.analysis.stats.paired_bootstrap_interval): N = 10,000 paired
examples, 10,000 resamples. Target: well under a second. Prints the time of each of a few repeats.

    .venv/bin/python bench/bench_bootstrap.py [N] [RESAMPLES]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from labtui.engine.analysis.stats import paired_bootstrap_interval, paired_diff_interval


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    resamples = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    rng = np.random.default_rng(1)
    a = rng.random(n) < 0.70
    b = np.where(rng.random(n) < 0.15, ~a, a)  # 15% discordant pairs
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        diff, lo, hi = paired_bootstrap_interval(a, b, resamples=resamples, seed=0)
        times.append(time.perf_counter() - t0)
    _, wlo, whi = paired_diff_interval(a, b)
    print(f"paired bootstrap, N={n:,}, {resamples:,} resamples: best {min(times):.3f} s, "
          f"runs {', '.join(f'{t:.3f}' for t in times)} s")
    print(f"diff {diff * 100:+.2f} points, bootstrap 95% CI [{lo * 100:+.2f}, {hi * 100:+.2f}], "
          f"Wald [{wlo * 100:+.2f}, {whi * 100:+.2f}]")


if __name__ == "__main__":
    main()
