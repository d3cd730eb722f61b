"""An emulated Raspberry Pi: an SSH host in its own network namespace, slow CPU, slow link.

``cpcdrl testbed up`` makes (as root):
- a network namespace with a veth pair, 198.18.<k>.1 on the host side and
  198.18.<k>.2 inside (the benchmarking range, RFC 2544);
- a token-bucket filter on both veth ends (``tc ... tbf rate``, a one-frame
  burst and a peak rate 1 % above the rate): the link, near a serial one;
- the slow CPU: a duty cycle (the default, ``--throttle duty``), a real-time
  process on the device's CPU that leaves it to the device for its share of
  every 250 us and spins through the rest; or, with ``--throttle quota``, a
  cgroup-v1 CPU quota (``cpu.cfs_quota_us``/``cfs_period_us``) with the
  shortest period the kernel accepts for the share (4 ms at 0.25), which
  sshd and everything it starts inherit (cpcdrl_deploy/throttle.py says what
  each is good and bad at);
- one CPU for the device (sshd's affinity, inherited): a quota is handed out
  to each CPU's run queue in slices, and a process that migrates between
  CPUs leaves runtime stranded on the one it left. Measured on a 2-core VM
  at 0.25 CPU, VGG16 back to back: p10/p50/p90 31/41/57 ms unpinned at
  10 ms, 34/44/52 pinned at 4 ms; MobileNet's p90-p50 spread 11.1 -> 3.7 ms;
- an sshd inside the namespace with its own host key, accepting only a
  generated client key;
- a Python virtual environment with numpy and both edge runtimes (onnxruntime, ai-edge-litert) for the device side
  (installed from the host side: the namespace has no route to PyPI);
- an entry in ``~/.cpcdrl/ssh_config`` and ``~/.cpcdrl/known_hosts`` so that
  ``cpcdrl profile --host NAME`` connects, with the host key verified.
``cpcdrl testbed link`` changes the link's rate in place (``set_rate``; on a
schedule from a trace: ``devices/linktrace.py``), connections staying up.
``cpcdrl testbed down`` removes all of it; the state lives in ``~/.cpcdrl/testbed/NAME``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cpcdrl_deploy.core.errors import CpcdrlError

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
THROTTLES = ("duty", "quota")
DUTY_PERIOD_US = 250  # short, so a 1 ms request sees many windows, not a few long stalls
MAX_CPU_SHARES = 262144  # the kernel's largest cpu.shares
TBF_FRAME_BYTES = 1514  # one Ethernet frame: the token bucket's burst and its peak-rate bucket
MIN_QUOTA_US = 1_000  # the kernel refuses a smaller cpu.cfs_quota_us (and period)


def cfs_period_us(cpu: float) -> int:
    """The shortest CFS period whose quota the kernel accepts: ``cpu`` x period >= 1 ms.

    A quota is a slow CPU only on time scales longer than its period: within
    one period the device runs at the host's full speed until its quota is
    spent, then stalls until the period ends. With a 10 ms period a 1 ms
    MobileNet inference usually fit in one quota (fast) and every third or
    fourth stalled for 7.5 ms -- bimodal latencies no Pi shows. The shortest
    period the kernel allows (4 ms at 0.25 CPU) spreads the stalls finer.
    """
    return max(MIN_QUOTA_US, int(-(-MIN_QUOTA_US // cpu)))


def cpcdrl_home() -> Path:
    return Path(os.environ.get("CPCDRL_HOME", Path.home() / ".cpcdrl"))


@dataclass
class TestbedState:
    name: str
    index: int
    host_ip: str
    device_ip: str
    port: int
    cpu: float
    bandwidth_bytes_per_s: float
    user: str
    dir: str
    python: str
    host_veth: str
    cgroup: str
    sshd_pid: int = 0
    cfs_period_us: int = 10_000  # testbeds made before the period followed the share used 10 ms
    cpu_pin: int | None = None  # the one CPU the device runs on (None: testbeds made before pinning)
    throttle: str = (
        "quota"  # how the slow CPU is made (THROTTLES); state files from before --throttle are quota testbeds
    )
    freezer: str | None = None  # only in testbeds made when the duty cycle froze a freezer cgroup
    duty_period_us: int | None = None
    duty_on_us: float | None = None  # the device's window per period, calibrated so a busy loop gets ``cpu``
    measured_share: float | None = None  # what the busy loop got with it, of the time the hypervisor left the CPU
    calibration_steal: float | None = None  # the share of that CPU's wall time the hypervisor took while calibrating
    throttle_pid: int = 0

    def save(self) -> None:
        (Path(self.dir) / "state.json").write_text(json.dumps(asdict(self), indent=2))


def parse_bandwidth(text: str) -> float:
    """'200KB/s', '1.6Mbit', '200000' -> bytes per second (1 KB = 1000 bytes)."""
    t = text.strip().lower().replace("/s", "").replace("ps", "")
    units = {"kbit": 125.0, "mbit": 125_000.0, "gbit": 125_000_000.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "b": 1.0}
    for u, mult in units.items():
        if t.endswith(u):
            try:
                return float(t[: -len(u)]) * mult
            except ValueError:
                break
    try:
        return float(t)
    except ValueError:
        raise CpcdrlError(f"cannot read bandwidth {text!r}; try 200KB/s or 1.6Mbit") from None


def parse_duration_ms(text: str) -> float:
    """'10ms', '0.02s', '15' -> milliseconds (a bare number is milliseconds)."""
    t = text.strip().lower()
    for unit, mult in (("ms", 1.0), ("us", 1e-3), ("s", 1000.0)):
        if t.endswith(unit):
            t, scale = t[: -len(unit)], mult
            break
    else:
        scale = 1.0
    try:
        v = float(t) * scale
    except ValueError:
        raise CpcdrlError(f"cannot read duration {text!r}; try 10ms or 0.02s") from None
    if not v >= 0 or v == float("inf"):
        raise CpcdrlError(f"duration {text!r} must be a finite number >= 0")
    return v


def _run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        said = (res.stderr or res.stdout).strip()
        raise CpcdrlError(f"{' '.join(cmd)} failed: {said.splitlines()[-1] if said else res.returncode}")
    return res


def _preflight(throttle: str = "quota") -> None:
    if os.geteuid() != 0:
        raise CpcdrlError("the testbed needs root (network namespaces, tc, cgroups)")
    for tool, hint in (("ip", "apt-get install iproute2"), ("tc", "apt-get install iproute2")):
        if shutil.which(tool) is None:
            raise CpcdrlError(f"the testbed needs `{tool}`: {hint}")
    if not Path("/usr/sbin/sshd").exists():
        raise CpcdrlError("the testbed needs sshd: apt-get install openssh-server")
    if not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        raise CpcdrlError(f"the testbed needs the cgroup-v1 cpu controller at {CGROUP_CPU}")
    if throttle == "duty" and (os.cpu_count() or 1) < 2:
        raise CpcdrlError(
            "--throttle duty takes one CPU for the device and needs another for the host (or use --throttle quota)"
        )


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}")


def check_name(name: str) -> str:
    """A testbed name becomes a directory, an interface, a cgroup and an SSH alias: letters, digits, ``_``, ``-``
    only."""
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise CpcdrlError(
            f"bad testbed name {name!r}: 1-31 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return name


def state_dir(name: str) -> Path:
    return cpcdrl_home() / "testbed" / check_name(name)


def load_state(name: str) -> TestbedState | None:
    if NAME_RE.fullmatch(name) is None:
        return None  # not a testbed name (e.g. user@host): no testbed can hold it
    f = state_dir(name) / "state.json"
    if not f.exists():
        return None
    return TestbedState(**json.loads(f.read_text()))


def _free_index() -> int:
    used = {st.index for st in _states()}
    for k in range(10, 250):
        # another CPCDRL_HOME may hold testbeds too: skip addresses whose veth exists
        if k not in used and _run(["ip", "link", "show", f"cpv{k}h"], check=False).returncode != 0:
            return k
    raise CpcdrlError("no free testbed address")


def _clear_leftovers(name: str) -> None:
    """Remove a namespace and cgroup of this name that a killed run left without state (its CPCDRL_HOME is gone)."""
    ns = f"cpcdrl-{check_name(name)}"
    if _netns_exists(ns):
        _signal({int(p) for p in _run(["ip", "netns", "pids", ns], check=False).stdout.split()}, signal.SIGKILL)
        _run(["ip", "netns", "del", ns], check=False)  # its veth end goes with it, and so does the host end
    cg = CGROUP_CPU / ns
    _signal(_throttle_pids(cg), signal.SIGKILL)  # its duty-cycle process lives outside the cgroup, named by it
    if cg.exists():
        _signal(_cgroup_pids(cg), signal.SIGKILL)
        _remove_cgroup(cg)


def _netns_exists(ns: str) -> bool:
    return (
        ns in _run(["ip", "netns", "list"], check=False).stdout.split()
    )  # whole names: "cpcdrl-pi" is not in "cpcdrl-pi2"


def _cgroup_pids(cg: Path) -> set[int]:
    return {int(p) for p in (cg / "cgroup.procs").read_text().split()} if (cg / "cgroup.procs").exists() else set()


def _signal(pids: set[int], sig: int) -> list[int]:
    """Send ``sig`` to each pid; returns those that were still there."""
    hit = []
    for p in sorted(pids):
        try:
            os.kill(p, sig)
            hit.append(p)
        except ProcessLookupError:
            pass
    return hit


def _remove_cgroup(cg: Path) -> bool:
    """rmdir the cgroup, retrying while its last processes exit."""
    for _ in range(20):
        try:
            cg.rmdir()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def provision_python(venv: Path, log=print) -> Path:
    """A venv with numpy and both edge runtimes for the device side, built from the host (which reaches PyPI)."""
    py = venv / "bin" / "python"
    if (
        py.exists()
        and subprocess.run([str(py), "-c", "import numpy, onnxruntime, ai_edge_litert"], capture_output=True).returncode
        == 0
    ):
        return py
    log(f"provisioning the device's Python at {venv} (numpy, onnxruntime, ai-edge-litert)...")
    if not py.exists():
        base = shutil.which("python3") or sys.executable
        _run([base, "-m", "venv", "--clear", str(venv)])
    _run([str(py), "-m", "pip", "install", "-q", "numpy", "onnxruntime", "ai-edge-litert"], timeout=900)
    return py


def up(
    name: str = "pi",
    cpu: float = 0.25,
    bandwidth: str = "200KB/s",
    python_venv: Path | None = None,
    log=print,
    throttle: str = "duty",
) -> TestbedState:
    """Bring up an emulated device: its own network namespace and shaped link, a slowed CPU, an sshd inside.

    Anything made is taken down again if a later step fails."""
    bps = _check_up(name, cpu, bandwidth, throttle)
    _clear_leftovers(name)
    k = _free_index()
    d = state_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    st = TestbedState(
        name=name,
        index=k,
        host_ip=f"198.18.{k}.1",
        device_ip=f"198.18.{k}.2",
        port=22,
        cpu=cpu,
        bandwidth_bytes_per_s=bps,
        user="root",
        dir=str(d),
        python="",
        host_veth=f"cpv{k}h",
        cgroup=str(CGROUP_CPU / f"cpcdrl-{name}"),
        throttle=throttle,
    )
    st.save()  # from here on, `down` can clean up whatever was made
    try:
        venv = python_venv or (cpcdrl_home() / "device-venv")
        st.python = str(provision_python(venv, log))
        ns = f"cpcdrl-{name}"
        _make_link(st, ns, _device_veth(st))
        _slow_cpu(st, d, log)
        _start_sshd(st, d, ns)
        st.save()
        _register(st)
        log(
            f"testbed {name!r} up: ssh {st.user}@{st.device_ip} (cpu {cpu} core, link {bps / 1e3:g} KB/s); device"
            f" python {st.python}"
        )
        return st
    except BaseException:
        down(name, quiet=True)
        raise


def _check_up(name: str, cpu: float, bandwidth: str, throttle: str) -> float:
    """Refuse, before anything is made, a testbed that cannot be brought up; its link rate in bytes per second."""
    check_name(name)  # first: the name becomes paths and shell arguments
    if throttle not in THROTTLES:
        raise CpcdrlError(f"--throttle {throttle}: expected one of {', '.join(THROTTLES)}")
    _preflight(throttle)
    if not 0.01 <= cpu <= (os.cpu_count() or 1):
        raise CpcdrlError(f"--cpu {cpu}: expected a share of one core, e.g. 0.25")
    if throttle == "duty" and cpu >= 1:
        raise CpcdrlError(f"--cpu {cpu}: a duty cycle slows one CPU; give a share below 1 or --throttle quota")
    if load_state(name) is not None:
        raise CpcdrlError(f"testbed {name!r} is already up (cpcdrl testbed down --name {name})")
    # every testbed runs on the last CPU, and a duty cycle takes the rest of it: two would slow each other
    others = [r["name"] for r in status() if throttle == "duty" or r["throttle"] == "duty"]
    if others:
        raise CpcdrlError(
            f"a duty-cycled testbed needs the device CPU to itself: take {others[0]!r} down first (cpcdrl testbed down"
            f" --name {others[0]})"
        )
    return parse_bandwidth(bandwidth)


def _make_link(st: TestbedState, ns: str, dv: str) -> None:
    """The namespace, a veth pair across it with the testbed's addresses, and the rate on both ends."""
    hv = st.host_veth
    _run(["ip", "netns", "add", ns])
    _run(["ip", "link", "add", hv, "type", "veth", "peer", "name", dv])
    _run(["ip", "link", "set", dv, "netns", ns])
    _run(["ip", "addr", "add", f"{st.host_ip}/24", "dev", hv])
    _run(["ip", "link", "set", hv, "up"])
    _run(["ip", "netns", "exec", ns, "ip", "addr", "add", f"{st.device_ip}/24", "dev", dv])
    _run(["ip", "netns", "exec", ns, "ip", "link", "set", dv, "up"])
    _run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
    for prefix, dev in (([], hv), (["ip", "netns", "exec", ns], dv)):
        _run([*prefix, "tc", "qdisc", "add", "dev", dev, "root", *_tbf(st.bandwidth_bytes_per_s)])


