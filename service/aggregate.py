"""One ``/metrics`` for the processes of ``serve --workers``: the workers' expositions, merged.

The parent scrapes each worker's own endpoint (loopback, a port of its choosing) when it is
scraped and merges the families: counters and histograms are summed, which is what they mean for
the whole daemon; gauges are summed too (assets, buffered windows, open sensor faults, and the
per-asset series, which no two workers share), except the few in ``GAUGE_RULES`` where a sum would
lie: ``mqtt_connected`` is the minimum (0 when any worker is down), the served model's threshold
and promise and the ``*_info`` series the maximum (1, not the number of workers), and so are the
per-asset score and alert gauges (only ``_other`` comes from more than one worker).

prometheus_client's multiprocess mode was the alternative; it reads an environment variable at
import and shares files in a directory, against the explicit-registry style of the rest of the
service (``metrics.py``), and it would not know which worker restarted.

A worker that does not answer (dead, restarting, slow) is shown as last seen for ``GAUGES_HELD_S``:
its gauges (its assets' scores and alerts) as they were, ``mqtt_connected`` 0. A worker that dies takes its
counters with it: the parent adds what it last saw of them to a ``carry`` kept per worker slot, so
the merged counters never go backwards (a restart is not a counter reset to Prometheus). Increments
between the last scrape and the death are lost, except for ``readings_total``, which workers also
count in shared memory and which is therefore exact. A carried per-asset series that no worker has
shown for ``RETIRED_LABEL_S`` goes, as a worker retires the series of an asset gone that long.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from sensorguard.service.metrics import RETIRED_LABEL_S

GAUGE_RULES = {
    "sensorguard_mqtt_connected": min,
    "sensorguard_model_threshold": max,
    "sensorguard_model_promise_alerts_per_day": max,
    "sensorguard_model_info": max,
    "sensorguard_shadow_info": max,
    "sensorguard_partition_info": max,
    "sensorguard_cluster_members": max,  # each worker lists the same members: not the sum of their lists
    # per asset, one worker each, except ``_other`` (the assets past max_assets), which every worker
    # past its cap reports: summed, 0.6 and 0.7 read as 1.4, over the alert line (found by review)
    "sensorguard_anomaly_score": max,
    "sensorguard_anomaly_active": max,
}
SUMMED = ("counter", "histogram")
# a worker's gauges are shown this long after it last answered: a restart (at most 30 s apart) keeps its
# assets' series; one down for longer, or whose partitions a sibling took over (cluster mode), goes
GAUGES_HELD_S = 60.0
CONNECTED = ("sensorguard_mqtt_connected", "sensorguard_mqtt_connected", ())  # 0 while any worker is down

Key = tuple[str, str, tuple[tuple[str, str], ...]]  # family, sample name, sorted labels


@dataclass
class WorkerCounters:
    """What the parent keeps per worker slot: the cumulative samples last seen from the running
    process and the ``carry`` of the processes before it."""

    last: dict[Key, float] = field(default_factory=dict)
    carry: dict[Key, float] = field(default_factory=dict)
    gauges: dict[Key, float] = field(default_factory=dict)  # as last seen: shown while it does not answer
    shown: dict[Key, float] = field(default_factory=dict)  # (monotonic) a carried per-asset series last shown
    answered: float = 0.0  # (monotonic) when it last did: its gauges are shown for GAUGES_HELD_S after

    def restarted(self) -> None:
        """The process died: what it had counted becomes part of the carry."""
        for key, value in self.last.items():
            if value or not key[1].endswith("_total"):  # a counter at 0 (an asset that never alerted)
                # carries nothing; histogram buckets stay, in their le order
                self.carry[key] = self.carry.get(key, 0.0) + value
        self.last = {}


def parse(text: str) -> list[Metric]:
    """The families of one exposition (text format)."""
    return list(text_string_to_metric_families(text))


def merge(expositions: Iterable[list[Metric] | None], slots: list[WorkerCounters],
          meta: dict[str, tuple[str, str]], exact: dict[Key, float] | None = None,
          now: float | None = None) -> list[Metric]:
    """Merge each worker's families (None: it did not answer) into one list, adding the carries.

    meta: family name -> (help, type), filled as families are seen and kept by the caller, so a
    carry whose workers are all down still has its type. exact: samples whose value is known
    exactly (shared memory), replacing the merged one (shown even before any worker answered).
    Samples keep the order the workers gave them (a histogram's buckets stay in ``le`` order).
    """
    exact = exact or {}
    now = time.monotonic() if now is None else now
    values: dict[Key, list[float]] = {key: [] for key in exact}
    vanished: list[tuple[WorkerCounters, Key, float]] = []  # summed series a live worker no longer shows
    currents: list[dict[Key, float]] = []
    for families, slot in zip(expositions, slots, strict=True):
        if families is None:  # down or slow: its counters and gauges as last seen, and disconnected. Its
            # gauges left out, a restart dropped its assets' series for a few scrapes: Prometheus called
            # them stale and every alert of theirs resolved and fired again (a walk)
            current = dict(slot.last)
            for key, value in slot.gauges.items() if now - slot.answered < GAUGES_HELD_S else ():
                if key != CONNECTED:
                    values.setdefault(key, []).append(value)
            values.setdefault(CONNECTED, []).append(0.0)  # (left out, the minimum over the live ones said 1)
            meta.setdefault(CONNECTED[0], ("1 while connected to the MQTT broker.", "gauge"))
        else:
            current = {}
            slot.gauges, slot.answered = {}, now
            for family in families:
                meta.setdefault(family.name, (family.documentation, family.type))
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue  # a per-process start time: meaningless summed
                    key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                    if family.type in SUMMED:
                        current[key] = sample.value
                    else:
                        values.setdefault(key, []).append(sample.value)
                        slot.gauges[key] = sample.value
            vanished += [(slot, key, value) for key, value in slot.last.items() if value and key not in current]
            slot.last = current
        currents.append(current)
    _retire_carried(slots, set().union(*currents), now)
    for current, slot in zip(currents, slots, strict=True):
        for source in (current, slot.carry):
            for key, value in source.items():
                values.setdefault(key, []).append(value)
    # A worker drops an asset's alerts_total when it gives the asset's label slot to another (retired,
    # metrics.RETIRED_LABEL_S): alone, the series goes; still summed with another worker's or a carry
    # (cluster mode moves assets), the sum fell, Prometheus read a counter reset, and increase() took
    # the rest as new alerts (a review). There its last value joins the slot's carry, as at a restart.
    for slot, key, value in vanished:
        if values.get(key):
            slot.carry[key] = slot.carry.get(key, 0.0) + value
            values[key].append(value)
    out: dict[str, Metric] = {}
    for key, seen in values.items():
        name, sample_name, labels = key
        documentation, kind = meta.get(name, ("", "counter"))
        if name not in out:
            out[name] = Metric(name, documentation, kind)
        rule = GAUGE_RULES.get(name, sum) if kind not in SUMMED else sum
        out[name].add_sample(sample_name, dict(labels), exact[key] if key in exact else _combine(rule, seen))
    return list(out.values())


def _retire_carried(slots: list[WorkerCounters], shown: set[Key], now: float) -> None:
    """Drop the carried per-asset series no worker has shown for ``RETIRED_LABEL_S``. Every restart
    carries each asset's alert counter, so kept for good, the carries grew with every asset the
    daemon ever served (ids that come and go), and the merged page exported them all, past the
    ``max_assets`` label bound each worker keeps (a review). A worker's own page drops such a series
    when it retires the asset's label slot; here it goes after as long unseen, as if so retired."""
    latest: dict[Key, float] = {}  # a carried series' last sight, over all the slots that carry it
    for slot in slots:
        for key in [key for key in slot.carry if any(name == "asset" for name, _ in key[2])]:
            if key in shown:
                slot.shown[key] = now
            else:
                slot.shown.setdefault(key, now)
            latest[key] = max(latest.get(key, -math.inf), slot.shown[key])
    for slot in slots:  # one key's carries go together: one slot's alone (carried from a scrape later)
        # made the summed counter fall for a scrape, which Prometheus read as a reset and increase() as new alerts
        for key in [key for key in slot.carry if key in latest]:
            if now - latest[key] >= RETIRED_LABEL_S:
                del slot.carry[key]
            else:
                slot.shown[key] = latest[key]
        for key in [key for key in slot.shown if key not in slot.carry]:  # (carried no more)
            del slot.shown[key]


def _combine(rule, seen: list[float]) -> float:
    finite = [v for v in seen if not math.isnan(v)]
    return rule(finite) if finite else float("nan")
