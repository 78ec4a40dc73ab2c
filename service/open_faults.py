"""Each asset's open sensor faults and its silence: what its retained state lists beside the process.

Held apart from the alert machines (:mod:`~sensorguard.service.assets`) because they have their own
lock: the scoring worker opens and closes them, and whoever publishes a state reads them. The
gauges follow every change: ``sensor_faults_open`` counts the channel faults, ``assets_silent``
the silent assets apart (a retired asset stays silent, through restarts with ``state_dir``, until
newer silences push it out: it must not hold the sensor-fault alert up).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from sensorguard.service.metrics import Metrics
from sensorguard.service.publisher import iso


class OpenFaults:
    """Open channel faults (``(kind, channel) -> since``) and silent assets (their last reading's time
    and last score, which their retained ``stale`` state shows), per asset. The silent ones are
    kept oldest first, to a cap the caller gives."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._faults: dict[str, dict[tuple[str, str | None], float]] = {}
        self._values: dict[tuple[str, str, str | None], float] = {}  # (asset, kind, channel) -> value at its opening
        self._silent: dict[str, tuple[float, float]] = {}
        self._returned: dict[str, float] = {}  # back from a silence, no window judged since: when
        self._lock = threading.Lock()

    def back(self, asset: str, ts: float = float("nan")) -> bool:
        """A reading of ``asset`` came at ``ts``: whether it was silent (its ``silent`` fault closes
        now, and it is marked returned until a window of it is judged: :meth:`returns`)."""
        with self._lock:
            was_silent = self._silent.pop(asset, None) is not None
            if was_silent:
                self._returned[asset] = ts
            self._count()
        return was_silent

    def returns(self, judged: Callable[[str], bool]) -> dict[str, float]:
        """The assets back from a silence with no window judged since (``judged`` says which were,
        and they lose the mark): the reading time each came back. Its retained state said it back,
        and only this mark tells a restart it stays quiet through from an older file's silent one."""
        with self._lock:
            for asset in [a for a in self._returned if judged(a)]:
                del self._returned[asset]
            return dict(self._returned)

    def restore_returns(self, returned: dict[str, float]) -> None:
        """The assets a previous run saved as returned (:meth:`returns`), still awaiting a judged window."""
        with self._lock:
            self._returned.update((a, ts) for a, ts in returned.items() if a not in self._silent)

    def returned_at(self, asset: str) -> float | None:
        """The reading time ``asset`` came back from a silence, if no window of it was judged since."""
        return self._returned.get(asset)

    def change(self, asset: str, kind: str, channel: str | None, ts: float, fault: bool,
               value: float = float("nan")) -> None:
        """A channel fault opened (``fault``) at reading time ``ts`` on ``value``, or closed."""
        with self._lock:
            faults = self._faults.setdefault(asset, {})
            if fault:
                faults[(kind, channel)] = ts
                self._values[(asset, kind, channel)] = value
            else:
                faults.pop((kind, channel), None)
                self._values.pop((asset, kind, channel), None)
            if not faults:
                self._faults.pop(asset, None)
            self._count()

    def clear_channels(self, asset: str) -> None:
        """The asset's channel faults end (it went silent: that fault replaces them)."""
        with self._lock:
            for kind, channel in self._faults.pop(asset, {}):
                self._values.pop((asset, kind, channel), None)
            self._count()  # (the gauge kept a restored asset's faults that ended unheard: a review)

    def went_silent(self, asset: str, ts: float, last_score: float, kept: int) -> list[str]:
        """``asset`` is silent since its reading at ``ts`` (newest now); the silent assets forgotten
        beyond ``kept``, oldest first: their return will not be told."""
        forgotten = []
        with self._lock:
            self._silent.pop(asset, None)
            self._returned.pop(asset, None)
            self._silent[asset] = (ts, last_score)
            while len(self._silent) > kept:
                forgotten.append(next(iter(self._silent)))
                self._silent.pop(forgotten[-1])
            self._count()
        return forgotten

    def silent_assets(self) -> list[str]:
        """The silent assets whose return is awaited, oldest silence first."""
        with self._lock:
            return list(self._silent)

    def silences(self) -> dict[str, tuple[float, float]]:
        """Every silent asset awaited: the reading time it went silent after, and its last score,
        oldest silence first (as ``state_dir`` keeps them: :func:`~sensorguard.service.state.save_states`)."""
        with self._lock:
            return dict(self._silent)

    def silent(self, asset: str) -> tuple[float, float] | None:
        """The reading time ``asset`` went silent after, and its last score; None when it is not silent."""
        return self._silent.get(asset)

    def forget(self, asset: str) -> None:
        """Everything about ``asset`` (cluster mode: it moved to another worker)."""
        with self._lock:
            for kind, channel in self._faults.pop(asset, {}):
                self._values.pop((asset, kind, channel), None)
            self._silent.pop(asset, None)
            self._returned.pop(asset, None)
            self._count()

    def saved(self, assets: Iterable[str] | None = None) -> dict[str, list[dict]]:
        """Every asset's open channel faults (or those of ``assets``) as ``state_dir`` keeps them:
        ``[{"kind", "channel", "since", "value"}]`` (the value it opened on: where a stuck sensor stays)."""
        with self._lock:
            chosen = self._faults if assets is None else {a: self._faults[a] for a in assets if a in self._faults}
            return {asset: [{"kind": kind, "channel": channel, "since": since,
                             "value": self._values.get((asset, kind, channel), float("nan"))}
                            for (kind, channel), since in faults.items()]
                    for asset, faults in chosen.items()}

    def restore(self, faults: dict[str, list[dict]]) -> None:
        """The open channel faults a previous run saved (:meth:`saved`): listed in the states and
        counted until the asset's readings close them (its sensor watch starts with them open)."""
        for asset, listed in faults.items():
            for f in listed:
                self.change(asset, f["kind"], f["channel"], f["since"], True, f["value"])

    def counted_on(self, held: Callable[[str], bool]) -> int:
        """The channel faults open on the assets ``held`` says yes to (``sensor_faults_held``)."""
        with self._lock:  # (``held`` asked outside it: it takes the controls' lock)
            counts = [(asset, len(f)) for asset, f in self._faults.items()]
        return sum(n for asset, n in counts if held(asset))

    def listed(self, asset: str) -> list[dict]:
        """The asset's open sensor faults, ``[{"kind", "channel", "since"}]``, oldest first (silence first)."""
        with self._lock:
            faults = sorted(self._faults.get(asset, {}).items(), key=lambda item: (item[1], item[0]))
            if asset in self._silent:
                faults.insert(0, (("silent", None), self._silent[asset][0]))
        return [{"kind": kind, "channel": channel, "since": iso(since)} for (kind, channel), since in faults]

    def _count(self) -> None:  # (the lock held)
        self.metrics.sensor_faults_open.set(sum(len(f) for f in self._faults.values()))
        self.metrics.assets_silent.set(len(self._silent))