def _device_veth(st: TestbedState) -> str:
    """The veth end inside the namespace: the host end's name with ``d`` for ``h`` (``cpv<k>h`` / ``cpv<k>d``)."""
    return f"cpv{st.index}d"


def _tbf(bytes_per_s: float) -> list[str]:
    """The token-bucket filter of a link at ``bytes_per_s``: ``tc qdisc add|change ... root`` + these."""
    # a serial link, as near as tbf gets (no netem here): a one-frame bucket, drained at no more
    # than 1 % over the rate (peakrate), so after the link idles a request still leaves at the
    # rate. With a 16 KB burst a request that fit in the bucket left at veth speed (VGG16's 4.5 KB
    # int8 requests: -63 % "overhead"); now 4.3 KB sent and echoed back takes 32 ms of a serial 43
    rate, peak = f"{int(bytes_per_s * 8)}bit", f"{int(bytes_per_s * 8 * 1.01)}bit"
    frame = str(TBF_FRAME_BYTES)
    return ["tbf", "rate", rate, "burst", frame, "peakrate", peak, "mtu", frame, "latency", "200ms"]


def running(name: str) -> TestbedState:
    """The state of the testbed ``name``, or one line saying it is not up and how to start it."""
    st = load_state(check_name(name))
    if st is None:
        raise CpcdrlError(f"no testbed named {name!r} is up; start one with: cpcdrl testbed up --name {name}")
    return st


