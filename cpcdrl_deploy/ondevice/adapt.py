"""The uplink as the edge runner sees it, and which plan of a set to run on it (standard library only: uploaded).

The runner measures the link passively, from its own requests: a request
that sent ``n`` bytes and got its reply ``remote_ms`` later, of which the
server computed ``server_ms``, saw the link move ``n`` bytes in
``remote_ms - server_ms - base_ms`` (``base_ms``: the round trip and the
per-request cost the profile measured, which do not scale with bytes).

``UplinkEstimate`` smooths those samples in log space (a rate halving and a
rate doubling are changes of the same size) with an exponentially weighted
mean, and watches them with a two-sided CUSUM (Page's test): once samples
keep landing on one side of the estimate by more than ``drift`` in total
``threshold`` worth, the link has changed, and the estimate jumps to the
median of the samples since the change began instead of crawling there.
``switch_band`` is the set's rule: move to a neighbouring band only once the
estimate is past the threshold by the hysteresis (``PlanSet.switch`` calls it).
"""

from __future__ import annotations

import math
import statistics


class UplinkEstimate:
    def __init__(self, alpha: float = 0.3, drift: float = 0.15, threshold: float = 0.8, min_ms: float = 0.2) -> None:
        self.alpha, self.drift, self.threshold, self.min_ms = alpha, drift, threshold, min_ms
        self.level: float | None = None  # log bytes/s
        self.up = self.down = 0.0  # the CUSUM sums
        self.since_up: list[float] = []  # samples since each sum last stood at zero
        self.since_down: list[float] = []
        self.changes = 0

    @property
    def bytes_per_s(self) -> float | None:
        return math.exp(self.level) if self.level is not None else None

    def sample(self, n_bytes: int, remote_ms: float, server_ms: float | None, base_ms: float) -> float | None:
        """A request's rate (bytes/s), or None when it says nothing of the link (nothing sent, or all overhead)."""
        wire_ms = remote_ms - (server_ms or 0.0) - base_ms
        if n_bytes <= 0 or wire_ms < self.min_ms:
            return None
        return n_bytes / (wire_ms / 1000.0)

    def add(self, rate: float) -> bool:
        """Take one sample (bytes/s); whether it completed a detected change."""
        x = math.log(rate)
        if self.level is None:
            self.level = x
            return False
        d = x - self.level
        self.up = max(0.0, self.up + d - self.drift)
        self.down = max(0.0, self.down - d - self.drift)
        self.since_up = self.since_up + [x] if self.up > 0 else []
        self.since_down = self.since_down + [x] if self.down > 0 else []
        if self.up > self.threshold or self.down > self.threshold:
            run = self.since_up if self.up > self.threshold else self.since_down
            self.level = statistics.median(run)
            self.up = self.down = 0.0
            self.since_up, self.since_down = [], []
            self.changes += 1
            return True
        self.level += self.alpha * d
        return False


def switch_band(highs: list[float | None], band: int, estimate: float, hysteresis: float) -> int:
    """The band to be in at ``estimate``, from ``band``; ``highs[i]``: band i's upper edge (None: the last)."""
    h = 1.0 + hysteresis
    while band + 1 < len(highs) and estimate > (highs[band] or math.inf) * h:
        band += 1
    while band > 0 and estimate < (highs[band - 1] or 0.0) / h:
        band -= 1
    return band


def band_at(highs: list[float | None], rate: float) -> int:
    """The band whose plan is lowest at ``rate`` (no hysteresis: where a runner starts)."""
    for i, hi in enumerate(highs):
        if hi is None or rate < hi:
            return i
    return len(highs) - 1
