"""The testbed's slow CPU with ``--throttle duty``: a real-time process that takes the device's CPU for the rest of
every short period.

A Raspberry Pi is slow all the time. The other emulator, a CFS quota
(``cpu.cfs_quota_us``), is slow only on average: its period cannot be shorter
than 1 ms of quota (4 ms at 0.25), it is enforced at scheduler ticks (4 ms at
HZ=250) and an overrun is paid back from the next periods, and a device that
idles banks a whole quota. Measured on this project's 2-core VM with a 1 ms
(host) busy loop at 0.25: back to back p10/p50/p90 0.79/1.10/10.3 ms; with
5 ms idle between runs 0.83/1.11/1.20 ms -- host speed, where a Pi would take
4 ms. MobileNet requests were "1 ms or 13 ms", and which mode the median landed
on changed from run to run.

Here a SCHED_FIFO process pinned to the device's CPU sleeps for the device's
window of every period (``share`` x 250 us) and spins for the rest; nothing
the device runs (an ordinary task) can preempt it, and an idle device banks
nothing. The same 1 ms busy loop (a 50 us window of 250, before calibration
existed): back to back p10/p50/p90 4.21-4.27 / 4.26-4.50 / 4.50-4.77 ms over
three one-second blocks; with 3 ms idle between runs p10/p50 4.0-4.3 /
4.3-4.5 ms.

Tried before and dropped: freezing and thawing the device's freezer cgroup
from a timer on the other CPU (1 ms period): a profiled 34 us MobileNet layer
took 0.61 ms sustained (18x at a 0.25 share, where 4x was due), and per-layer
tables overshot whole heads by 89 %.

What it costs: the device's CPU is busy all the time (the spinning is the
point), so the host's own work runs on its other CPUs.

Run by ``cpcdrl testbed up`` as its own process:
``python -m cpcdrl_deploy.devices.throttle CPU_CGROUP --share 0.25 --period-us 250 --device-cpu 1``.
It exits on SIGTERM/SIGINT, or when the device's cgroup goes away.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

RT_PRIORITY = 10  # above every ordinary task; below the kernel's own real-time threads (migration, watchdogs: 99)


class DutyCycle:
    """Leave the CPU to others for ``window_s`` of every ``period_s`` and spin through the rest, on absolute
    deadlines."""

    def __init__(self, window_s: float, period_s: float, cgroup: Path | None = None) -> None:
        self.window_s, self.period_s = window_s, period_s
        self.cgroup = cgroup
        self.stop = False

    def run(self, seconds: float | None = None) -> None:
        now = time.perf_counter
        t = now()
        end = None if seconds is None else t + seconds
        check = t + 1.0
        while not self.stop and (end is None or t < end):
            d = t + self.window_s - now()
            if d > 0:
                time.sleep(d)  # nanosleep: an hrtimer (no slack for a real-time task), so 50 us windows work at HZ=250
            t += self.period_s
            while now() < t:
                pass
            if now() - t > self.period_s:
                # held up for a whole period (the kernel's real-time limit, a stall): restart the grid, do not spin to
                # catch up
                t = now()
            if t > check:
                check = t + 1.0
                if self.cgroup is not None and not self.cgroup.exists():
                    return  # the testbed is gone


def _cpu_ns(pid: int) -> int:
    """Time ``pid`` has spent on a CPU (schedstat: nanoseconds, unlike /proc/PID/stat's 10 ms ticks)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _steal_s(cpu: int) -> float:
    """Seconds the hypervisor has taken from ``cpu`` (0 on bare metal)."""
    return float(getattr(psutil.cpu_times(percpu=True)[cpu], "steal", 0.0))


def calibrate(
    cgroup: Path | None, share: float, period_s: float, cpu: int, seconds: float = 1.0, rounds: int = 3
) -> tuple[float, float, float]:
    """The window per period that gives a busy process ``share`` of the CPU, the share measured with it, and the
    steal seen.

    Waking from the window's sleep takes microseconds the device gets on top
    of its window, and switching in and out costs it some, so the window is
    scaled until a spinner placed like the device's tasks (its cgroup, its
    CPU, ordinary scheduling) measures the requested share (0.25 of 250 us:
    a 63.8 us window, measured 0.250).

    The share is of the time the hypervisor left the CPU: on a VM whose vCPU
    is stolen a third of the time, a share of wall time would widen the window
    by half while the steal lasts and keep it wide after it stops. Steal is
    reported instead (profiles record it per model), not compensated.
    """

    def enter() -> None:
        # an ordinary task, like the device's (not this process's SCHED_FIFO) -- first: a cgroup without
        # real-time runtime refuses a real-time task
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, {cpu})
        if cgroup is not None:
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=enter)
    window = share * period_s
    measured, steal_share = 0.0, 0.0
    try:
        time.sleep(0.2)  # let the interpreter start
        for _ in range(rounds):
            c0, s0, t0 = _cpu_ns(spin.pid), _steal_s(cpu), time.perf_counter()
            DutyCycle(window, period_s).run(seconds)
            wall = time.perf_counter() - t0
            steal_share = min(
                max(_steal_s(cpu) - s0, 0.0) / wall, 0.9
            )  # steal ticks are 10 ms: never let them eat the whole wall
            measured = (_cpu_ns(spin.pid) - c0) / 1e9 / (wall * (1.0 - steal_share))
            if measured <= 0:
                break
            window = min(period_s, window * share / measured)
    finally:
        spin.kill()
        spin.wait()
    return window, measured, steal_share


def _become_realtime(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))  # PermissionError without root: main says so


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="duty-cycle one CPU: the testbed's slow CPU")
    ap.add_argument(
        "cgroup", type=Path, help="the device's cpu cgroup (calibration runs in it; this process exits when it goes)"
    )
    ap.add_argument("--share", type=float, required=True)
    ap.add_argument("--period-us", type=int, default=250)
    ap.add_argument("--window-us", type=float, help="the device's time per period (default: calibrate to --share)")
    ap.add_argument("--device-cpu", type=int, required=True, help="the CPU the device is pinned to")
    ap.add_argument(
        "--calibrate-only", action="store_true", help="print the calibrated window and measured share, then exit"
    )
    args = ap.parse_args(argv)
    period = args.period_us / 1e6
    try:
        _become_realtime(args.device_cpu)
    except (PermissionError, OSError) as e:
        print(f"cannot run as a real-time task on CPU {args.device_cpu}: {e}", file=sys.stderr)
        return 1
    if args.calibrate_only or args.window_us is None:
        window, measured, steal = calibrate(args.cgroup, args.share, period, args.device_cpu)
        print(f"window_us={window * 1e6:.1f} measured_share={measured:.4f} steal_share={steal:.4f}", flush=True)
        if args.calibrate_only:
            return 0
    else:
        window = args.window_us / 1e6
    duty = DutyCycle(window, period, args.cgroup)

    def _stop(*_: object) -> None:
        duty.stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    duty.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