def set_rate(name: str, bytes_per_s: float) -> TestbedState:
    """Change a running testbed's link rate, both ways, in place (``tc qdisc change``: open connections stay up)."""
    if not bytes_per_s > 0 or bytes_per_s == float("inf"):
        raise CpcdrlError(f"link rate {bytes_per_s!r} must be a finite number of bytes per second > 0")
    if bytes_per_s * 8 >= 2**32:  # tc's rate is a 32-bit count of bits per second
        raise CpcdrlError(f"link rate {bytes_per_s / 1e6:g} MB/s is above what tc's rate takes (536 MB/s)")
    st = running(name)
    ns = f"cpcdrl-{st.name}"
    for prefix, dev in (([], st.host_veth), (["ip", "netns", "exec", ns], _device_veth(st))):
        _run([*prefix, "tc", "qdisc", "change", "dev", dev, "root", *_tbf(bytes_per_s)])
    st.bandwidth_bytes_per_s = bytes_per_s
    st.save()
    return st


def _slow_cpu(st: TestbedState, d: Path, log) -> None:
    """The device's cgroup on the last CPU, slowed by a CFS quota or by a duty cycle."""
    cg = Path(st.cgroup)
    cg.mkdir(exist_ok=True)
    (cg / "cpu.cfs_quota_us").write_text("-1")  # lift the old quota first: the kernel checks quota <= period's budget
    st.cpu_pin = (os.cpu_count() or 1) - 1  # the last CPU: the host's own work tends to start on CPU 0
    if st.throttle == "quota":
        st.cfs_period_us = cfs_period_us(st.cpu)
        (cg / "cpu.cfs_period_us").write_text(str(st.cfs_period_us))
        (cg / "cpu.cfs_quota_us").write_text(str(int(round(st.cpu * st.cfs_period_us))))
        return
    # in its windows the device comes first: a host task the balancer left on this CPU must not halve them
    (cg / "cpu.shares").write_text(str(MAX_CPU_SHARES))
    st.duty_period_us = DUTY_PERIOD_US
    st.duty_on_us, st.measured_share, st.calibration_steal, st.throttle_pid = _start_duty_cycle(
        cg, st.cpu, DUTY_PERIOD_US, st.cpu_pin, d
    )
    st.save()
    log(
        f"duty cycle: the device gets {st.duty_on_us:.1f} of every {DUTY_PERIOD_US} us; a busy loop measured"
        f" {st.measured_share:.3f} of a CPU"
        + (
            f" (of the {100 * (1 - st.calibration_steal):.0f} % the hypervisor left it)"
            if st.calibration_steal >= 0.01
            else ""
        )
    )


