"""Each asset's sensor faults and its silence, as the alert application counts and publishes them.

:class:`AssetFaults` is the part of :class:`~sensorguard.service.assets.AssetAlerts` that tells a
sensor fault opened or closed (counted, published with the asset's state) and ends an asset that
went silent. The open faults and the silent assets themselves are kept by
:class:`~sensorguard.service.open_faults.OpenFaults`, under their own lock. It is a mixin, not a
class of its own, because silence ends the same per-asset maps the alert machine steps;
``AssetAlerts.__init__`` sets everything listed below.

An asset that goes silent (``stale_after_s`` without a reading while connected) gets a ``silent``
sensor fault (channel null): its alert, if one is up, ends with it (the event carries its
``alert_id``), its retained state says ``stale``, and everything else about it is forgotten. Its
first reading back closes the fault (``sensor_ok``). The silent assets remembered for that are
capped (``SILENT_KEPT``, oldest forgotten first and counted as dropped sensor events) and saved
in ``state_dir`` with their drift baselines, so a restart awaits them as the run before did and a
returning asset's first reading sends ``sensor_ok`` (:meth:`AssetFaults.restore_silences`; it sent
none after a restart before, a walk). They are counted in ``assets_silent``, apart from the
channel faults of ``sensor_faults_open``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from sensorguard.service.alerts import UNJUDGED, AlertState, mark_stale
from sensorguard.service.carried_states import Adopted, Restored
from sensorguard.service.commands import AlarmControls
from sensorguard.service.drift import DriftState
from sensorguard.service.metrics import Metrics
from sensorguard.service.open_faults import OpenFaults
from sensorguard.service.outbox import Outbox
from sensorguard.service.publisher import Publisher
from sensorguard.service.recorder import Recorder
from sensorguard.service.sensors import SensorEvent

SILENT_KEPT = 10_000  # silent assets whose return is awaited (a sensor_ok); beyond, the oldest is forgotten
NAN = float("nan")


class AssetFaults:
    """Sensor faults told and silent assets ended (a mixin of
    :class:`~sensorguard.service.assets.AssetAlerts`, which owns the attributes declared here)."""

    publisher: Publisher
    metrics: Metrics
    recorder: Recorder | None
    controls: AlarmControls | None
    restored: Restored
    _states: dict[str, AlertState]
    _drift: dict[str, DriftState]
    _latest: dict[str, tuple[float, list[dict]]]
    restored_channels: dict[str, list[dict]]
    _grid_ts: dict[str, float]
    _judged_ts: dict[str, float]
    _floors: dict[str, float]
    _stated: dict[str, float]
    _open: OpenFaults
    save_soon: bool
    _announced: dict[str, str]
    _raise_info: dict[str, Any]
    _outbox: Outbox
    _adopted: deque[Adopted]
    _model: Callable[[], tuple[str, str]]  # (methods of AssetAlerts and CarriedStates)
    publish_state: Callable[..., Any]
    _take_adopted: Callable[[], None]
    _pop_restored: Callable[[str], tuple[AlertState, DriftState | None, bool]]
    _ended_unseen: Callable[[str], None]

    def sensor(self, asset: str, event: SensorEvent) -> None:
        """A sensor fault opened or closed (worker thread, before its reading's windows): count it,
        publish it and the asset's state."""
        if event.kind == "silent":  # an asset's first reading (after silence, or ever)
            if self._adopted:  # (an adoption still queued may be its silence: heard first, it stayed silent)
                self._take_adopted()
            if self._open.back(asset, event.ts):
                self._ended_unseen(asset)  # cluster mode: the bucket's copy of its silence goes at the next sync
                self.publisher.sensor(asset, event, self._model())
                self.publish_state(asset, event.ts)
            return
        self._open.change(asset, event.kind, event.channel, event.ts, event.fault, event.value)
        # saved within a second, as a raise is: killed in the 30 s before the next save, a restart
        # announced a fault that was open already (its opening told twice)
        self.save_soon = True
        if event.fault:
            self.metrics.sensor_faults.labels(event.kind).inc()
        self.publisher.sensor(asset, event, self._model())
        # the latest scored window's time, as every state (a later one went backwards when the batch
        # scored after it); before any window the reading's, not the clock's (found in a walk)
        self.publish_state(asset, self._latest[asset][0] if asset in self._latest else event.ts)

    def open_faults(self, assets: Iterable[str]) -> dict[str, list[dict]]:
        """The open channel faults of ``assets`` (any thread), as ``state_dir`` keeps them: cluster mode
        passes them on with each asset's state, for its next owner (:func:`state_entry.faults_in`)."""
        return self._open.saved(assets)

    def restore_faults(self, faults: dict[str, list[dict]]) -> None:
        """The sensor faults open when the previous run saved (``state.saved_faults``): listed in the
        restored assets' states and counted from the start; each asset's sensor watch resumes them
        (``Buffers.resumed_faults``), so a fault still there is not announced again and one that
        ended is told ended."""
        self._open.restore(faults)

    def restore_silences(self, silent: dict[str, tuple[float, float, DriftState | None]]) -> None:
        """The assets silent when the previous run saved (the reading time each went silent after, its
        last score, its drift baseline; oldest silence first, the order the cap forgets them in):
        awaited again from the start, not restored states, so the first reading back tells
        ``sensor_ok``, a command's retained state says ``stale``, and ``assets_silent`` counts them.
        A restart forgot them: the asset came back ``normal`` with no ``sensor_ok``, a shelve
        published it ``normal`` at the clock's time (a walk). Their stale states are sent again,
        naming the model served, as the restored ones' are."""
        for asset, (since, last_score, drift) in silent.items():
            if drift is not None:
                self._drift[asset] = drift
            self._await_return(asset, since, last_score)
        if silent:
            self.states_lost()

    def restore_returns(self, returned: dict[str, float]) -> None:
        """The restored assets back from a silence with no window judged before the save (the reading
        time each came back): their retained state said so, so a restart they stay quiet through tells
        them silent again, as one a window of which was judged (a walk: told nothing, their state said
        ``normal`` for good, while ``assets_silent`` counted them)."""
        self._open.restore_returns(returned)
        for asset, ts in returned.items():  # (restated naming the model served, at the time they came back)
            self._stated.setdefault(asset, ts)
        if returned:
            self.states_lost()

    def sensor_faults(self, asset: str) -> list[dict]:
        """The asset's open sensor faults, ``[{"kind", "channel", "since"}]``, oldest first."""
        return self._open.listed(asset)

    def count_held_faults(self) -> None:
        """``sensor_faults_held``: the open channel faults of assets a maintenance or shelving holds now,
        which the shipped rule leaves out (it paged half an hour into a maintenance whose technician
        had unplugged a sensor, the runbook's cure for paging about a machine under work)."""
        if self.controls is not None:
            now = time.time()
            self.metrics.sensor_faults_held.set(
                self._open.counted_on(lambda asset: self.controls.suppressed(asset, now) is not None))

    def end(self, asset: str, last_ts: float | None, refused: str | None = None) -> None:
        """An asset that went silent after a reading at ``last_ts``: a ``silent`` sensor fault at
        that reading time (like every other event), its alert state ends, everything else about it
        is forgotten but its drift baseline, kept while its return is awaited (``SILENT_KEPT``): an
        asset back at the level it had drifted to was raised against the bare line, and the rule,
        frozen while an alert is up, could never widen it again (found by review). ``refused``: why
        its readings since were refused, when it did send (the event's ``refused``)."""
        if self._adopted:  # an adoption still queued is this asset's state too
            self._take_adopted()
        seen, _ = self._latest.get(asset, (None, []))
        ts = last_ts if last_ts is not None else (seen if seen is not None else time.time())
        self._open.clear_channels(asset)  # its channel faults end with it: the silent fault replaces them
        if asset not in self._states and asset in self.restored:  # back after a restart, silent before a window
            state, drift, announced = self._pop_restored(asset)
            if drift is not None:  # the line its stale state is published with
                self._drift[asset] = drift
            self._announced.pop(asset, None)
            self._ended_unseen(asset)
        else:
            state = self._states.get(asset, AlertState())
            announced = self._announced.pop(asset, None) == state.alert_id
        if state == AlertState():  # no window of it judged (here, or before a restart): its stale state said
            state = UNJUDGED  # "score": 0.0, a window judged perfectly normal (a walk)
        self._raise_info.pop(asset, None)
        self._go_silent(asset, state, ts, announced, refused)
        self._latest.pop(asset, None)
        self._grid_ts.pop(asset, None)
        self._judged_ts.pop(asset, None)
        # (only a save to state_dir pruned it, to the assets it holds: without one every asset ever judged
        # stayed here for the daemon's life)
        self._floors.pop(asset, None)
        self.metrics.forget_asset(asset)
        if self.recorder is not None:
            if state.status == "alerting" and state.alert_id:  # its readings are filed as a cleared one's are: a
                self.recorder.alert_cleared(asset, ts, state.alert_id, state.peak)  # false-alarm ack learns them
            self.recorder.forget(asset, after=ts)

    def _go_silent(self, asset: str, state: AlertState, ts: float, announced: bool, refused: str | None = None) -> None:
        """``asset`` went silent after a reading at ``ts``: open its ``silent`` fault (the event names
        the alert it ends, if one was up), publish the retained ``stale`` state, forget the state."""
        self._await_return(asset, ts, state.last_score)
        self.save_soon = True  # (killed before the next save, a restart told the silence again: a review)
        if self.controls is None or not self.controls.in_maintenance(asset, time.time(), ts):  # a machine switched
            self.metrics.sensor_faults.labels("silent").inc()  # off for its maintenance is told, not counted: the
            # SensorguardAssetsSilent rule paged for it (a review)
        ended = state.alert_id if state.status == "alerting" and announced else None
        silent = SensorEvent("silent", None, True, ts, NAN)
        info = self.publisher.sensor(asset, silent, self._model(), ended, refused)
        if ended is not None and self.publisher.client is not None and self.publisher.dropped(info):
            self._outbox.keep_close(asset, silent, ended)  # the alert's only close: sent again, as a clear is
        self._states[asset] = mark_stale(state)
        self.publish_state(asset, ts)
        self._states.pop(asset, None)
        self._stated.pop(asset, None)  # (here: a restored asset that never came back ends here too; a review)
        self.restored_channels.pop(asset, None)  # (said by its stale state; back, it named them again: a review)

    def _await_return(self, asset: str, ts: float, last_score: float) -> None:
        """``asset`` is silent since ``ts``: its return is awaited (and told), its baseline kept, both
        for up to ``SILENT_KEPT`` silent assets; beyond, the oldest is forgotten, and so is its
        baseline, here, in the state file and in the cluster's state bucket."""
        for forgotten in self._open.went_silent(asset, ts, last_score, SILENT_KEPT):
            self._drift.pop(forgotten, None)  # its return will not be told, its baseline not kept
            self._ended_unseen(forgotten)  # (cluster mode: the bucket forgets its baseline too)
            self.metrics.sensor_events_dropped.inc()
