"""Device access behind one small interface: run a command, upload a file, remove a directory.

``LocalDevice`` runs on this machine; ``SSHDevice`` goes through paramiko with
the host key verified against ``~/.ssh/known_hosts`` and
``~/.cpcdrl/known_hosts``. An unknown key is refused with its fingerprint;
trusting it takes an explicit ``trust_new_host_key=True`` (``--trust-host-key``),
which records it in ``~/.cpcdrl/known_hosts``. No password is ever stored.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.devices.testbed import cpcdrl_home, host_cpus_preexec, load_state


@dataclass(frozen=True)
class HostSpec:
    alias: str
    hostname: str
    port: int
    user: str | None
    identity_files: tuple[str, ...]
    python: str  # the device-side interpreter with numpy + a runtime (onnxruntime or ai-edge-litert)


class Device(Protocol):
    name: str
    python: str

    def run(self, command: str, timeout: float = 600.0, stdin: bytes | None = None) -> tuple[int, str, str]: ...

    def put(self, local: Path, remote: str) -> None: ...

    def mkdtemp(self) -> str: ...

    def remove(self, path: str) -> None: ...

    def close(self) -> None: ...


class LocalDevice:
    """This machine, as a device (the cloud host, or ``--host local``)."""

    def __init__(self, python: str | None = None) -> None:
        self.name = "local"
        self.python = python or sys.executable

    def run(self, command: str, timeout: float = 600.0, stdin: bytes | None = None) -> tuple[int, str, str]:
        # off any duty-cycled testbed's CPU: this machine plays the cloud (or an unthrottled device);
        # in its own session, so that a time-out kills everything the command started, not only the shell
        p = subprocess.Popen(
            command,
            shell=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=host_cpus_preexec(),
            start_new_session=True,
        )
        try:
            out, err = p.communicate(input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise CpcdrlError(f"local command timed out after {timeout:g} s") from None
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def put(self, local: Path, remote: str) -> None:
        import shutil

        shutil.copyfile(local, remote)

    def mkdtemp(self) -> str:
        import tempfile

        return tempfile.mkdtemp(prefix="cpcdrl-")

    def remove(self, path: str) -> None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        pass


def resolve_host(host: str, python: str | None = None) -> HostSpec:
    """An alias from ~/.ssh/config or ~/.cpcdrl/ssh_config, or ``user@host[:port]``."""
    for cfg_path in (Path.home() / ".ssh" / "config", cpcdrl_home() / "ssh_config"):
        if not cfg_path.exists():
            continue
        cfg = paramiko.SSHConfig.from_path(str(cfg_path))
        if host in cfg.get_hostnames():
            entry = cfg.lookup(host)
            tb = load_state(host)
            return HostSpec(
                alias=host,
                hostname=entry.get("hostname", host),
                port=int(entry.get("port", 22)),
                user=entry.get("user"),
                identity_files=tuple(entry.get("identityfile", [])),
                python=python or (tb.python if tb else "python3"),
            )
    user, _, rest = host.rpartition("@")
    hostname, _, port = rest.partition(":")
    if not hostname:
        raise CpcdrlError(f"cannot read host {host!r}: use an ssh_config alias or user@host[:port]")
    try:
        port_n = int(port) if port else 22
    except ValueError:
        raise CpcdrlError(f"bad port in {host!r}") from None
    return HostSpec(host, hostname, port_n, user or None, (), python or "python3")


def _known_host_keys() -> paramiko.HostKeys:
    """Every key the SSH client trusts: the user's ``~/.ssh/known_hosts`` and cpcdrl's own."""
    keys = paramiko.HostKeys()
    for f in (Path("~/.ssh/known_hosts").expanduser(), cpcdrl_home() / "known_hosts"):
        if f.exists():
            keys.load(str(f))
    return keys


def fingerprint(key: paramiko.PKey) -> str:
    """``ssh-ed25519 SHA256:...``, as ``ssh-keygen -lf`` prints it."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def remote_key(spec: HostSpec, timeout: float) -> paramiko.PKey:
    """The key the host offers, fetched without authenticating."""
    sock = socket.create_connection((spec.hostname, spec.port), timeout=timeout)
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=timeout)
        return t.get_remote_server_key()
    finally:
        t.close()


