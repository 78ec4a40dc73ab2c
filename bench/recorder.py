"""The recorder's cost of filing cleared alerts' readings on a full store: seconds per alert written
by ``Recorder._write_alerts`` (the scoring worker's housekeeping runs it) over a store already
holding ``--files`` alert files, as after weeks of alerts.

Run ``python bench/recorder.py`` (``--files``, ``--alerts``). A storm of clears (a fleet going
silent at once) writes hundreds of alerts in one housekeeping tick, and the scoring worker scores
nothing meanwhile. Prints one line; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensorguard.service.recorder import Recorder  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=18_000, help="alert files already in the store")
    parser.add_argument("--alerts", type=int, default=300, help="alerts cleared at once")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sensorguard-bench-recorder-") as root:
        store = Path(root)
        (store / "alerts").mkdir()
        for k in range(args.files):  # (their content is never read here)
            (store / "alerts" / f"old-{k}@{k}.parquet").write_bytes(b"")
        recorder = Recorder(store, ("a", "b", "c"), guard_s=1, flush_interval_s=0, max_bytes=10**12)
        for k in range(args.alerts):
            for t in range(20):
                recorder.add(f"p{k}", float(t), np.zeros(3))
            recorder.alert_raised(f"p{k}", 5.0, f"p{k}@5000")
            recorder.alert_cleared(f"p{k}", 10.0, f"p{k}@5000", 2.0)
        started = time.perf_counter()
        written = recorder._write_alerts()
        took = time.perf_counter() - started
    print(f"{written} alerts written over a store of {args.files:,} files: {took:.2f} s, "
          f"{1000 * took / max(written, 1):.1f} ms an alert")


if __name__ == "__main__":
    main()
