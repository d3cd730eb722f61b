"""A bandwidth trace for the testbed's link: ``time_s,rate`` rows, replayed on a schedule.

A row says "from ``time_s`` seconds after the start, the link runs at
``rate``" (``200KB/s``, ``1.6Mbit`` or bytes per second, as ``testbed up
--bandwidth`` reads it). A header row is allowed, and ``#`` comments. The
testbed's link is a token-bucket filter with no delay stage (no netem), so a
trace sets the rate only; a third (RTT) column is refused in one line rather
than ignored.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.devices.testbed import parse_bandwidth


@dataclass(frozen=True)
class TracePoint:
    time_s: float  # since the replay started
    bytes_per_s: float


def read_trace(path: Path) -> list[TracePoint]:
    """The trace at ``path``, or one error line naming the file and row that cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CpcdrlError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    points: list[TracePoint] = []
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if line_no == 1 and cells[0].lower() in ("time_s", "time", "t"):
            continue  # a header
        where = f"{path}, row {line_no}"
        if len(cells) > 2 and any(cells[2:]):
            raise CpcdrlError(f"{where}: the testbed's link sets a rate only (no delay stage): drop the RTT column")
        if len(cells) < 2:
            raise CpcdrlError(f"{where}: expected time_s,rate (e.g. 20,50KB/s)")
        try:
            t = float(cells[0])
        except ValueError:
            raise CpcdrlError(f"{where}: time {cells[0]!r} is not a number of seconds") from None
        rate = parse_bandwidth(cells[1])
        if not (t >= 0 and t != float("inf")) or (points and t < points[-1].time_s):
            raise CpcdrlError(f"{where}: times must be finite, >= 0 and in order")
        if not rate > 0:
            raise CpcdrlError(f"{where}: rate {cells[1]!r} must be > 0")
        points.append(TracePoint(t, rate))
    if not points:
        raise CpcdrlError(f"{path}: no time_s,rate rows")
    return points


def replay(
    points: list[TracePoint],
    apply: Callable[[float], object],
    log: Callable[[str], None] = lambda s: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict]:
    """Apply each point's rate at its time after the start; the rates applied and when (seconds since the start).

    Times are kept against the start, not between rows, so a slow ``apply``
    does not push every later change back.
    """
    start = clock()
    done = []
    for p in points:
        wait = start + p.time_s - clock()
        if wait > 0:
            sleep(wait)
        apply(p.bytes_per_s)
        at = clock() - start
        done.append({"time_s": p.time_s, "applied_s": at, "bytes_per_s": p.bytes_per_s})
        log(f"{at:7.2f} s: link at {p.bytes_per_s / 1e3:g} KB/s")
    return done
