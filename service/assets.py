"""Each asset's alert machine and drift baseline, stepped with its scored windows; what they publish.

:class:`AssetAlerts` is the daemon's alert application, on the scoring worker's thread: a scored
window steps its asset's drift rule and alert machine (:func:`~sensorguard.service.alerts.judge`,
the same step ``sensorguard score`` takes offline), and every event and status change goes out
through the :class:`~sensorguard.service.publisher.Publisher`, to the metrics and to the recorder
(which holds an asset's readings back while an alert is up). It needs no broker: tests drive it
with :meth:`AssetAlerts.apply` and a client that records what was published.

Sensor faults, and an asset that goes silent (a ``silent`` sensor fault, its alert ended, its
state forgotten until it is back): :class:`~sensorguard.service.asset_faults.AssetFaults`.

Assets restored from ``state_dir`` (:func:`~sensorguard.service.state.restore_states`) wait for
their next window and carry on where they were (an alert stays up under its ``alert_id``); those
that send nothing until ``restore_until`` go silent like live assets (an alert up ends; a normal
one this instance serves that judged a window before is told silent as a live one is; one silent
already, kept for its learned drift baseline, is awaited as a silent one, under the same cap; any
other is forgotten). In a maintenance and its guard band the drift baseline learns nothing.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from sensorguard.service.alerts import UNJUDGED, AlertEvent, AlertRules, AlertState, judge
from sensorguard.service.asset_faults import SILENT_KEPT, AssetFaults
from sensorguard.service.bundle import Bundle
from sensorguard.service.bundle_checks import bundle_rules
from sensorguard.service.carried_states import Adopted, CarriedStates, Restored
from sensorguard.service.commands import AlarmControls
from sensorguard.service.control_changes import ControlChanges
from sensorguard.service.drift import DriftState, widening
from sensorguard.service.level import top_channels
from sensorguard.service.metrics import Metrics
from sensorguard.service.open_faults import OpenFaults
from sensorguard.service.outbox import Outbox
from sensorguard.service.publisher import Publisher
from sensorguard.service.recorder import Recorder
from sensorguard.service.sensors import SensorEvent
from sensorguard.service.state_writes import StateWrites

log = logging.getLogger(__name__)

class AssetAlerts(CarriedStates, AssetFaults, ControlChanges):
    """Alert states, drift baselines and latest top channels per asset, and their publishing.

    current: the bundle being served now (it changes on a hot swap): what an event names when its
    call names no bundle.
    restored: per-asset state from the previous run (``state_dir``), empty without one.
    State taken in from elsewhere or handed on: :class:`~sensorguard.service.carried_states.CarriedStates`;
    sensor faults and silence: :class:`~sensorguard.service.asset_faults.AssetFaults`; commands that
    change how an asset is handled: :class:`~sensorguard.service.control_changes.ControlChanges`.
    """

    def __init__(self, rules: AlertRules, publisher: Publisher, metrics: Metrics, recorder: Recorder | None,
                 current: Callable[[], Bundle], restored: Restored | None = None,
                 state_dir: str | None = None, controls: AlarmControls | None = None, hop: int | None = None,
                 judged: dict[str, float] | None = None) -> None:
        self.rules = rules
        self.hop = hop  # the daemon's (None: each bundle's own): a bundle served at another has no alert hop
        self.controls = controls  # maintenance, shelving, acknowledgements (service/commands.py)
        self.publisher = publisher
        self.metrics = metrics
        self.recorder = recorder
        self.current = current
        self.state_dir = state_dir
        self.writes = StateWrites(metrics.state_write_failures, state_dir)  # assets.json's failed writes
        self.restored: Restored = dict(restored or {})
        self.restore_until = time.monotonic() + rules.stale_after  # restored assets not back by then go
        self._states: dict[str, AlertState] = {}
        self._drift: dict[str, DriftState] = {}  # kept across model swaps (relative to the baseline)
        self._latest: dict[str, tuple[float, list[dict]]] = {}  # asset -> (ts, top channels) of its last window
        self.restored_channels: dict[str, list[dict]] = {}  # a restored alert's, until its first window
        self._grid_ts: dict[str, float] = {}  # asset -> its last judged window on the hop grid (a new owner's anchor)
        self._judged_ts: dict[str, float] = {}  # asset -> the last window its state holds (an adopted one's too)
        self._floors: dict[str, float] = dict(judged or {})  # asset -> its last judged window, saved (restarts)
        self._stated: dict[str, float] = {}  # asset -> the reading time its last retained state was published at
        self._open = OpenFaults(metrics)  # open sensor faults and silent assets (their own lock)
        self._announced: dict[str, str] = {}  # asset -> the alert id whose raise was published
        self._raise_info: dict[str, Any] = {}  # asset -> that raise's publish handle (confirmed by the broker?)
        self._outbox = Outbox(publisher, SILENT_KEPT, metrics)  # closes and retained states the full queue dropped
        self.save_soon = False  # an alert saved as unannounced was announced: save at the next tick
        self.model_swapped = False  # set on a swap: every retained state names the model and its line, sent again
        self._unconfirmed: set[str] = set()  # saved as unannounced, its raise published: awaiting the broker
        self.hold_raises = False  # set while a batch is scored: its raises go out after a save (release_raises)
        self._held_back: dict[str, tuple[AlertEvent, list[dict], Bundle]] = {}  # asset -> its raise, unsaved
        self._control_changes: deque[tuple[str, bool | None]] = deque(maxlen=10_000)  # from commands
        self._adopted: deque[Adopted] = deque()  # cluster mode: moved here
        self._synced: dict[str, tuple] = {}  # cluster mode: (status, alert id, told, guard band) passed on
        self._syncing = False  # changed_states has been called: cluster mode
        self.on_handed_over: Callable[[str], None] = lambda asset: None  # an asset left (the shadow forgets it)
        # whether an asset is this instance's (the daemon's partitions, or its cluster worker's): a restored
        # one of another's is not restated here, over its owner's state (restart with fewer partitions)
        self.serves: Callable[[str], bool] = lambda asset: True
        # per asset, its channels walked past their sensor limits and their last plausible values (the
        # daemon's buffers, read under the ingest's lock): saved, so a restart's sensor watch goes on from them
        self.past_limits: Callable[[], dict[str, dict[str, float]]] = dict
        # restored from the state file: their states say when their last window was judged (not the clock's
        # time at start), their alerts are up in the metrics before a window comes, and those states are
        # sent again naming the model served now (promoted while the daemon was down: the retained states
        # named the old one until each asset's next change; a walk)
        for asset, (saved, _, told) in self.restored.items():
            if asset in self._floors:
                self._stated[asset] = self._floors[asset]
            if saved.status == "alerting":  # (a pending one is not up, live or restored: a review)
                metrics.set_score(asset, saved.last_score, told and self._held(asset) is None)
        if self.restored:
            self.states_lost()

    def snapshot(self) -> dict[str, AlertState]:
        """Each asset's current alert state (a copy)."""
        return dict(self._states)

    def drift_snapshot(self) -> dict[str, DriftState]:
        """Each asset's drift baseline (a copy; empty when the bundle has no drift rule)."""
        return dict(self._drift)

    def drift_of(self, asset: str) -> DriftState | None:
        """One asset's drift baseline now (None when nothing was learned about it)."""
        return self._drift.get(asset)

    def channels_of(self, asset: str) -> list[dict]:
        """The top channels of the asset's last judged window, as published (the level term's
        leaders where the term decided it)."""
        return self._latest.get(asset, (0.0, []))[1]

    def state_of(self, asset: str) -> AlertState:
        """The asset's alert state now (normal for one not seen)."""
        return self._states.get(asset) or AlertState()

    def alerting(self, asset: str) -> bool:
        """Whether the asset's alert may be up at its next window: up now, live or restored (any
        asset, while states handed over are waiting to be taken in: they are at the next window)."""
        if self._adopted:
            return True
        state = self._states.get(asset) or (self.restored[asset][0] if asset in self.restored else None)
        return state is not None and state.status == "alerting"

    def apply(self, asset: str, ts: float, score: float, channels: list[dict],
              bundle: Bundle | None = None, coarse: bool = True,
              rows: np.ndarray | None = None) -> tuple[AlertState, float] | None:
        """Step one asset's level term, drift rule and alert machine with one window scored by
        ``bundle``; publish. ``rows``: the window's newest ``focus`` raw rows ``(k, C)`` for the level
        term (None: none, a channel has a sensor fault open); where the term decides the window,
        ``channels`` are the term's leaders.

        Returns the new state and the score against the asset's (widened) line; None, and nothing
        changes, for an alert-hop window (``coarse`` False) of an asset whose alert is not up, or
        scored by a bundle that judges every hop (one swapped in while the window was queued).
        """
        bundle = bundle or self.current()
        if self._adopted:
            self._take_adopted()
        rules = bundle_rules(self.rules, bundle, self.hop)
        if not coarse and (rules.alert_steps == 1 or not self.alerting(asset)):
            return None  # (alert_steps 1: queued before a swap to a bundle that judges every hop)
        old = self._states.get(asset)
        restored = old is None and asset in self.restored
        if restored:  # back after a restart: carry on where it was
            old, saved_drift, announced = self._pop_restored(asset)
            if saved_drift is not None:
                self._drift[asset] = saved_drift
            if old.status == "alerting":
                if announced:
                    self._announced[asset] = old.alert_id  # its raise went out before the restart
                else:  # at least once: its "raised" (and alerts_total, and the log line) may come twice
                    log.info("alert %s of %s was saved as not announced (held, or the broker had not confirmed "
                             "its raise): told under the same alert_id once nothing holds it", old.alert_id, asset,
                             extra={"asset": asset, "alert_id": old.alert_id})
                if self.recorder is not None:
                    self.recorder.alert_raised(asset, -np.inf, old.alert_id)  # still up: none of its readings is normal
                if not announced and self._raise_owed(asset, old, ts) and not self.publisher.full():
                    # told now, whatever this window says: its raise may have gone out before the crash, and
                    # a first window under the line cleared it unannounced, its id open for good (a walk)
                    self._tell(asset, AlertEvent("raised", ts, old.last_score, old.peak, old.alert_id), channels,
                               bundle)
        rule, level = bundle.drift_rule, bundle.level  # (the window's own model's: a swap's first windows come first)
        before = self._drift.get(asset, DriftState())
        term = None if level is None or rows is None else level.term(rows, before)
        if term is not None and term > score:  # the term decides: its channels are the ones to name
            channels = top_channels(level.contributions(rows, before), bundle.channels)
        state, drift, event, score = judge(old or AlertState(), before, score, ts, rules, rule, asset,
                                           learn=(rule is None and level is None) or self.learns(asset, ts),
                                           level=level, rows=rows, term=term)
        if event is not None and asset in self._held_back:  # its raise goes out first, saved as still up (a
            self.release_raises()  # raise and its clear in one batch; a save only then, not at every window)
        self._states[asset] = state
        if rule is not None or level is not None:
            self._drift[asset] = drift
        self._latest[asset] = (ts, channels)
        if self.restored_channels:  # (the ones before the restart, until its first window: a review)
            self.restored_channels.pop(asset, None)
        self._judged_ts[asset] = self._floors[asset] = ts
        if coarse:
            self._grid_ts[asset] = ts
        late = False
        if event is not None:
            held = self._held(asset, ts)
            # a raise is announced unless the asset is held; a clear whenever its raise was announced
            if held is None if event.kind == "raised" else self._announced.get(asset) == event.alert_id:
                self._tell(asset, event, channels, bundle)
            else:  # maintenance or shelved: judged and visible in the state and metrics, not announced
                if event.kind == "raised" and held is not None:  # an alert held back counts once (its clear
                    self.metrics.alerts_suppressed.labels(held).inc()  # counted too read twice: a walk)
                    if self.controls is not None:
                        self.controls.raised(event.alert_id, asset, announced=False)
                log.info("alert %s of %s suppressed (%s)", event.kind, asset, held or "its raise was not announced",
                         extra={"asset": asset, "event": event.kind, "alert_id": event.alert_id})
            if self.recorder is not None:
                if event.kind == "raised":
                    self.recorder.alert_raised(asset, event.ts, event.alert_id)
                elif event.kind == "cleared":  # its readings are filed by its acknowledgement
                    self.recorder.alert_cleared(asset, event.ts, event.alert_id, event.peak_score)
        elif asset not in self._held_back and self._raise_owed(asset, state, ts) and not self.publisher.full():
            self._tell(asset, AlertEvent("raised", ts, state.last_score, state.peak, state.alert_id), channels,
                       bundle)  # (told at its next window)
            self.save_soon = late = True  # (its state said suppressed until now: published again)
        # a held raise's state goes out with it, once saved (a crash before that left a retained state
        # naming an alert id no raise or clear ever told: a review); a restored one's retained state may
        # be that of the previous run's end
        if asset not in self._held_back and (late or old is None or restored or state.status != old.status):
            self.publish_state(asset, bundle=bundle)
        self.metrics.set_score(asset, score, self._paging(asset, state, ts))
        return state, score

    def _paging(self, asset: str, state: AlertState, ts: float) -> bool:
        """Whether the asset's alert is up for operators (``anomaly_active``): raised, its raise
        announced, and no shelving or maintenance holding it. A held alert set it too, so the shipped
        Prometheus rule paged for a shelved asset, the runbook's cure for nuisance alerts (a walk)."""
        return (state.status == "alerting" and self._announced.get(asset) == state.alert_id
                and self._held(asset, ts) is None)

    def _raise_owed(self, asset: str, state: AlertState, ts: float) -> bool:
        """Whether an alert up whose raise was not announced (a hold kept it back, or the full outgoing
        queue dropped it) is told now: nothing holds it at reading time ``ts`` (a hold that ended still
        holds an alert that rose in it), and it was not acknowledged meanwhile (it paged for an alarm
        already answered, as a false one too: a review)."""
        if state.status != "alerting" or self._announced.get(asset) == state.alert_id or self._held(asset, ts):
            return False
        known = self.controls.acked(state.alert_id) if self.controls is not None and state.alert_id else None
        return known is None or not known["acked"]

    def _model(self) -> tuple[str, str]:
        b = self.current()
        return b.name, b.version

    def learns(self, asset: str, ts: float) -> bool:
        """Whether a window ending at reading time ``ts`` may teach the drift baseline: not in a
        maintenance, nor in the guard band after one (the start-up transient), as the recorder keeps
        those readings out of normal data. A maintenance's odd readings under the line widened it,
        up to its cap, past a fault right after the work (found by review). Offline ``score`` knows
        no maintenance: its baseline learns from those windows."""
        if self.controls is None:
            return True
        guard = self.recorder.guard_s if self.recorder is not None else 0.0
        return not self.controls.in_maintenance(asset, time.time(), ts, after=guard)

    def _held(self, asset: str, ts: float | None = None) -> str | None:
        """What holds ``asset`` now, or held it at reading time ``ts``."""
        return self.controls.suppressed(asset, time.time(), ts) if self.controls is not None else None

    def publish_states(self) -> list:
        """Publish every asset's current state (retained), as at shutdown; the publish handles."""
        return [info for asset in list(self._states) if (info := self.publish_state(asset)) is not None]

    def publish_state(self, asset: str, ts: float | None = None, bundle: Bundle | None = None,
                      state: AlertState | None = None):
        """The asset's current state (unless given), retained. ``ts`` is that of its latest scored
        window unless given (silent: its last reading's), and never before the reading time of a state
        published before it: a sensor fault's state goes out before the batch that holds its reading's
        windows is scored, and the first windows' states said earlier times (found in a walk)."""
        b = bundle or self.current()
        last_ts, channels = self._latest.get(asset, (None, self.restored_channels.get(asset, [])))
        ts = last_ts if ts is None else ts
        if ts is not None:  # a reading time
            ts = self._stated[asset] = max(ts, self._stated.get(asset, ts))
        else:  # no window yet (a restored asset): the last reading time said, else the clock's
            ts = self._stated.get(asset, time.time())
        restored = self.restored[asset][0] if asset in self.restored else None
        # (a bare one, no window of it judged before the restart either, said a score of 0.0, made up: walks)
        state = state or self._states.get(asset) or (restored if restored not in (None, AlertState()) else UNJUDGED)
        extra = {}
        if self.controls is not None:
            ack = self.controls.acked(state.alert_id) if state.alert_id else None
            held = self._held(asset, last_ts) if state.alert_id and self._announced.get(asset) != state.alert_id \
                else None  # a raise still held (it rose in a hold that ended): told at its next window, so
            # its state said alerting, not suppressed, before the raise went out (a walk)
            extra = {"suppressed": self.controls.suppressed(asset, time.time()) or held,
                     "acked": None if ack is None else ack["acked"]}
        info = self.publisher.state(asset, state, ts, channels, (b.name, b.version),
                                    self.line(asset, b), self.sensor_faults(asset), extra)
        self._outbox.state_sent(asset, info)  # dropped: sent again once there is room (resend_states)
        return info

    def states_lost(self) -> None:
        """The broker came back without our session (restarted without persistence): the retained
        states it held may be gone with it, and an asset's is published only when its status
        changes, days later perhaps. Or a swap changed the model and line they name. Every asset's
        is sent again, paced by :meth:`resend_states`:
        live, silent (``stale``) and restored with an alert up or a window judged before the restart
        (``_floors``: a swap left its state naming the old model and line until it sent again, a walk)
        or back from a silence at the save; not a bare one restored as normal, which a file from before
        silences were kept may hold for a silent one (its state is published at its first window)."""
        restored = [asset for asset, (state, _, _) in list(self.restored.items())
                    if state.status != "normal" or asset in self._floors or self._open.returned_at(asset) is not None]
        self._outbox.states_lost([*self._states, *self._open.silent_assets(), *restored])

    def resend_states(self) -> None:
        """On the worker, each tick: publish again the retained states the full outgoing queue
        dropped (an asset that went normal, or silent, kept saying alerting until its next change),
        while there is room."""
        self._outbox.resend_states(self._republish)

    def _republish(self, asset: str) -> None:
        """The asset's retained state again, as it is now: live, restored, or silent (stale)."""
        if asset in self._states or (asset in self.restored and self.serves(asset)):
            self.publish_state(asset)
        elif (silent := self._open.silent(asset)) is not None:
            self.publish_state(asset, silent[0], state=AlertState("stale", last_score=silent[1]))
            self._stated.pop(asset, None)  # (forgotten as the rest of it was when it went silent)

    def resend_clears(self, only: str | None = None) -> None:
        """On the worker, each tick: send again, in order, the clears (and ``silent`` events ending an
        alert) the full outgoing queue dropped (:class:`~sensorguard.service.outbox.Outbox`)."""
        self._outbox.resend_closes(self._resend_close, only)

    def _resend_close(self, asset: str, event: AlertEvent | SensorEvent, extra: list[dict] | str):
        if isinstance(event, SensorEvent):
            return self.publisher.sensor(asset, event, self._model(), extra)
        return self._publish_event(asset, event, extra)

    def _announce(self, asset: str, event: AlertEvent, channels: list[dict], bundle: Bundle) -> None:
        """Publish a raise or a clear; a raise is counted and can be acknowledged from now on.

        When the full outgoing queue drops one: a raise is not announced (told at a later window
        once there is room, if still up; a clear before that is then not told either); a clear is
        kept and sent again (:meth:`resend_clears`), since its raise went out: a pager would hold
        the alert open for good."""
        if self._outbox.holds_close(asset):  # an earlier alert's clear first
            self.resend_clears(asset)
        info = None if self._outbox.holds_close(asset) and event.kind == "cleared" else self._publish_event(
            asset, event, channels, bundle)  # (a clear waits behind the asset's earlier ones)
        if self.publisher.client is not None and self.publisher.dropped(info):
            if event.kind == "raised":
                return
            self._outbox.keep_close(asset, event, channels)
        if event.kind == "raised":
            self._announced[asset] = event.alert_id
            self._raise_info[asset] = info
            self.metrics.alert_raised(asset)
            if self.controls is not None:
                self.controls.raised(event.alert_id, asset)
        else:
            self._announced.pop(asset, None)
            self._raise_info.pop(asset, None)
        # saved at the next tick, not within SAVE_INTERVAL_S: a crash before that restarted from the
        # older state and raised the same fault again under a new id, the announced one never cleared
        self.save_soon = True

    def line(self, asset: str, bundle: Bundle) -> float:
        """The asset's alert line: the bundle's threshold, widened by the drift rule (a restored
        asset's saved baseline until its first window takes it in)."""
        restored = self.restored.get(asset)  # .get, not an index: the scoring thread may pop it meanwhile
        drift = self._drift.get(asset) or (restored[1] if restored is not None else None)
        return bundle.threshold_ * widening(drift or DriftState(), bundle.drift_rule)

    def _publish_event(self, asset: str, event: AlertEvent, channels: list[dict], bundle: Bundle | None = None):
        b = bundle or self.current()
        return self.publisher.alert(asset, event, channels, (b.name, b.version), self.line(asset, b))
