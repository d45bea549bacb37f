"""Progress of a long step: done/total, rate, ETA and the latest figures (loss, ...), reported every few
seconds through a plain callback, so the pure logic knows nothing of where the line goes (the Dagster run
log in an asset, a terminal line in the demo).

Every line starts with `PROGRESS_PREFIX` and carries a JSON tail, so a reader (the demo's logger, a test)
can parse it back with `parse_progress`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PROGRESS_PREFIX = "progress"
Report = Callable[[str], None]


@dataclass
class Progress:
    """Counts units of work (`update(n)`) and reports at most every `every_s` seconds, plus the first and
    the last update, as `progress <task> <done>/<total> <unit> (<pct>%) <rate>/s eta <s>s <extras> | {json}`.
    """

    task: str
    total: int | None
    report: Report | None
    unit: str = "items"
    every_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    done: int = 0
    extras: dict[str, float] = field(default_factory=dict)
    _started: float | None = None
    _last: float | None = None

    def update(self, n: int = 1, *, done: int | None = None, **extras: float) -> None:
        """Add `n` done units (or set the absolute count with `done=`) and the latest figures."""
        now = self.clock()
        if self._started is None:
            self._started = now
        self.done = done if done is not None else self.done + n
        self.extras.update({k: float(v) for k, v in extras.items() if v is not None})
        finished = self.total is not None and self.done >= self.total
        if self._last is None or finished or now - self._last >= self.every_s:
            self._emit(now)

    def _emit(self, now: float) -> None:
        self._last = now
        if self.report is None:
            return
        self.report(self.line(now))

    def snapshot(self, now: float | None = None) -> dict[str, float | int | str | None]:
        now = self.clock() if now is None else now
        elapsed = max(now - (self._started if self._started is not None else now), 0.0)
        rate = self.done / elapsed if elapsed > 0 else None
        remaining = (self.total - self.done) if self.total is not None else None
        eta = remaining / rate if rate and remaining is not None else None
        return {
            "task": self.task,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "rate": rate,
            "eta_s": eta,
            "elapsed_s": elapsed,
            **self.extras,
        }

    def line(self, now: float | None = None) -> str:
        """The human-readable line with its JSON tail."""
        s = self.snapshot(now)
        total = f"/{s['total']}" if s["total"] is not None else ""
        pct = f" ({100 * s['done'] / s['total']:.0f}%)" if s["total"] else ""
        rate = f" {s['rate']:.1f} {self.unit}/s" if s["rate"] else ""
        eta = f" eta {s['eta_s']:.0f}s" if s["eta_s"] is not None and math.isfinite(s["eta_s"]) else ""
        figures = "".join(f" {k}={v:.4g}" for k, v in self.extras.items())
        return (
            f"{PROGRESS_PREFIX} {self.task} {s['done']}{total} {self.unit}{pct}{rate}{eta}{figures}"
            f" | {json.dumps(s, sort_keys=True)}"
        )


def parse_progress(message: str) -> dict | None:
    """The JSON fields of a progress line, or None for any other message."""
    if not message.startswith(PROGRESS_PREFIX + " ") or " | " not in message:
        return None
    try:
        return json.loads(message.rsplit(" | ", 1)[1])
    except ValueError:
        return None
