"""Every Prometheus metric of the daemon, on a registry passed in (served by :mod:`~sensorguard.service.metrics_http`).

Names are a contract (DESIGN.md, dashboards, alert rules): change them only everywhere at once.
The registry is an argument, never prometheus_client's global one, so tests and several daemons
in one process each get their own. Per-asset series are capped at ``max_assets`` distinct assets;
the rest share the label ``_other``, so a flood of made-up asset ids cannot blow up the time
series database. Histograms, not summaries: histograms aggregate across daemons.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> m = Metrics(registry, max_assets=1)
>>> m.asset_label("pump-1"), m.asset_label("pump-2")
('pump-1', '_other')
>>> m.reject("bad_ts"); registry.get_sample_value("sensorguard_messages_rejected_total", {"reason": "bad_ts"})
1.0
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from sensorguard.service.command_messages import VERBS
from sensorguard.service.payload import REJECT_REASONS
from sensorguard.service.sensors import KINDS as SENSOR_KINDS
from sensorguard.service.state_writes import STATE_FILES

# No ``<name>_created`` series: one per counter and histogram series (114 on a plain daemon), each
# a gauge of the process's start, that no rule or panel reads; the workers' parent dropped them when
# merging and kept its own (found in a README walk). Prometheus needs none of them.
disable_created_metrics()

WINDOW_DROP_REASONS = ("scoring_failed", "partition_lost")  # windows_dropped_total{reason}

OTHER = "_other"
# an asset that alerted, silent this long, gives its label slot and its alerts_total series up (the rules
# look a day back with increase(): its last alert is seen by them all first)
RETIRED_LABEL_S = 2 * 86400.0
# time to acknowledge (from 10 s: acks within a minute read as a 30 s median and a 54 s p90 from a first
# bucket of 60 s, whatever they were; a walk)
ACK_BUCKETS = (10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)
SCORING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SCORE_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 100.0)  # window scores, 1.0 the alert line
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The daemon's metrics. Attributes are the prometheus_client objects; helpers cover the
    labelled ones so callers never pick label values (and so never bypass the asset cap)."""

    def __init__(self, registry: CollectorRegistry, max_assets: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_assets < 1:
            raise ValueError(f"max_assets must be >= 1, got {max_assets}")
        self.max_assets = max_assets
        self._clock = clock
        self._labelled: set[str] = set()
        self._alerted: set[str] = set()  # labelled assets with an alerts_total series: their slot stays
        self._retired: dict[str, float] = {}  # of those, forgotten (silent) ones -> since when, oldest first
        self._lock = threading.Lock()  # asset_label may be called from the loop and the HTTP thread
        self._model: tuple[str, str] | None = None
        p = "sensorguard_"

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(p + name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(p + name, doc, labels, registry=registry)

        self.readings = counter("readings_total", "Samples accepted into an asset's buffer.")
        self.rejected = counter(
            "messages_rejected_total",
            "Rejected messages or samples, each counted once, by reason (a message of many samples refused "
            "sample by sample counts each).",
            ("reason",),
        )
        self.windows_scored = counter("windows_scored_total", "Windows on the hop grid scored by the model.")
        self.alert_windows = counter(
            "alert_windows_total", "Windows between the hop grid's judged while their asset's alert was up "
            "(the bundle's alert_hop): an alert ends sooner after its fault.")
        self.windows_dropped = counter(
            "windows_dropped_total", "Windows never judged: their scoring failed (logged), or cluster mode lost "
            "their partition to another worker, which scores them.", ("reason",))
        for reason in WINDOW_DROP_REASONS:
            self.windows_dropped.labels(reason)
        self.publishes_dropped = counter(
            "publishes_dropped_total", "Outgoing messages dropped because the queue waiting for the broker was full "
            "(alert, state, sensor, event, status).", ("kind",))
        for kind in ("alert", "state", "sensor", "event", "status"):  # at 0: a first burst of drops shows in increase()
            self.publishes_dropped.labels(kind)
        self.publishes_forgotten = counter(
            "publishes_forgotten_total", "Alert closes (a clear or silence ending an announced alert) and retained "
            "states the full queue dropped that were not kept to send again (16 closes an asset, 10,000 assets): "
            "lost for good; logged.", ("kind",))
        for kind in ("close", "state"):
            self.publishes_forgotten.labels(kind)
        self.publishes_refused = counter(
            "publishes_refused_total", "Outgoing messages the broker refused in its acknowledgement (MQTT 5: its "
            "access rules for the output topics, a quota): lost; logged as an error.")
        self.window_restarts = counter(
            "window_restarts_total", "Times an asset's window started afresh (a long gap, a dropped reading): its "
            "next score waits for a full window.")
        self.alerts = counter("alerts_total", "Alerts raised, by asset.", ("asset",))
        self.sensor_faults = counter("sensor_faults_total",
                                     "Sensor faults opened (stuck, out_of_range, missing, silent).", ("kind",))
        self.sensor_faults_open = gauge("sensor_faults_open", "Channel sensor faults open now, all assets.")
        self.sensor_faults_held = gauge("sensor_faults_held", "Of sensor_faults_open, those on assets in "
                                        "maintenance or shelved now (a sensor unplugged for its work).")
        self.assets_silent = gauge("assets_silent",
                                   "Assets silent now (a silent sensor fault open; with state_dir, through restarts).")
        self.sensor_events_dropped = counter("sensor_events_dropped_total",
                                             "Sensor-fault events dropped because their queue was full.")
        self.reload_failures = counter("model_reload_failures_total", "Failed attempts to load a new model.")
        self.record_write_failures = counter(
            "record_write_failures_total", "Failed writes of recorded readings (e.g. a full disk)."
        )
        self.state_write_failures = counter(
            "state_write_failures_total", "Failed writes in state_dir (e.g. a full disk, a read-only folder), by file: "
            "assets.json, controls.json (a hold or acknowledgement not kept across a restart), audit.jsonl.", ("file",))
        for name in STATE_FILES:  # at 0: the first failure shows in increase()
            self.state_write_failures.labels(name)
        # result: accepted, rejected, duplicate (not carried out again), retry (refused for now: busy, a
        # partition moving; counted per copy, which the CLI sends again until answered), ignored
        # (published with retain), error (handling it failed: a bug, logged; command "?")
        self.commands = counter("commands_total", "Commands received (maintenance, shelve, ack; ? for an unknown "
                                "verb), by result: accepted, rejected, duplicate, retry (refused for now, each copy), "
                                "ignored (published with retain), error (handling it failed, logged).",
                                ("command", "result"))
        self.acknowledged = counter("alerts_acknowledged_total",
                                    "Alerts acknowledged (the first answer to each), by whether as a false alarm.",
                                    ("false_alarm",))
        self.assets_held = gauge("assets_held", "Assets in maintenance or shelved now.", ("reason",))
        self.alerts_forgotten = counter(
            "alerts_forgotten_total", "Alerts forgotten before their acknowledgement, the oldest past the 10,000 "
            "recent alerts kept: an acknowledgement of one is refused as unknown or too old; logged.")
        self.control_changes_dropped = counter(
            "control_changes_dropped_total", "Accepted commands whose follow-up (announcing an alert held back, "
            "republishing the state) was dropped because its queue was full; the asset's next window catches up.")
        self.promise = gauge("model_promise_alerts_per_day",
                             "The served bundle's promise: false alerts per asset per day (NaN: none).")
        self.alerts_suppressed = counter(
            "alerts_suppressed_total", "Alerts raised but not announced: the asset in maintenance or shelved (each "
            "alert once; its clear is not announced either).", ("reason",))
        self.record_dropped = counter(
            "record_dropped_total", "Readings not recorded because the recorder's held readings reached their bound, "
            "or lost with a file the disk refused (record_write_failures_total)."
        )
        self.anomaly_score = gauge(
            "anomaly_score", "Latest score per asset (1.0 is the alert line).", ("asset",)
        )
        self.anomaly_active = gauge(
            "anomaly_active", "1 while an alert is raised and announced for the asset (0 while a shelving or "
            "maintenance holds it).", ("asset",)
        )
        self.threshold = gauge("model_threshold", "Reconstruction error threshold of the loaded model.")
        self.model_info = gauge("model_info", "The loaded model (value is always 1).", ("name", "version"))
        self.partition_info = gauge("partition_info", "The partitions (topic filters) this instance serves "
                                    "(value is always 1); daemon: its instance name (not instance, which "
                                    "Prometheus sets to the scrape target).", ("daemon", "partition"))
        self.partitions_owned = gauge("partitions_owned", "Cluster mode: JetStream partitions this worker owns now.")
        self.cluster_members = gauge("cluster_members", "Cluster mode: the workers this one found in the cluster at "
                                     "its last listing of the members, itself included (0 outside cluster mode, and "
                                     "while it stands down, unable to publish).")
        self.partition_changes = counter("partition_changes_total", "Cluster mode: partitions gained, released "
                                         "(handed on: to a joining worker, at a stop, or while it cannot "
                                         "publish) and lost (its lease ran out: another worker took it, or NATS "
                                         "was out of reach longer than the lease).",
                                         ("change",))
        self.mqtt_connected = gauge("mqtt_connected", "1 while connected to the MQTT broker.")
        self.assets = gauge("assets", "Assets with a buffer.")
        self.buffered_windows = gauge("buffered_windows", "Windows waiting to be scored.")
        self.scoring_duration = Histogram(
            p + "scoring_duration_seconds",
            "Time to score one batch of windows.",
            buckets=SCORING_BUCKETS,
            registry=registry,
        )
        self.ack_seconds = Histogram(
            p + "ack_seconds",
            "From an alert's raise to its first acknowledgement (wall clock).",
            buckets=ACK_BUCKETS,
            registry=registry,
        )
        self.shadow_alerts = counter("shadow_alerts_total", "Alerts the shadow model would have raised, by asset "
                                     "(never published).", ("asset",))
        self.shadow_score = Histogram(
            p + "shadow_score",
            "The shadow model's window scores as its alerts judge them (1.0 is its alert line).",
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.shadow_info = gauge("shadow_info", "The shadow model scored beside the served one (value is always 1).",
                                 ("version",))
        self.reading_to_score = Histogram(
            p + "reading_to_score_seconds",
            "From receiving a window's last sample to its score.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Pre-created children: rates work from the first scrape, and the hot path skips labels().
        self._reject_children = {reason: self.rejected.labels(reason) for reason in REJECT_REASONS}
        for kind in SENSOR_KINDS:
            self.sensor_faults.labels(kind)
        # Counters with known labels start at 0: increase() cannot see a series' first value, so a
        # series born at 1 hid its first event from the rules and the dashboard (ten assets alerting
        # once each read as no flood). Per-asset alerts start at 0 with the asset's label, taken at its
        # first reading (ingest), a window before a first window can raise.
        for verb in VERBS:
            for result in ("accepted", "rejected", "ignored", "duplicate", "retry"):
                self.commands.labels(verb, result)
        for value in ("true", "false"):
            self.acknowledged.labels(value)
        for reason in ("maintenance", "shelved"):
            self.alerts_suppressed.labels(reason)
        for change in ("gained", "released", "lost"):
            self.partition_changes.labels(change)
        self.alerts.labels(OTHER)
        self._shadowing = False

    def reject(self, reason: str, n: int = 1) -> None:
        """Count ``n`` rejects of ``reason`` (cheap enough for the per-message path)."""
        child = self._reject_children.get(reason)
        if child is None:  # a reason missing from REJECT_REASONS is a bug, but still counted
            child = self._reject_children[reason] = self.rejected.labels(reason)
        child.inc(n)

    def asset_label(self, asset: str) -> str:
        """The asset itself for the first ``max_assets`` distinct assets, ``_other`` beyond."""
        if asset in self._labelled:
            if self._retired and asset in self._retired:  # back: its slot is its own again
                with self._lock:
                    self._retired.pop(asset, None)
            return asset
        with self._lock:
            if len(self._labelled) >= self.max_assets and self._retired:
                self._free_retired()
            if len(self._labelled) < self.max_assets and asset != OTHER:
                self._labelled.add(asset)
                self.alerts.labels(asset)  # at 0 (see __init__)
                if self._shadowing:
                    self.shadow_alerts.labels(asset)
                return asset
        return OTHER

    def _free_retired(self) -> None:
        """Free the slot of the asset retired longest, if ``RETIRED_LABEL_S`` ago (the lock held): its
        counters go. Kept for good, assets retired after an alert filled every slot over months, and
        every new asset shared ``_other``, whose ``anomaly_active`` the last window's asset sets: one's
        alert hidden by another's normal window."""
        asset, since = next(iter(self._retired.items()))
        if self._clock() - since < RETIRED_LABEL_S:
            return
        del self._retired[asset]
        self._labelled.discard(asset)
        self._alerted.discard(asset)
        for metric in (self.alerts, self.shadow_alerts):
            with contextlib.suppress(KeyError):
                metric.remove(asset)

    def set_score(self, asset: str, score: float, active: bool) -> None:
        """Publish an asset's latest score and whether its alert is up."""
        label = self.asset_label(asset)
        self.anomaly_score.labels(label).set(score)
        self.anomaly_active.labels(label).set(1 if active else 0)

    def alert_raised(self, asset: str, shadow: bool = False) -> None:
        """Count an alert of ``asset`` (``shadow``: one the shadow model would have raised); the
        asset's label slot stays, since its counter series does."""
        label = self.asset_label(asset)
        (self.shadow_alerts if shadow else self.alerts).labels(label).inc()
        if label != OTHER:
            with self._lock:
                self._alerted.add(label)

    def set_shadow(self, version: str | None) -> None:
        """The shadow model now scored (None: none)."""
        self.shadow_info.clear()
        if version is not None:
            self.shadow_info.labels(version).set(1)
        with self._lock:
            self._shadowing = version is not None
            if self._shadowing:  # its alert counters start at 0, as the served model's
                for label in (*self._labelled, OTHER):
                    self.shadow_alerts.labels(label)

    def forget_asset(self, asset: str) -> None:
        """Remove the asset's gauges and free its label slot (``_other`` is shared and stays).

        ``alerts_total`` is a counter: the series of an asset that ever alerted stays (a vanishing
        counter hides an alert raised just before the asset went silent from ``increase()``), and
        so does its slot, which keeps the label count bounded by ``max_assets``, for
        ``RETIRED_LABEL_S`` (or until it is back); an asset that never alerted loses its series at 0
        with its slot.
        """
        with self._lock:
            if asset not in self._labelled:
                return
            if asset not in self._alerted:
                self._labelled.discard(asset)
                gone = (self.anomaly_score, self.anomaly_active, self.alerts, self.shadow_alerts)  # (theirs at 0)
            else:  # (its slot given up RETIRED_LABEL_S later, when one is needed: _free_retired)
                self._retired.pop(asset, None)
                self._retired[asset] = self._clock()
                gone = (self.anomaly_score, self.anomaly_active)
        for metric in gone:
            with contextlib.suppress(KeyError):
                metric.remove(asset)

    def set_model(self, name: str, version: str, threshold: float, promise: float | None = None) -> None:
        """Announce a newly loaded model: the old ``model_info`` series goes, so exactly one is 1;
        ``promise``: its false alerts per asset per day (the per-asset alert-rate rule's yardstick)."""
        self.promise.set(float("nan") if promise is None else promise)
        if self._model is not None and self._model != (name, version):
            with contextlib.suppress(KeyError):
                self.model_info.remove(*self._model)
        self._model = (name, version)
        self.model_info.labels(name, version).set(1)
        self.threshold.set(threshold)

