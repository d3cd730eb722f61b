"""What this host's CPUs did while a measurement ran: busy and stolen shares, sampled in the background.

Why: pairing plans round by round cancels drift that the device and the
server share, not a slowdown of one of them. On a VM the usual suspect is the
hypervisor taking time from one vCPU (steal); on any host, other work. A
bench that records both per round can say which one it was, instead of
leaving a miss unexplained.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil


class HostSampler:
    """Samples every CPU's cumulative times every ``interval_s`` seconds on a daemon thread; use as a context
    manager."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.samples: list[tuple[float, list]] = []  # (wall time, per-CPU psutil times)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpcdrl-host-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), psutil.cpu_times(percpu=True)))
            if self._stop.wait(self.interval_s):
                self.samples.append((time.time(), psutil.cpu_times(percpu=True)))
                return

    def __enter__(self) -> HostSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _shares(a, b) -> dict[str, float]:
    """One CPU's busy and stolen shares (per cent of its elapsed time) between two samples of its times."""
    d = {f: max(getattr(b, f, 0.0) - getattr(a, f, 0.0), 0.0) for f in a._fields}
    total = sum(
        v for f, v in d.items() if f not in ("guest", "guest_nice")
    )  # Linux counts guest time inside user time too
    if total <= 0:
        return {"busy_pct": 0.0, "steal_pct": 0.0}
    idle = d.get("idle", 0.0) + d.get("iowait", 0.0)
    steal = d.get("steal", 0.0)
    return {"busy_pct": 100.0 * (total - idle - steal) / total, "steal_pct": 100.0 * steal / total}


def load_in_windows(samples: list[tuple[float, list]], windows: list[tuple[float, float]]) -> list[dict | None]:
    """Per window (start, end wall time): each CPU's busy and stolen shares between the samples nearest its ends.

    None for a window the samples do not cover by two distinct samples.
    """
    if len(samples) < 2:
        return [None for _ in windows]
    times = np.array([t for t, _ in samples])
    out: list[dict | None] = []
    for t0, t1 in windows:
        i = int(np.clip(np.searchsorted(times, t0, side="right") - 1, 0, len(times) - 1))
        j = int(np.clip(np.searchsorted(times, t1, side="left"), 0, len(times) - 1))
        if j <= i:
            out.append(None)
            continue
        per_cpu = [_shares(a, b) for a, b in zip(samples[i][1], samples[j][1])]
        out.append(
            {
                "seconds": float(times[j] - times[i]),
                "busy_pct": [round(c["busy_pct"], 1) for c in per_cpu],
                "steal_pct": [round(c["steal_pct"], 1) for c in per_cpu],
            }
        )
    return out
