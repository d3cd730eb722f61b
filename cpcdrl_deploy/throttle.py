"""An alternative slow CPU for the testbed (``--throttle duty``): a freezer cgroup thawed for ``share`` of every period.

Why try it: the default CFS quota (``cpu.cfs_quota_us``) cannot be shorter than
1 ms, is enforced at scheduler ticks (4 ms at HZ=250) and an overrun is paid
back from the next periods. A ~1 ms inference then either fits in one quota
(host speed) or overruns and stalls for ~12 ms: MobileNet at 0.25 CPU ran
p10/p50/p90 1.5/1.7/14.1 ms, and which mode the median landed on changed between
two runs of the same plan (p50 1.97 vs 11.42 ms). Freezing and thawing from a
timer spreads the stalls over 1 ms (hrtimer sleeps, not ticks), and a SCHED_IDLE
busy loop keeps the device's CPU from halting in between (``keep_awake``;
without it the same head averaged 6.9 to 12.5 ms over one-second blocks).

Why it is not the default (measured on this project's 2-core VM): per request
it is one mode, but the device's speed still drifts between one-second blocks
(the same MobileNet head averaged 4.8 to 8.2 ms), and tiny runs suffer most: a
profiled MobileNet layer of 34 us on the host took 0.61 ms sustained (18x at a
0.25 share), so the per-layer tables overshot the directly timed heads by 89 %
at the median (27.5 % before ``keep_awake``), against 6.9 % under the quota.

Run by ``cpcdrl testbed up`` as its own process:
``python -m cpcdrl_deploy.throttle FREEZER_CGROUP --share 0.25 --period-us 1000``.
It thaws the cgroup and exits on SIGTERM/SIGINT, or when the cgroup goes away.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class DutyCycle:
    """Thaw for ``on_s`` of every ``period_s``, on absolute deadlines so the share does not drift.

    Tried and dropped: correcting each on-time by the CPU time the device's
    cpuacct cgroup says it used (a busy loop then got 0.226-0.231 instead of
    0.24-0.25 from the calibrated fixed on-time, and inference was no steadier).
    """

    def __init__(self, freezer: Path, on_s: float, period_s: float) -> None:
        self.fd = os.open(freezer / "freezer.state", os.O_WRONLY)
        self.on_s, self.period_s = on_s, period_s
        self.stop = False

    def run(self, seconds: float | None = None) -> None:
        t = time.perf_counter()
        end = None if seconds is None else t + seconds
        try:
            while not self.stop and (end is None or t < end):
                os.write(self.fd, b"THAWED")
                _sleep_until(t + self.on_s)
                os.write(self.fd, b"FROZEN")
                t += self.period_s
                _sleep_until(t)
        finally:
            self.thaw()

    def thaw(self) -> None:
        try:
            os.write(self.fd, b"THAWED")
        except OSError:
            pass  # the cgroup is gone: nothing left to thaw

    def close(self) -> None:
        os.close(self.fd)


def _sleep_until(t: float) -> None:
    d = t - time.perf_counter()
    if d > 0:
        time.sleep(d)  # nanosleep: an hrtimer, so sub-tick periods work at HZ=250
    # if late (preempted), the next deadline stays put: the share over many periods holds


_AWAKE = """
import ctypes, os, signal
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: go when the duty cycle goes
os.sched_setaffinity(0, {%d})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
while True:
    pass
"""


def keep_awake(cpu: int) -> subprocess.Popen:
    """A SCHED_IDLE busy loop on the device's CPU, so the (virtual) CPU never halts while the device is frozen.

    Without it, every thaw waited for an idle vCPU to wake, for as long as the
    hypervisor took that second: the same MobileNet head averaged 6.9 to
    12.5 ms over one-second blocks. With it: 4.8 to 5.1 ms in five blocks of
    six, 4x the host's 1.25 ms, as a 0.25 share should give. Any runnable task,
    the device's included, preempts a SCHED_IDLE one at once.
    """
    return subprocess.Popen([sys.executable, "-c", _AWAKE % cpu])


def _cpu_ns(pid: int) -> int:
    """Time ``pid`` has spent on a CPU (schedstat: nanoseconds, unlike /proc/PID/stat's 10 ms ticks)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def calibrate(freezer: Path, share: float, period_s: float, cpu: int | None, seconds: float = 1.0, rounds: int = 3) -> tuple[float, float]:
    """The thawed time per period that gives a busy process ``share`` of a CPU, and the share measured with it.

    Thawing is not instant (a frozen task must be woken and scheduled), so a
    nominal 25 % duty gave a busy loop 20-22 % (calibrated on-time then
    275-287 us of 1000; with ``keep_awake`` running, 253-263 us); the on-time
    is scaled until a spinner inside the cgroup measures the requested share.
    """

    def enter() -> None:
        Path(freezer, "cgroup.procs").write_text(str(os.getpid()))
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # an ordinary task, like the device's: not this process's SCHED_FIFO

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=enter)
    on = share * period_s
    measured = 0.0
    try:
        time.sleep(0.2)  # let the interpreter start
        for _ in range(rounds):
            duty = DutyCycle(freezer, on, period_s)
            c0, t0 = _cpu_ns(spin.pid), time.perf_counter()
            duty.run(seconds)
            duty.close()
            measured = (_cpu_ns(spin.pid) - c0) / 1e9 / (time.perf_counter() - t0)
            if measured <= 0:
                break
            on = min(period_s, on * share / measured)
    finally:
        spin.kill()
        spin.wait()
    return on, measured


def _pin_away_from(cpu: int | None) -> None:
    """Run on the host's other CPUs, as a real-time task so its deadlines are kept while the host is busy."""
    others = set(range(os.cpu_count() or 1)) - ({cpu} if cpu is not None else set())
    if others:
        os.sched_setaffinity(0, others)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (PermissionError, OSError):
        pass  # not root: ordinary scheduling, looser deadlines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="duty-cycle a freezer cgroup: the testbed's slow CPU")
    ap.add_argument("freezer", type=Path)
    ap.add_argument("--share", type=float, required=True)
    ap.add_argument("--period-us", type=int, default=1000)
    ap.add_argument("--on-us", type=float, help="thawed time per period (default: calibrate to --share)")
    ap.add_argument("--device-cpu", type=int, help="the CPU the device is pinned to (this process avoids it)")
    ap.add_argument("--calibrate-only", action="store_true", help="print the calibrated on-time and measured share, then exit")
    args = ap.parse_args(argv)
    period = args.period_us / 1e6
    _pin_away_from(args.device_cpu)
    awake = keep_awake(args.device_cpu) if args.device_cpu is not None else None
    try:
        if args.calibrate_only or args.on_us is None:
            on, measured = calibrate(args.freezer, args.share, period, args.device_cpu)
            print(f"on_us={on * 1e6:.1f} measured_share={measured:.4f}", flush=True)
            if args.calibrate_only:
                return 0
        else:
            on = args.on_us / 1e6
        duty = DutyCycle(args.freezer, on, period)

        def _stop(*_: object) -> None:
            duty.stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            duty.run()
        except OSError:
            pass  # the cgroup was removed under us: the testbed is gone
    finally:
        if awake is not None:
            awake.kill()
    return 0

if __name__ == "__main__":
    sys.exit(main())