def _offered_fingerprint(spec: HostSpec, timeout: float) -> str:
    try:
        return fingerprint(remote_key(spec, timeout))
    except Exception:  # noqa: BLE001 - the fingerprint only decorates an error that is raised anyway
        return "fingerprint unavailable"


def trust_on_first_use(spec: HostSpec, key_name: str, timeout: float, known: paramiko.HostKeys) -> None:
    """Record the host's key only when no key is known for it; a changed key is never replaced.

    ``known`` holds every key the client loaded (system and ours). The
    fingerprint printed is that of the very key object saved.
    """
    key = remote_key(spec, timeout)
    entry = known.lookup(key_name)
    if entry:
        if entry.get(key.get_name()) == key:
            return  # already trusted: nothing to record
        old = next(iter(entry.values()))
        raise CpcdrlError(
            f"host key for {spec.alias} ({key_name}) has CHANGED: known {fingerprint(old)}, offered {fingerprint(key)};"
            " --trust-host-key only adds keys for new hosts: if the change is expected, remove the old entry from"
            " known_hosts first"
        )
    path = cpcdrl_home() / "known_hosts"
    hk = paramiko.HostKeys(str(path)) if path.exists() else paramiko.HostKeys()
    hk.add(key_name, key.get_name(), key)
    path.parent.mkdir(parents=True, exist_ok=True)
    hk.save(str(path))
    print(f"trusted {key_name} {fingerprint(key)} (saved to {path})", file=sys.stderr)


def _connect_error(exc: Exception, spec: HostSpec, timeout: float) -> CpcdrlError:
    """One line for each way an SSH connection fails."""
    where = f"{spec.alias} ({spec.hostname}:{spec.port})"
    if isinstance(exc, paramiko.BadHostKeyException):
        return CpcdrlError(
            f"host key for {where} has CHANGED: known {fingerprint(exc.expected_key)}, "
            f"offered {fingerprint(exc.key)}; refusing to connect (possible man-in-the-middle)"
        )
    if isinstance(exc, paramiko.SSHException):
        msg = str(exc)
        if "not found in known_hosts" in msg or "Unknown server" in msg:
            fp = _offered_fingerprint(spec, timeout)
            return CpcdrlError(f"unknown host key for {where}, {fp}; check it, then rerun with --trust-host-key")
        if isinstance(exc, paramiko.AuthenticationException) or "authentication methods" in msg:
            return CpcdrlError(
                f"authentication to {spec.alias} ({spec.user}@{spec.hostname}:{spec.port}) failed: {msg}"
            )
        if "banner" in msg:
            return CpcdrlError(f"cannot reach {where}: no SSH server answered ({msg})")
        return CpcdrlError(f"SSH to {spec.alias} failed: {msg}")
    if isinstance(exc, TimeoutError):
        return CpcdrlError(f"cannot reach {where}: timed out after {timeout:g} s")
    assert isinstance(exc, OSError)
    return CpcdrlError(f"cannot reach {where}: {exc.strerror or exc}")


def open_client(spec: HostSpec, timeout: float = 10.0, trust_new_host_key: bool = False) -> paramiko.SSHClient:
    """A connected paramiko client; the host key checked against every known_hosts (RejectPolicy)."""
    client = paramiko.SSHClient()
    client.load_system_host_keys()
    ours = cpcdrl_home() / "known_hosts"
    if ours.exists():
        client.load_host_keys(str(ours))  # also where trusted keys are saved
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key_name = spec.hostname if spec.port == 22 else f"[{spec.hostname}]:{spec.port}"
    try:
        if trust_new_host_key:
            trust_on_first_use(spec, key_name, timeout, _known_host_keys())
            client.load_host_keys(str(ours))
        client.connect(
            spec.hostname,
            port=spec.port,
            username=spec.user,
            key_filename=list(spec.identity_files) or None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=not spec.identity_files,
            look_for_keys=not spec.identity_files,
        )
    except (paramiko.SSHException, OSError) as exc:  # TimeoutError is an OSError
        raise _connect_error(exc, spec, timeout) from None
    return client


