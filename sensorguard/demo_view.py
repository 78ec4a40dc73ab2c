"""What ``sensorguard demo`` shows: a rich live table on a terminal, plain lines otherwise, and the
closing summary of injected faults against the alerts the daemon raised."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Fault:
    kind: str
    channel: str
    start_s: float
    length_s: float


@dataclass
class AssetView:
    """What the live view shows for one asset."""

    name: str
    faults: list[Fault]
    score: float = float("nan")
    status: str = "waiting"
    raised: int = 0
    cleared: int = 0
    sensor_faults: int = 0
    channels: list[dict] = field(default_factory=list)
    owner: str = ""  # the worker that scored its last window (demo --cluster)
    owners: list[str] = field(default_factory=list)  # every worker that scored it, in order


class View:
    """A rich live table on a terminal; plain lines otherwise (CI, pipes, files)."""

    def __init__(self, assets: dict[str, AssetView], console) -> None:
        self.assets = assets
        self.console = console
        self.live = console.is_terminal
        self.events: deque[str] = deque(maxlen=10)
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def event(self, payload: dict) -> None:
        asset = self.assets.get(payload.get("asset", ""))
        if asset is None:
            return
        kind = payload.get("state")
        if kind in ("sensor_fault", "sensor_ok"):
            asset.sensor_faults += kind == "sensor_fault"
            where = payload.get("channel") or "the asset"
            line = (f"{self.elapsed():6.1f}s  {str(kind).upper():12} {asset.name:8} {payload.get('kind')} on "
                    f"{where} (value {shown(payload.get('value'))}): a sensor, not the process")
        else:
            asset.raised += kind == "raised"
            asset.cleared += kind == "cleared"
            top = ", ".join(f"{c['name']} {c['share']:.0%}" for c in payload.get("channels", []))
            line = (f"{self.elapsed():6.1f}s  {str(kind).upper():8} {asset.name:8} score {shown(payload.get('score'))} "
                    f"(peak {shown(payload.get('peak_score'))})  top channels: {top}")
        with self._lock:
            self.events.append(line)
        if not self.live:
            print(line, flush=True)

    def note(self, text: str) -> None:
        """A line of what the demo itself did (a worker stopped, for instance)."""
        line = f"{self.elapsed():6.1f}s  {text}"
        with self._lock:
            self.events.append(line)
        if not self.live:
            print(line, flush=True)

    def scored(self, window, owner: str = "") -> None:
        asset = self.assets.get(window.asset)
        if asset is not None:
            asset.score, asset.status, asset.channels = window.score, window.status, window.channels
            if owner and asset.owner != owner:
                asset.owner = owner
                asset.owners.append(owner)

    def render(self):
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"sensorguard demo  t={self.elapsed():5.1f}s", expand=True)
        owners = any(a.owner for a in self.assets.values())
        for column in ("asset", *(("worker",) if owners else ()), "state", "score", "", "top channels", "alerts",
                       "injected faults"):
            table.add_column(column)
        style = {"alerting": "bold red", "pending": "yellow", "normal": "green", "stale": "dim"}
        for a in self.assets.values():
            score = a.score if np.isfinite(a.score) else 0.0
            bar = "#" * min(int(score * 10), 30)
            table.add_row(
                a.name, *((a.owner,) if owners else ()), Text(a.status, style=style.get(a.status, "")), shown(a.score),
                Text(bar, style="red" if score >= 1 else "green"),
                ", ".join(f"{c['name']} {c['share']:.0%}" for c in a.channels),
                f"{a.raised} raised / {a.cleared} cleared" + (f", {a.sensor_faults} sensor" if a.sensor_faults else ""),
                "; ".join(f"{f.kind} on {f.channel} at {f.start_s:.0f}-{f.start_s + f.length_s:.0f}s"
                          for f in a.faults) or "none (healthy)",
            )
        with self._lock:
            events = "\n".join(self.events) or "no alerts yet"
        return Group(table, Panel(events, title="alert events (MQTT sensorguard/alerts/#)"))


def shown(x) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:6.2f}"


def print_summary(console, views: dict[str, AssetView]) -> None:
    console.print("\nsummary (injected faults vs alerts the daemon raised):")
    injected = {name: ", ".join(f"{f.kind} on {f.channel} at {f.start_s:.0f}s" for f in a.faults) or "none"
                for name, a in views.items()}
    width = max(map(len, injected.values()), default=0)  # (a fixed 40 pushed a longer row's alerts out of line)
    for name, a in views.items():
        moved = f", scored by {' then '.join(a.owners)}" if a.owners else ""
        console.print(f"  {a.name:8} injected: {injected[name]:{width}}  alerts: {a.raised} raised, {a.cleared} "
                      f"cleared, {a.sensor_faults} sensor faults{moved}")