def _start_sshd(st: TestbedState, d: Path, ns: str) -> None:
    """The device's sshd, inside the namespace and the cgroup, with its own host key and one client key."""
    for key in ("host_key", "client_key"):
        if not (d / key).exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)])
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    (d / "sshd_config").write_text(
        f"Port {st.port}\nListenAddress {st.device_ip}\nHostKey {d / 'host_key'}\nAuthorizedKeysFile"
        f" {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\nUsePAM no\nStrictModes no\nPasswordAuthentication"
        " no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp"
        " /usr/lib/openssh/sftp-server\nLogLevel ERROR\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    enter = f"echo $$ > {shlex.quote(str(Path(st.cgroup) / 'cgroup.procs'))}"
    # enter the cgroup(s) first, then exec sshd inside the namespace: every session inherits them all
    _run(
        [
            "sh",
            "-c",
            f"{enter} && exec ip netns exec {shlex.quote(ns)} /usr/sbin/sshd -f {shlex.quote(str(d / 'sshd_config'))}",
        ],
        preexec_fn=lambda: os.sched_setaffinity(0, {st.cpu_pin or 0}),
    )
    # sshd creates its pid file before it writes the number: wait for the number, not the file
    for _ in range(100):
        st.sshd_pid = _read_pid(d / "sshd.pid")
        if st.sshd_pid:
            return
        time.sleep(0.1)
    raise CpcdrlError(f"sshd did not start inside the testbed (no pid in {d / 'sshd.pid'} after 10 s)")


def _start_duty_cycle(
    cg: Path, share: float, period_us: int, device_cpu: int, d: Path
) -> tuple[float, float, float, int]:
    """Calibrate and start the duty-cycle process (cpcdrl_deploy/throttle.py); returns (window_us, measured share,
    steal share, pid)."""
    cmd = [
        sys.executable,
        "-m",
        "cpcdrl_deploy.devices.throttle",
        str(cg),
        "--share",
        str(share),
        "--period-us",
        str(period_us),
        "--device-cpu",
        str(device_cpu),
    ]
    res = _run(cmd + ["--calibrate-only"], timeout=60)
    fields = dict(kv.split("=") for kv in res.stdout.split())
    window_us, measured, steal = (
        float(fields["window_us"]),
        float(fields["measured_share"]),
        float(fields["steal_share"]),
    )
    with open(d / "throttle.log", "ab") as logf:
        # its own session: it outlives `testbed up`, and a Ctrl-C in this terminal does not reach it
        proc = subprocess.Popen(
            cmd + ["--window-us", f"{window_us:.1f}"], stdout=logf, stderr=logf, start_new_session=True
        )
    time.sleep(0.2)
    if proc.poll() is not None:
        raise CpcdrlError(f"the duty-cycle process exited at once (see {d / 'throttle.log'})")
    return window_us, measured, steal, proc.pid


def _stop_duty_cycle(st: TestbedState) -> list[str]:
    """Stop the duty cycle (SIGTERM, then SIGKILL after 2.5 s)."""
    stopped = []
    if st.throttle_pid and _is_throttle(st.throttle_pid) and _signal({st.throttle_pid}, signal.SIGTERM):
        for _ in range(50):
            if not _is_throttle(st.throttle_pid):
                break
            time.sleep(0.05)
        else:
            _signal({st.throttle_pid}, signal.SIGKILL)
        stopped.append(f"process {st.throttle_pid} (duty cycle)")
    return stopped


def _cmdline(pid: int | str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore").split("\0")
    except OSError:
        return []


def _is_throttle(pid: int | str, cg: Path | None = None) -> bool:
    """Is ``pid`` a duty-cycle process (slowing the device in cgroup ``cg``, if given)?"""
    cmd = _cmdline(pid)
    return "cpcdrl_deploy.devices.throttle" in cmd and (cg is None or str(cg) in cmd)


def _throttle_pids(cg: Path) -> set[int]:
    """Duty-cycle processes for the device in ``cg`` (one a killed run left behind has no state file to name it)."""
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_throttle(p.name, cg)}


def _read_pid(path: Path) -> int:
    """The pid in ``path``; 0 while the file is missing, empty or half-written."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _register(st: TestbedState) -> None:
    """Write the host alias and its host key where cpcdrl's SSH layer looks."""
    home = cpcdrl_home()
    pub = (Path(st.dir) / "host_key.pub").read_text().split()
    _replace_block(home / "known_hosts", st.name, f"{st.device_ip} {pub[0]} {pub[1]}\n")
    _replace_block(
        home / "ssh_config",
        st.name,
        f"Host {st.name}\n  HostName {st.device_ip}\n  User {st.user}\n  Port {st.port}\n  IdentityFile"
        f" {Path(st.dir) / 'client_key'}\n",
    )


def _replace_block(path: Path, name: str, text: str | None) -> None:
    begin, end = f"# >>> cpcdrl testbed {name}\n", f"# <<< cpcdrl testbed {name}\n"
    old = path.read_text() if path.exists() else ""
    if begin in old:
        old = old[: old.index(begin)] + old[old.index(end) + len(end) :]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(old + (begin + text + end if text else ""))


def down(name: str = "pi", quiet: bool = False) -> list[str]:
    """Remove everything ``up`` made; returns what was removed."""
    st = load_state(check_name(name))
    if st is None:
        if quiet:
            return []
        raise CpcdrlError(f"no testbed named {name!r} is up")
    removed = []
    d = Path(st.dir)
    pid = st.sshd_pid or _read_pid(d / "sshd.pid")
    cg = Path(st.cgroup)
    removed += _stop_duty_cycle(st)
    removed += [f"process {p}" for p in _signal(({pid} if pid else set()) | _cgroup_pids(cg), signal.SIGTERM)]
    for _ in range(50):
        if not _cgroup_pids(cg):
            break
        time.sleep(0.1)
    if _run(["ip", "link", "show", st.host_veth], check=False).returncode == 0:
        _run(["ip", "link", "del", st.host_veth], check=False)
        removed.append(f"veth {st.host_veth}")
    ns = f"cpcdrl-{check_name(name)}"
    if _netns_exists(ns):
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(f"netns {ns}")
    if cg.exists() and _remove_cgroup(cg):
        removed.append(f"cgroup {cg}")
    home = cpcdrl_home()
    for f in ("known_hosts", "ssh_config"):
        if (home / f).exists():
            _replace_block(home / f, name, None)
    shutil.rmtree(d, ignore_errors=True)
    return removed


def host_cpus() -> set[int]:
    """The CPUs the host's own work (cloud server, local profiling) should run on: all but the duty-cycled devices'.

    A duty-cycled device's CPU belongs to a real-time spinner for 3/4 of every
    period; a host process the scheduler leaves there runs at a quarter of its
    speed, for as long as the scheduler leaves it there. Seen before this:
    the whole VGG16 timed 10.4 ms on this host with the testbed up and 9.2 ms
    with it down, minutes apart. With no such testbed up, every CPU.
    """
    cpus = set(range(os.cpu_count() or 1))
    held = {st.cpu_pin for st in _states() if st.throttle == "duty" and st.cpu_pin is not None}
    return (cpus - held) or cpus


def host_cpus_preexec() -> Callable[[], None]:
    """A ``preexec_fn`` that puts a child process on ``host_cpus()``, read now: no file I/O after fork."""
    return functools.partial(os.sched_setaffinity, 0, host_cpus())


@contextlib.contextmanager
def on_host_cpus() -> Iterator[None]:
    """The calling thread on ``host_cpus()`` for the block, then back where it was."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, host_cpus())
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _states() -> list[TestbedState]:
    root = cpcdrl_home() / "testbed"
    return [st for d in sorted(root.iterdir()) if (st := load_state(d.name)) is not None] if root.exists() else []


def status() -> list[dict[str, Any]]:
    out = []
    for st in _states():
        alive = st.sshd_pid > 0 and Path(f"/proc/{st.sshd_pid}").exists()
        row: dict[str, Any] = {**asdict(st), "sshd_running": alive}
        if st.throttle == "duty":
            row["duty_cycle_running"] = _is_throttle(st.throttle_pid)
        out.append(row)
    return out