def echo_rtt_ms(transport: paramiko.Transport, name: str, samples: int = 7) -> float:
    """Median round trip of one byte through a running ``cat``: the link's RTT, without process start-up."""
    chan = transport.open_session(timeout=30)
    # the first byte waits for ``cat`` to start, which on a device at a small CPU share
    # (1/16 of a core) takes seconds; the echoes after it are the link's round trips
    chan.settimeout(60)
    chan.exec_command("cat")
    times = []
    try:
        for i in range(samples + 1):
            t0 = time.perf_counter()
            chan.sendall(b"x")
            if chan.recv(1) != b"x":
                raise CpcdrlError(f"echo test to {name} failed: the device did not echo the byte back")
            if i:
                times.append((time.perf_counter() - t0) * 1000.0)
            chan.settimeout(10)
    except OSError as exc:
        # socket.timeout has an empty message: name the exception instead of ending on a colon
        raise CpcdrlError(f"echo test to {name} failed: {str(exc) or type(exc).__name__}") from None
    finally:
        chan.close()
    return statistics.median(times)


def _stream(chan: paramiko.Channel, n_bytes: int, upload: bool, name: str) -> tuple[int, float]:
    """(bytes moved, seconds) once the device's process has proved it is running."""
    if upload:
        t0 = time.perf_counter()
        chan.sendall(b"x")
        got = 0
        while got < n_bytes:
            chunk = chan.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        return got, time.perf_counter() - t0
    chan.sendall(b"x")
    if chan.recv(1) != b"x":
        raise CpcdrlError(f"link test to {name} failed")
    t0 = time.perf_counter()
    chan.sendall(b"\0" * n_bytes)
    got = n_bytes if chan.recv(1) == b"\n" else 0
    return got, time.perf_counter() - t0


def stream_s(transport: paramiko.Transport, name: str, n_bytes: int, upload: bool) -> float:
    """Seconds to move ``n_bytes`` through a process that is already running on the device.

    A one-byte handshake first proves the process is up, so neither the SSH session nor process
    start-up (slow on a quota-limited device, and variable) is charged to the link. ``upload``
    means device -> host (the cut tensor's direction); otherwise host -> device, which the
    device acknowledges with one byte once it has read everything.
    """
    # ``head -c 1`` reads the single handshake byte: nothing else is in the pipe yet to over-read
    cmd = (
        f"head -c 1 >/dev/null; head -c {n_bytes} /dev/zero"
        if upload
        else f"head -c 1; head -c {n_bytes} >/dev/null; echo"
    )
    chan = transport.open_session(timeout=30)
    chan.settimeout(120)
    try:
        chan.exec_command(cmd)
        got, elapsed = _stream(chan, n_bytes, upload, name)
    except OSError as exc:
        raise CpcdrlError(f"link test to {name} failed: {exc}") from None
    finally:
        chan.close()
    if got != n_bytes:
        raise CpcdrlError(f"link test to {name} failed: {got} of {n_bytes} bytes")
    return elapsed


def _finished(chan: paramiko.Channel) -> bool:
    """The command exited and everything it wrote was read: exit status can arrive before the last data, so EOF too."""
    return chan.exit_status_ready() and chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready()


def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    while chan.recv_ready():
        out += chan.recv(65536)
    while chan.recv_stderr_ready():
        err += chan.recv_stderr(65536)


