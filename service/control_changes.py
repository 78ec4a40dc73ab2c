"""Commands that change how an asset is handled (maintenance, shelving, an acknowledgement), applied
to its alert and retained state on the scoring worker.

:class:`ControlChanges` is the part of :class:`~sensorguard.service.assets.AssetAlerts` that takes
the changes a command asks for from any thread (a bounded queue, its drops counted) and applies
them where the alert machine runs: an alert that rose while held is announced once nothing holds
it, a maintenance's start and end move the recorder's guard band, and the asset's retained state
is published again so subscribers see the hold at once. It is a mixin, not a class of its own,
because it steps the same per-asset maps as the alert machine; ``AssetAlerts.__init__`` sets
everything listed below.
"""

from __future__ import annotations

import time
from collections import deque

from sensorguard.service.alerts import AlertEvent, AlertState
from sensorguard.service.carried_states import Adopted, Restored
from sensorguard.service.metrics import Metrics
from sensorguard.service.recorder import Recorder


class ControlChanges:
    """Control changes applied (a mixin of :class:`~sensorguard.service.assets.AssetAlerts`, which owns
    the attributes declared here and the methods called on ``self``)."""

    metrics: Metrics
    recorder: Recorder | None
    restored: Restored
    save_soon: bool
    hold_raises: bool
    _states: dict[str, AlertState]
    _latest: dict[str, tuple[float, list[dict]]]
    _held_back: dict
    _adopted: deque[Adopted]
    _control_changes: deque[tuple[str, bool | None]]

    def request_control_change(self, asset: str, maintenance: bool | None) -> None:
        """A command changed how ``asset`` is handled (any thread): ``maintenance`` False when a
        maintenance ended, True when one started, None otherwise. Applied on the worker by
        :meth:`apply_control_changes` (bounded queue: a flood of commands drops the oldest, counted)."""
        if len(self._control_changes) == self._control_changes.maxlen:
            self.metrics.control_changes_dropped.inc()
        self._control_changes.append((asset, maintenance))

    def apply_control_changes(self) -> None:
        """On the worker: an alert that rose while held and is still up is announced now that
        nothing holds it; after maintenance a guard band passes before readings count as normal
        again; the asset's retained state is published again (known assets only: also one restored
        and not heard from yet, or silent, as a machine switched off for its maintenance is)."""
        if self._adopted and self._control_changes:  # (cluster mode: one still queued was neither live nor
            self._take_adopted()  # restored, and its state said no hold until its first window here: a walk)
        self.hold_raises = True  # the raises owed go out after one save, as a batch's (release_raises): one
        try:  # that rose in a short hold may not be in the file yet, and a bulk unshelve saved each (reviews)
            while self._control_changes:
                asset, maintenance = self._control_changes.popleft()
                state = self._states.get(asset)
                if state is None:
                    self._republish(asset)
                    if (restored := self.restored.get(asset)) is not None and restored[0].status == "alerting":
                        self.metrics.set_score(asset, restored[0].last_score,
                                               restored[2] and self._held(asset) is None)
                    continue
                ts, channels = self._latest.get(asset, (time.time(), []))
                if self._raise_owed(asset, state, ts):
                    self._tell(asset, AlertEvent("raised", ts, state.last_score, state.peak, state.alert_id),
                               channels, self.current())
                    if asset not in self._held_back:  # told at once (no state file to hold it first): saved soon
                        self.save_soon = True
                if maintenance is True and self.recorder is not None and not self.recorder.holding(asset):
                    self.recorder.alert_raised(asset, ts)  # the readings just before it are no normal data either
                if maintenance is False and state.status != "alerting" and self.recorder is not None:
                    self.recorder.alert_cleared(asset, ts)
                if asset in self._held_back:  # (its state and paging go out with its raise)
                    continue
                self.publish_state(asset)
                if state.status == "alerting":  # paging stops as the hold starts, not at a window that may not
                    self.metrics.set_score(asset, state.last_score, self._paging(asset, state, ts))  # come (a review)
        finally:
            self.hold_raises = False
            self.release_raises()
