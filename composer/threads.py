"""How many CPU threads torch's operators get when the user does not say: one per idle core.

Measured on a 2-core machine (benchmarks/README.md, "Threads"): on an idle machine two intra-op threads
make the shapes main job 1.6x faster than one (11.7 s against 18.4 s); beside another busy process they
make it 4-7x slower, because torch's OpenMP workers spin waiting for the core that is taken. So the
default counts the cores that other processes leave idle, measured over a tenth of a second in which
composer itself waits (``idle_now``: two reads of ``/proc/stat``), or from the 1-minute load average
where that is not possible (the load average lags: it still counts a job that has just ended).
"""

from __future__ import annotations

import math
import os

MIN_WINDOW_TICKS = 10
"""Fewest clock ticks (all cores together) a probe window needs to be trusted (0.05 s on 2 cores)."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


def threads_for(cores: int, busy_elsewhere: float) -> int:
    """``cores - busy_elsewhere`` rounded (halves down) and clipped to ``[1, cores]``: one thread per idle core."""
    return max(1, min(cores, math.ceil(cores - busy_elsewhere - 0.5)))  # half a busy core: one thread less


def idle_threads(cores: int | None = None, load: float | None = None) -> int:
    """One thread per idle core by the 1-minute load average (``load``, default ``os.getloadavg()[0]``)."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - platforms without a load average
            return 1
    return threads_for(cores, load)


def _cpu_ticks(stat: str = "/proc/stat") -> tuple[int, int] | None:
    """``(total, idle)`` clock ticks of all cores since boot, or ``None`` where ``/proc/stat`` is missing."""
    try:
        with open(stat) as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return sum(fields), fields[3] + fields[4]  # idle + iowait


class IdleProbe:
    """How busy other processes keep the machine over a window: ``probe = IdleProbe()``; ... ;
    ``probe.threads(own)``, where ``own`` is how many cores this process itself kept busy meanwhile."""

    def __init__(self, stat: str = "/proc/stat"):
        self.stat = stat
        self.start = _cpu_ticks(stat)

    def threads(self, own: float = 0.0) -> int:
        """One thread per core idle during the window, ``own`` cores not counted as busy; the load
        average's answer when the window is too short or unreadable."""
        end = _cpu_ticks(self.stat)
        cores = usable_cores()
        if self.start is None or end is None or end[0] - self.start[0] < MIN_WINDOW_TICKS:
            return idle_threads(cores)
        total, idle = end[0] - self.start[0], end[1] - self.start[1]
        busy = (total - idle) / total * (os.cpu_count() or cores)
        return threads_for(cores, max(0.0, busy - own))


def idle_now(window: float = 0.1) -> int:
    """One thread per core that other processes leave idle, measured over ``window`` seconds of sleep."""
    import time

    probe = IdleProbe()
    time.sleep(window)
    return probe.threads()
