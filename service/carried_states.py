"""Asset state that crosses a restart or a worker: restored, adopted, handed over, passed on.

:class:`CarriedStates` is the part of :class:`~sensorguard.service.assets.AssetAlerts` that deals
with an asset's alert state and drift baseline while it is carried from elsewhere (the previous
run's ``state_dir``, or another worker in cluster mode: both wait in ``restored`` for the asset's
next window, and are ended as silent by :meth:`CarriedStates.expire_restored` when none comes) or
handed on (to the state bucket at every change, or to the worker an asset moves to). Whether an
alert's raise was told travels with it, so that a new owner tells it once: never twice, and not
never. The same holds across a restart: ``state_dir`` is written (:meth:`CarriedStates.save`)
before a scored batch's raises go out (:meth:`CarriedStates.release_raises`). It is a mixin, not a
class of its own, because these steps read and forget the same per-asset maps as the alert
machine; ``AssetAlerts.__init__`` sets everything listed below.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sensorguard.service.alerts import AlertEvent, AlertRules, AlertState
from sensorguard.service.bundle import Bundle
from sensorguard.service.commands import AlarmControls
from sensorguard.service.drift import DriftState
from sensorguard.service.logs import counted, some
from sensorguard.service.metrics import Metrics
from sensorguard.service.open_faults import OpenFaults
from sensorguard.service.outbox import published
from sensorguard.service.recorder import Recorder
from sensorguard.service.state import STATE_FILE, save_states
from sensorguard.service.state_writes import REPEAT_S, StateWrites

log = logging.getLogger("sensorguard.service.assets")  # (its lines came from there before the split)

Restored = dict[str, tuple[AlertState, DriftState | None, bool]]  # alert, drift, its raise went out
# ... its last hop-grid window's time (the new owner's cadence), its raise went out, the time of the
# last window it judged when that came after (an alert-hop window the state already holds), and the
# top channels of its last window (its retained state lists them until the new owner's first window),
# and, for a silent one, its silence (the reading time it went silent after, its last score)
Silence = tuple[float, float] | None
Moved = tuple[AlertState, DriftState | None, float | None, bool, float | None, list[dict], Silence]
# asset, alert, drift, announced, window_ts, judged_ts, channels, silence
Adopted = tuple[str, AlertState, DriftState | None, bool, float | None, float | None, list[dict], Silence]


class CarriedStates:
    """Restored and adopted states taken in, and an asset's state handed over or passed on (a mixin
    of :class:`~sensorguard.service.assets.AssetAlerts`, which owns the attributes declared here)."""

    rules: AlertRules
    metrics: Metrics
    recorder: Recorder | None
    restored: Restored
    restore_until: float
    on_handed_over: Callable[[str], None]
    _states: dict[str, AlertState]
    _drift: dict[str, DriftState]
    _latest: dict[str, tuple[float, list[dict]]]
    restored_channels: dict[str, list[dict]]
    _grid_ts: dict[str, float]
    _judged_ts: dict[str, float]
    _stated: dict[str, float]
    _floors: dict[str, float]
    _open: OpenFaults
    _announced: dict[str, str]
    _raise_info: dict[str, Any]
    _adopted: deque[Adopted]
    _synced: dict[str, tuple]  # asset -> (status, alert id, told, guard band) last passed on
    _syncing: bool
    state_dir: str | None
    controls: AlarmControls | None
    writes: StateWrites
    save_soon: bool
    past_limits: Callable[[], dict[str, dict[str, float]]]
    hold_raises: bool
    _held_back: dict[str, tuple[AlertEvent, list[dict], Bundle]]
    _unconfirmed: set[str]
    _go_silent: Callable[..., None]  # (methods of AssetFaults)
    _await_return: Callable[[str, float, float], None]
    _announce: Callable[[str, AlertEvent, list[dict], Bundle], None]  # (methods of AssetAlerts)
    publish_state: Callable[..., Any]
    _paging: Callable[[str, AlertState, float], bool]

    def adopt(self, asset: str, alert: AlertState, drift: DriftState | None, announced: bool = True,
              window_ts: float | None = None, judged_ts: float | None = None, channels: list[dict] | None = None,
              silence: Silence = None) -> None:
        """``asset`` moved here from another worker with this state (any thread). Taken in like a state
        restored at start: at its next window it carries on (an alert up stays up under its id,
        without a second ``raised`` unless it was never announced; the recorder holds its readings
        back). ``window_ts``, ``judged_ts``: its previous owner's cadence, passed on as this owner's
        until it judges a window of its own on the hop grid (a state passed on before that lost
        them: a later owner started without an anchor; found by review). ``channels``: the top
        channels of its last window there, listed by its state until its first window here (as a
        restart's: cluster mode listed none). ``silence``: the asset was silent there (the reading
        time it went silent after, its last score): its return is awaited here, so its first reading
        tells ``sensor_ok`` (a walk: the silence opened on its old owner was never closed)."""
        self._adopted.append((asset, alert, drift, announced, window_ts, judged_ts, channels or [], silence))

    def _ended_unseen(self, asset: str) -> None:
        """Cluster mode: a restored or adopted asset's state ended before its first window here;
        the next :meth:`changed_states` passes it on as None, or as a normal state with its drift
        baseline, so the bucket forgets its alert (a later owner must not adopt the alert that
        silence ended). Outside cluster mode nothing is synced."""
        if self._syncing:
            self._synced[asset] = ("ended", "", True)

    def expire_restored(self, now: float, heard: Callable[[str], bool] = lambda asset: False,
                        serves: Callable[[str], bool] = lambda asset: True) -> None:
        """After ``restore_until`` (monotonic), end restored assets that never came back.

        heard: whether readings came from an asset since the start (the ingest holds its buffer). Those
        stay restored until their first window, however long a window takes to fill (a window of
        600 samples at 1 s outlasts the default ``stale_after``), or until they go silent
        (:meth:`end`). Adoptions still queued are taken first: one whose whole partition sent nothing
        after a takeover waited there for a window of any asset, and its alert stayed up for good."""
        if self._adopted:
            self._take_adopted()
        if not self.restored or now < self.restore_until:
            return
        gone = [asset for asset in self.restored if not heard(asset)]
        foreign = {asset for asset in gone if not serves(asset)}
        for asset in foreign:  # another instance's now (a restart with fewer partitions, cluster mode's local
            self._pop_restored(asset)  # file): its owner speaks for it; told silent here, its retained state
            self._open.forget(asset)  # went stale over the owner's (a review)
            self.metrics.forget_asset(asset)
            for kept in (self._grid_ts, self._judged_ts, self._floors, self._drift, self.restored_channels,
                         self._stated):
                kept.pop(asset, None)
        gone = [asset for asset in gone if asset not in foreign]
        if gone:
            log.info("%s restored from the state file or adopted sent nothing for %.0f s: silent (%s)",
                     counted(len(gone), "asset"), self.rules.stale_after, some(gone))  # (named: a walk)
        for asset in gone:
            # judged a window before the restart or the hand-over (a bare state is one silent then, kept
            # for its baseline alone): it went silent meanwhile, and its retained state said normal for
            # good, its silence never told (a walk: a power cut took a gateway and the daemon's host)
            # (or back from a silence at the save, its retained state said so: it is told silent again)
            returned = self._open.returned_at(asset)
            live = asset in self._floors or asset in self._judged_ts or returned is not None
            last = self._floors.get(asset, self._judged_ts.get(asset, time.time() if returned is None else returned))
            saved, drift, announced = self._pop_restored(asset)
            self._open.clear_channels(asset)  # (faults restored with it: its silence replaces them)
            self.metrics.forget_asset(asset)  # (its alert restored up in the metrics ended: a review)
            self._grid_ts.pop(asset, None)  # (an adopted one's cadence: it never came here)
            self._judged_ts.pop(asset, None)
            self._ended_unseen(asset)
            if drift is not None:  # kept for its return, as a live asset's gone silent (and the line
                self._drift[asset] = drift  # its stale state is published with): a restart must not reset it
            # last: the end of its last judged window, saved: the clock's time at expiry was said as its
            # last reading's ("no reading after" 4 min before its last one; a walk)
            if saved.status != "normal" or live:  # its retained state says so: end it as a live asset's would
                self._go_silent(asset, saved, last, announced)
            elif self._learned(asset) is not None:  # awaited as a silent one, so the cap bounds what is kept
                self._await_return(asset, last, saved.last_score)
            else:
                self._drift.pop(asset, None)
            self.restored_channels.pop(asset, None)  # (after its stale state named them; a leak: a review)

    def _pop_restored(self, asset: str) -> tuple[AlertState, DriftState | None, bool]:
        """A restored asset's state, drift, and False only when its alert is up and was never
        announced (as :meth:`_told` for a live asset).

        The state file (and cluster mode's state bucket) marks an alert that rose while its asset
        was held and was never announced: it is announced once nothing holds it. Without the mark
        (a file from before it) an alert up counts as announced.
        """
        state, drift, told = self.restored.pop(asset)
        return state, drift, told or state.status != "alerting"

    def _told(self, asset: str, confirmed: bool = False) -> bool:
        """False only for a live asset whose alert is up and was never announced (it rose while held),
        or, with ``confirmed`` (the state file), whose raise the broker has not confirmed yet: one
        queued during a broker outage is lost with the process, so a restart tells it again rather
        than never. (Cluster mode passes the state on at every change, before the broker's answer
        comes: counted told there, or every takeover right after a raise told it twice.)"""
        state = self._states[asset]
        if state.status != "alerting":
            return True
        told = self._announced.get(asset) == state.alert_id
        return told and (not confirmed or published(self._raise_info.get(asset)))

    def _learned(self, asset: str) -> DriftState | None:
        """The asset's drift baseline, None when it has none or it learned nothing (the same as none)."""
        drift = self._drift.get(asset)
        return None if drift is None or drift == DriftState() else drift

    def _take_adopted(self) -> None:
        while self._adopted:
            asset, alert, drift, announced, window_ts, judged_ts, channels, silence = self._adopted.popleft()
            if silence is not None and asset not in self._states:  # awaited as the old owner did
                self.restored.pop(asset, None)
                if drift is not None:
                    self._drift[asset] = drift
                self._await_return(asset, *silence)
            elif asset not in self._states:
                self.restored[asset] = (alert, drift, announced)
                if channels:
                    self.restored_channels[asset] = channels
                else:  # (not an earlier adoption's)
                    self.restored_channels.pop(asset, None)
                if window_ts is not None:
                    self._grid_ts[asset] = window_ts
                    self._judged_ts[asset] = window_ts if judged_ts is None else max(window_ts, judged_ts)
                    # a state restated before its first window here says when its last one was judged, as a
                    # restart's (the clock's time, then its first window's earlier one: the ts stepped back)
                    self._stated[asset] = self._judged_ts[asset]
                else:  # no cadence to pass on: not an earlier adoption's
                    self._grid_ts.pop(asset, None)
                    self._judged_ts.pop(asset, None)
                    self._stated.pop(asset, None)
        self.restore_until = max(self.restore_until, time.monotonic() + self.rules.stale_after)

    def hand_over(self, assets: set[str]) -> dict[str, Moved]:
        """These assets moved to another worker (scoring thread): their states, last hop-grid
        window's time, whether an alert up was announced and the last judged window's time when
        later (:data:`Moved`), to pass on, and everything about them forgotten here without a word
        (their new owner speaks for them)."""
        self._take_adopted()
        out: dict[str, Moved] = {}
        for asset in assets:
            silence = self._open.silent(asset)
            if asset in self._states:
                told = self._told(asset)
                out[asset] = (self._states.pop(asset), self._drift.pop(asset, None), *self._cadence(asset, told),
                              self._channels(asset), None)
            elif asset in self.restored:
                state, drift, told = self._pop_restored(asset)
                out[asset] = (state, drift, *self._cadence(asset, told), self._channels(asset), None)
            elif asset in self._synced or self._learned(asset) is not None or silence is not None:  # silent: a
                # normal state replaces the bucket's (an alert the silence ended, not yet passed on, was
                # adopted by the new owner: found by review), its baseline and its silence with it
                out[asset] = (AlertState(), self._learned(asset), None, True, None, [], silence)
            self.restored_channels.pop(asset, None)
            for kept in (self._latest, self._grid_ts, self._judged_ts, self._floors, self._announced, self._raise_info,
                         self._synced, self._drift, self._stated):
                kept.pop(asset, None)
            self._open.forget(asset)
            self.on_handed_over(asset)
            self.metrics.forget_asset(asset)
            if self.recorder is not None:
                self.recorder.forget(asset)
        return out

    def changed_states(self, full: bool = False, marks: dict[str, tuple] | None = None) -> dict[str, Moved | None]:
        """The assets whose alert status or id, or its announcement, or their mark in ``marks``
        (where their walked channels stand: ``walked_channels.walk_marks``) changed since the last
        call (every asset with ``full``), as :meth:`hand_over` gives them (scoring thread): what a
        new owner must find to carry on; for an asset whose state ended (it went silent) None, or a
        normal state with its drift baseline, which a restart or a new owner keeps for its return."""
        self._syncing = True
        out: dict[str, Moved | None] = {}
        bands = {} if self.recorder is None else self.recorder.bands()
        for asset, state in self._states.items():
            told = self._told(asset)
            # (the recorder's guard band too: a maintenance's end sets one and changes no status, and a
            # crash before the full sync, 30 s, let its new owner record the band as normal: a review)
            key = (state.status, state.alert_id, told, bands.get(asset), marks.get(asset) if marks else None)
            if full or self._synced.get(asset) != key:
                self._synced[asset] = key
                out[asset] = (state, self._drift.get(asset), *self._cadence(asset, told), self._channels(asset),
                              None)
        for asset in [a for a in self._synced if a not in self._states and a not in self.restored]:
            del self._synced[asset]  # its state ended here (silent): the bucket forgets its alert too, and
            drift, silence = self._learned(asset), self._open.silent(asset)  # keeps the drift baseline and
            # the silence awaiting its return (a new owner tells sensor_ok at its first reading)
            out[asset] = None if drift is None and silence is None else (AlertState(), drift, None, True, None, [],
                                                                         silence)
        return out

    def _channels(self, asset: str) -> list[dict]:
        """The top channels of the asset's last window (a restored or adopted one's until then)."""
        latest = self._latest.get(asset)
        return latest[1] if latest is not None else self.restored_channels.get(asset, [])

    def _cadence(self, asset: str, told: bool) -> tuple[float | None, bool, float | None]:
        """The last hop-grid window's time, ``told``, and the last judged window's time when it came
        after the grid's: a new owner anchors its cadence on the first and judges only the windows
        after the second (the state holds the alert-hop windows between them: judged again there,
        an alert's count under the line ran one window ahead of the offline verdict)."""
        grid_ts, judged_ts = self._grid_ts.get(asset), self._judged_ts.get(asset)
        return grid_ts, told, (judged_ts if grid_ts is not None and judged_ts is not None and judged_ts > grid_ts
                               else None)

    def save(self) -> bool:
        """Write every asset's alert state and drift baseline (live and still-restored) to ``state_dir``,
        and the alarm controls; whether both files hold them now (no ``state_dir``: True). A failure
        is counted and logged; the next save tries again."""
        self.save_soon = False
        if not self.state_dir:
            return True
        alerts = {asset: state for asset, (state, _, _) in self.restored.items()}
        drift = {asset: d for asset, (_, d, _) in self.restored.items() if d is not None}
        alerts.update(self._states)
        drift.update(self._drift)
        unannounced = {asset for asset, (_, _, told) in self.restored.items() if not told and asset not in self._states}
        unannounced |= {asset for asset in self._states if not self._told(asset, confirmed=True)}
        self._unconfirmed = {asset for asset in unannounced if asset in self._states and self._told(asset)}
        saved = self.controls is None or self.controls.save()  # with the alerts that can be acknowledged
        self._floors = judged = {asset: ts for asset, ts in self._floors.items() if asset in alerts}
        try:
            save_states(self.state_dir, alerts, drift, unannounced, judged, self._open.saved(), {
                a: c for a, c in (*self.restored_channels.items(), *((a, c) for a, (_, c) in self._latest.items()))
                if c and a in alerts},  # (a normal asset's too: its restated state said its score, no channels: a walk)
                self._open.silences(), self._open.returns(lambda asset: asset in self._judged_ts),
                {a: p for a, p in self.past_limits().items() if a in alerts})
        except OSError as exc:  # a full disk must not stop scoring; the next save tries again
            log.log(logging.WARNING if self.writes.failed(STATE_FILE, exc) else logging.DEBUG,
                    "saving asset state to %s failed: %s (the next save tries again; said again in %.0f min "
                    "if it still fails, each failure counted)", self.state_dir, exc, REPEAT_S / 60)
            return False
        self.writes.worked(STATE_FILE)
        return saved

    def confirmed_since_save(self) -> bool:
        """Whether the broker has confirmed a raise that the last save marked unannounced (scoring
        thread, each tick): the file must say so soon, or for up to ``SAVE_INTERVAL_S`` a ``kill -9``
        made the restart raise it again (a walk); now only until the next tick (about a second)."""
        return any(asset in self._states and self._told(asset, confirmed=True) for asset in self._unconfirmed)

    def _tell(self, asset: str, event: AlertEvent, channels: list[dict], bundle: Bundle) -> None:
        """:meth:`_announce`, a raise held back while a batch is scored and a state file is kept (not in
        cluster mode: the state bucket, written after the batch, is what a new owner reads)."""
        if event.kind == "raised" and self.hold_raises and self.state_dir and not self._syncing:
            self._held_back[asset] = (event, channels, bundle)
        else:
            self._announce(asset, event, channels, bundle)

    def release_raises(self) -> None:
        """Save, then announce the raises held back (:attr:`hold_raises`) and publish their states, so
        the state file holds each alert up, marked unannounced, before anything names it. A ``kill -9``
        in the second between a raise and the next tick's save made the restart raise the fault again
        under a new id, the first never cleared (a walk). Now a crash before the save loses a raise
        nobody saw, and one after it tells it again under its id (at least once, as documented). The
        next save comes once the broker confirms them (``_unconfirmed``), as for any raise."""
        if not self._held_back:
            return
        waiting, self._held_back = self._held_back, {}
        self._save_before_raises(len(waiting))
        soon = self.save_soon
        for asset, (event, channels, bundle) in waiting.items():
            try:
                self._announce(asset, event, channels, bundle)
                if (state := self._states.get(asset)) is not None:
                    self.publish_state(asset, bundle=bundle)
                    self.metrics.set_score(asset, state.last_score, self._paging(asset, state, event.ts))
                self._unconfirmed.add(asset)
            except Exception:  # noqa: BLE001 - one failure must not cost the other raises
                log.exception("announcing the raise of %s failed", asset)
        self.save_soon = soon  # (_announce asks for one: the confirmation does, above)

    def _save_before_raises(self, count: int) -> None:
        """:meth:`save`, before ``count`` raises go out; a failure is logged, and they go out all the
        same (a failed write is counted and logged in it; any other error held them back for good,
        every later window of theirs failing: a review)."""
        try:
            self.save()
        except Exception:  # noqa: BLE001 - see above
            log.exception("saving the asset state before %d raise(s) failed: announcing them all the same", count)
