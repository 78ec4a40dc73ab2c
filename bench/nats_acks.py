"""What nats-server spends per reading drained, by the readings stream's retention and ack policy.

Cluster mode's readings stream is a work queue: each reading is acknowledged on its own (a work
queue refuses ``AckPolicy.ALL``) and deleted when acknowledged. This measures the broker's CPU per
message for that and for the alternatives, on one fresh file-backed node each: 60,000 messages
(one reading each, as ``bench/cluster.py``) over 8 partitions are stored first, then one process
drains the 8 durable pull consumers with the daemon's own puller (``service/pull.py`` on
``service/natswire.py``), acknowledging every message (``explicit``) or the last of each batch
(``all``). Rows:

- ``workqueue explicit``: what cluster mode does;
- ``workqueue explicit memory``: the same on a stream held in memory;
- ``interest all``: deleted once acknowledged, one acknowledgement per batch;
- ``limits explicit`` / ``limits all``: nothing deleted (the cost of acknowledging alone);
- ``limits all + purge``: then one purge up to the last sequence (the deletion in bulk).

``server_us``: nats-server's CPU per message from the drain's start to one second after its end;
``rate``: messages per second drained. Run ``python bench/nats_acks.py`` (``--messages N``,
``--repeat R``: medians). Prints a table; asserts nothing. Why cluster mode stays on the work
queue although ``limits all + purge`` costs the broker less: docs/benchmarks.md (session 25).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensorguard.nats_local import NatsCluster  # noqa: E402

PARTITIONS = 8
MODES = ("workqueue explicit", "workqueue explicit memory", "interest all", "limits explicit", "limits all",
         "limits all + purge")
PAYLOAD = json.dumps({"ts": 1_767_225_600.0, "values": {f"c{i}": float(i) for i in range(6)}}).encode()


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def drain(url: str, server_pid: int, mode: str, messages: int) -> tuple[float, float]:
    """(messages per second, server CPU µs per message) for one mode on a fresh node."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

    from sensorguard.service.natswire import connect as connect_wire
    from sensorguard.service.pull import Puller

    retention = {"workqueue": RetentionPolicy.WORK_QUEUE, "interest": RetentionPolicy.INTEREST,
                 "limits": RetentionPolicy.LIMITS}[mode.split()[0]]
    policy = AckPolicy.EXPLICIT if "explicit" in mode else AckPolicy.ALL
    nc = await nats.connect(url)
    js = nc.jetstream()
    storage = StorageType.MEMORY if "memory" in mode else StorageType.FILE
    await js.add_stream(StreamConfig(name="R", subjects=["r.>"], retention=retention, storage=storage))
    for k in range(PARTITIONS):  # before the messages: an interest stream keeps only what a consumer wants
        await js.add_consumer("R", ConsumerConfig(durable_name=f"p{k}", filter_subject=f"r.{k}.>",
                                                  ack_policy=policy, ack_wait=30, max_ack_pending=20_000,
                                                  deliver_policy=DeliverPolicy.ALL))
    for i in range(messages):
        await nc.publish(f"r.{i % PARTITIONS}.site-a.pump-{i % 100}", PAYLOAD)
        if i % 2000 == 1999:
            await nc.flush()
    await nc.flush()
    while (await js.stream_info("R")).state.messages < messages:
        await asyncio.sleep(0.1)
    wire = await connect_wire((url,))
    taken = [0]
    cpu0, started = cpu_s(server_pid), time.perf_counter()

    async def partition(k: int) -> None:
        puller = Puller(wire, "R", f"p{k}", 256, 0.5, lambda: True)
        puller.open()
        while taken[0] < messages:
            got = await puller.fetch(0.5)
            if got:
                wire.ack(got if policy == AckPolicy.EXPLICIT else got[-1:])
                taken[0] += len(got)
        await puller.close()

    await asyncio.gather(*(partition(k) for k in range(PARTITIONS)))
    await wire.flush()
    if "purge" in mode:
        last = (await js.stream_info("R")).state.last_seq
        await nc.request("$JS.API.STREAM.PURGE.R", json.dumps({"seq": last + 1}).encode(), timeout=30)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1.0)  # the server finishes what the acknowledgements started
    server_us = 1e6 * (cpu_s(server_pid) - cpu0) / messages
    wire.close()
    await nc.close()
    return messages / elapsed, server_us


def measure(mode: str, messages: int, workdir: Path) -> tuple[float, float]:
    node = NatsCluster(Path(tempfile.mkdtemp(dir=workdir)), 1).start()
    try:
        return asyncio.run(drain(node.urls[0], node.nodes[0].proc.pid, mode, messages))
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES), help="rows to run (comma separated)")
    options = parser.parse_args()
    modes = [mode.strip() for mode in options.modes.split(",")]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(MODES)}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {mode: [measure(mode, options.messages, Path(tmp)) for _ in range(options.repeat)]
                for mode in modes}
    print(f"{'retention and acknowledgement':<28} {'rate':>9} {'server_us':>9}")
    for mode, results in runs.items():
        rate = statistics.median(r for r, _ in results)
        server = statistics.median(s for _, s in results)
        print(f"{mode:<28} {rate:>9,.0f} {server:>9.2f}")


if __name__ == "__main__":
    main()