class SSHDevice:
    """A device over SSH (paramiko). Every network call has a time-out."""

    def __init__(self, spec: HostSpec, connect_timeout: float = 10.0, trust_new_host_key: bool = False) -> None:
        self.name = spec.alias
        self.python = spec.python
        self.spec = spec
        self.client = open_client(spec, connect_timeout, trust_new_host_key)
        self._sftp: paramiko.SFTPClient | None = None

    def _transport(self, active: bool = True) -> paramiko.Transport:
        transport = self.client.get_transport()
        if transport is None or (active and not transport.is_active()):
            raise CpcdrlError(f"connection to {self.name} lost")
        return transport

    def run(self, command: str, timeout: float = 600.0, stdin: bytes | None = None) -> tuple[int, str, str]:
        """Run ``command``; never blocks past ``timeout`` (polls exit_status_ready)."""
        transport = self._transport()
        try:
            chan = transport.open_session(timeout=30)
            chan.settimeout(timeout)
            chan.exec_command(remote_command(command, timeout))
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                _drain(chan, out, err)
                if _finished(chan):
                    break
                if time.monotonic() > deadline:
                    chan.close()
                    raise CpcdrlError(f"command on {self.name} timed out after {timeout:g} s")
                self._transport()
                time.sleep(0.005)
            return chan.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise CpcdrlError(f"connection to {self.name} lost: {exc}") from None

    def echo_rtt_ms(self, samples: int = 7) -> float:
        return echo_rtt_ms(self._transport(active=False), self.name, samples)

    def stream_s(self, n_bytes: int, upload: bool) -> float:
        return stream_s(self._transport(active=False), self.name, n_bytes, upload)

    def put(self, local: Path, remote: str) -> None:
        """Upload to a temporary name, then rename: the device never sees half a file."""
        try:
            if self._sftp is None:
                self._sftp = self.client.open_sftp()
            tmp = remote + ".part"
            self._sftp.put(str(local), tmp)
            self._sftp.posix_rename(tmp, remote)
        except (OSError, EOFError) as exc:
            raise CpcdrlError(f"upload to {self.name} failed: {exc}") from None

    def mkdtemp(self) -> str:
        rc, out, err = self.run("mktemp -d /tmp/cpcdrl-XXXXXX", timeout=30)
        if rc != 0:
            raise CpcdrlError(f"cannot make a temporary directory on {self.name}: {err.strip()}")
        return checked_tempdir(out, self.name)

    def remove(self, path: str) -> None:
        if path.startswith("/tmp/cpcdrl-"):
            try:
                self.run(f"rm -rf {shlex.quote(path)}", timeout=30)
            except CpcdrlError:
                pass

    def close(self) -> None:
        try:
            if self._sftp is not None:
                self._sftp.close()
        finally:
            self.client.close()


TEMPDIR_RE = re.compile(r"/tmp/cpcdrl-[A-Za-z0-9]{6,}")


def checked_tempdir(out: str, name: str) -> str:
    """The directory ``mktemp`` printed, found among any other lines (a login banner); refused if it is not one."""
    dirs = [line.strip() for line in out.splitlines() if TEMPDIR_RE.fullmatch(line.strip())]
    if len(dirs) != 1:
        raise CpcdrlError(f"{name}: mktemp answered {out.strip()[:200]!r}, not one /tmp/cpcdrl-XXXXXX directory")
    return dirs[0]


def remote_command(command: str, timeout: float) -> str:
    """``command`` under coreutils ``timeout`` on the device: when our deadline passes, its whole process group is
    killed there too."""
    return f"timeout -k 5 {int(math.ceil(timeout)) + 1} sh -c {shlex.quote(command)}"


def connect(host: str, python: str | None = None, trust_host_key: bool = False, timeout: float = 10.0) -> Device:
    if host == "local":
        return LocalDevice(python)
    return SSHDevice(resolve_host(host, python), timeout, trust_host_key)
