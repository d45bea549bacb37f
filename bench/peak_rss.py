"""Peak RSS of a block of code, shared by the benchmarks (tracemalloc sees neither torch nor DuckDB)."""

from __future__ import annotations

import contextlib
import gc
import threading
import time

import psutil


class PeakRss:
    """Peak resident set size above the value at entry, sampled by a background thread; with `children`,
    of this process and every process below it (a local Ray instance's workers)."""

    def __init__(self, interval_s: float = 0.005, children: bool = False):
        self.interval_s = interval_s
        self.children = children
        self.proc = psutil.Process()
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        gc.collect()
        self.start = self.peak = self._rss()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _rss(self) -> int:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True) if self.children else ():
            with contextlib.suppress(psutil.Error):  # a child may exit between listing and reading
                total += child.memory_info().rss
        return total

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.start) / 2**20
