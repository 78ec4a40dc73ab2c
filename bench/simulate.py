"""How long ``training.simulate.simulate`` takes to write a synthetic plant (it feeds the other benchmarks).

Run ``python bench/simulate.py`` (``--rows``, ``--channels``, ``--repeat``). Prints the time per call
(best and median of the repeats) and rows per second; asserts nothing, since timings vary between
machines and runs. The old unit test's budget was 2 s for 100,000 rows x 8 channels with anomalies.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensorguard.training.simulate import simulate  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per call (default 100000)")
    parser.add_argument("--channels", type=int, default=8, help="channels (default 8)")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls (default 5)")
    parser.add_argument("--no-anomalies", action="store_true", help="a clean plant (default: with faults)")
    args = parser.parse_args(argv)

    anomalies = not args.no_anomalies
    frame = simulate(rows=args.rows, channels=args.channels, anomalies=anomalies)  # warm-up (imports, caches)
    times = []
    for seed in range(args.repeat):
        begin = time.perf_counter()
        simulate(rows=args.rows, channels=args.channels, seed=seed, anomalies=anomalies)
        times.append(time.perf_counter() - begin)
    best, median = min(times), statistics.median(times)
    print(f"simulate(rows={args.rows}, channels={args.channels}, anomalies={anomalies}) -> {frame.shape}")
    print(f"best   {best:8.3f} s   {args.rows / best:12,.0f} rows/s")
    print(f"median {median:8.3f} s   {args.rows / median:12,.0f} rows/s   ({args.repeat} runs)")


if __name__ == "__main__":
    main()
