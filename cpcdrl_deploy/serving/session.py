"""A local serving session: the tail server as a child process, the edge runner uploaded and run on a device.

What ``deploy``, ``bench`` and the request probe share: start ``cpcdrl serve``
on an address the device reaches, with a fresh bearer token; upload the
runner, heads and inputs; run it; stop and remove everything whatever
happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.devices.remote import Device
from cpcdrl_deploy.devices.testbed import host_cpus_preexec, load_state
from cpcdrl_deploy.serving.manifest import ModelFile
from cpcdrl_deploy.serving.server import served_names

ONDEVICE = Path(__file__).resolve().parents[1] / "ondevice"
RUNNER = ONDEVICE / "runner.py"
# uploaded side by side: the runner imports the datatype table, the link estimate and the frames' preparation
RUNNER_FILES = (RUNNER, ONDEVICE / "datatypes.py", ONDEVICE / "adapt.py", ONDEVICE / "prepare.py")


def upload_inputs(dev: Device, inputs: Path, remote_dir: str) -> list[str]:
    """The images (``inputs.npy``, with ``inputs.json`` beside it when they are frames to prepare) into
    ``remote_dir``; the runner's arguments that name them."""
    dev.put(inputs, f"{remote_dir}/inputs.npy")
    args = [f"--inputs {shlex.quote(remote_dir + '/inputs.npy')}"]
    if (spec := inputs.with_suffix(".json")).exists():
        dev.put(spec, f"{remote_dir}/inputs.json")
        args.append(f"--preprocess {shlex.quote(remote_dir + '/inputs.json')}")
    return args


def upload_runner(dev: Device, remote_dir: str) -> None:
    """The edge runner and the files it imports, into ``remote_dir`` on the device."""
    for f in RUNNER_FILES:
        dev.put(f, f"{remote_dir}/{f.name}")


Log = Callable[[str], None]


class CloudServer:
    """The tail server as a child process (so it can be stopped, or killed, like a real one)."""

    def __init__(
        self,
        export_dir: Path | list[Path],
        host: str,
        token: str,
        port: int = 0,
        threads: int = 1,
        start_timeout: float = 60.0,
        extra_args: list[str] | None = None,
    ) -> None:
        env = dict(os.environ, CPCDRL_TOKEN=token)
        dirs = [str(d) for d in (export_dir if isinstance(export_dir, list) else [export_dir])]
        cmd = [
            sys.executable,
            "-m",
            "cpcdrl_deploy.serving.server",
            *dirs,
            "--host",
            host,
            "--port",
            str(port),
            "--threads",
            str(threads),
            *(extra_args or []),
        ]
        # the cloud host must not share a duty-cycled device's CPU (testbed.host_cpus)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, preexec_fn=host_cpus_preexec()
        )
        line: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None  # stdout=PIPE
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(start_timeout)
        if not line or not line[0].startswith("serving "):
            self.stop()
            err = (self.proc.stderr.read() if self.proc.stderr else "").strip().splitlines()
            raise CpcdrlError(
                f"the cloud server did not start: {err[-1] if err else f'no answer in {start_timeout:.0f} s'}"
            )
        self.url = line[0].split(" on ", 1)[1].split()[0]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def count_requests(server: CloudServer | None, files: dict[str, ModelFile], token: str, n: int, tick: Ticker):
    """While the edge runs its requests, tick the number the server has answered (its stats, polled twice a second).

    The runner's own output arrives only when it ends; the server is the
    one place that sees requests as they happen. Nothing is polled when no
    one draws the bar (scripts, --format json), so measurements stay alone.
    """
    if server is None or tick is no_ticker:
        yield
        return
    import urllib.request

    stop = threading.Event()
    url = f"{server.url}/v2/models/{files['tail'].model_name}/stats"

    def poll() -> None:
        while not stop.wait(0.5):
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}), timeout=2
                ) as r:
                    tick(
                        "requests answered by the server",
                        min(n, json.loads(r.read())["model_stats"][0]["inference_count"]),
                        n,
                    )
            except (OSError, ValueError, KeyError, IndexError):
                pass  # a progress bar is not worth failing a deploy over

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(3)


def run_edge_runner(dev: Device, remote_dir: str, args: list[str], token: str, budget_s: float) -> dict:
    """Run the uploaded edge runner with ``args`` and return its report; one error line if it fails or leaves none.

    The server's token travels on stdin, not the command line (visible in ps on the device).
    """
    cmd = (
        f"read -r CPCDRL_TOKEN; export CPCDRL_TOKEN; {shlex.quote(dev.python)}"
        f" {shlex.quote(remote_dir + '/runner.py')} " + " ".join(args)
    )
    rc, stdout, stderr = dev.run(cmd, timeout=budget_s, stdin=(token + "\n").encode())
    if rc not in (0, 1):
        why = (stderr or stdout).strip().splitlines()
        raise CpcdrlError(f"edge runner failed on {dev.name}: {why[-1] if why else f'exit {rc}'}")
    rc2, report_text, err2 = dev.run(f"cat {shlex.quote(remote_dir + '/report.json')}", timeout=60)
    if rc2 != 0:
        raise CpcdrlError(f"no runner report on {dev.name}: {err2.strip()}")
    return json.loads(report_text)


@dataclass(frozen=True)
class InterleavedPlan:
    """One plan of an interleaved run on the device: its head file (None: all on the cloud), its export's tail folder
    (None: all on the edge)."""

    id: str
    head: Path | None
    tail_dir: Path | None
    output: str | None  # the tail's output name


def run_interleaved(
    dev: Device,
    bind: str,
    plans: Sequence[InterleavedPlan],
    inputs: Path,
    runner_args: list[str],
    budget_s: float,
    log: Log = lambda s: None,
    close: bool = True,
    before_run: Callable[[], None] | None = None,
) -> dict:
    """Serve every tail from one server, upload every head and the runner, run the runner's bench mode; the runner's
    report.

    What ``bench`` and the request probe share: the device sets up, runs
    ``edge_runner.run_bench`` (``runner_args``: its timing options) and is
    cleaned up whatever happens; ``close``: also close the connection.
    ``before_run``: called once everything is uploaded and served, right
    before the runner starts (``bench --profile-before-rounds``).
    """
    with plans_on_device(dev, bind, plans, inputs, log, close) as up:
        args = [f"--bench {shlex.quote(up.put_json(dev, 'bench-plans.json', up.spec))}", *up.args(), *runner_args]
        if before_run is not None:
            before_run()
        return run_edge_runner(dev, up.remote_dir, args, up.token, budget_s)


@dataclass
class OnDevice:
    """Plans set up for the edge runner: its folder on the device, the server, and each plan as the runner takes it
    ({"id", "head" on the device or None, "model" served or None, "output"})."""

    remote_dir: str
    token: str
    server: CloudServer | None
    spec: list[dict]
    input_args: list[str]

    def put_json(self, dev: Device, name: str, obj: object) -> str:
        """``obj`` as JSON in the runner's folder on the device; its path there."""
        with tempfile.TemporaryDirectory(prefix="cpcdrl-spec-") as tmp:  # device paths: no place in the results
            local = Path(tmp) / name
            local.write_text(json.dumps(obj))
            dev.put(local, f"{self.remote_dir}/{name}")
        return f"{self.remote_dir}/{name}"

    def args(self) -> list[str]:
        """The runner's arguments every mode shares: the images, the report, the server."""
        out = [*self.input_args, f"--out {shlex.quote(self.remote_dir + '/report.json')}"]
        return out + ([f"--url {self.server.url}"] if self.server is not None else [])


@contextlib.contextmanager
def plans_on_device(
    dev: Device, bind: str, plans: Sequence[InterleavedPlan], inputs: Path, log: Log = lambda s: None, close=True
):
    """Serve every tail from one server, upload every head, the runner and the images; removed whatever happens."""
    token = secrets.token_urlsafe(24)
    server: CloudServer | None = None
    remote_dir = None
    try:
        remote_dir = dev.mkdtemp()
        upload_runner(dev, remote_dir)
        input_args = upload_inputs(dev, inputs, remote_dir)
        tails = [p for p in plans if p.tail_dir is not None]
        if tails:
            server = CloudServer([p.tail_dir for p in tails], bind, token)  # type: ignore[misc]
            log(f"cloud server {server.url}: {len(tails)} tails")
        names = served_names([p.tail_dir for p in tails]) if tails else []
        served = {p.id: name for p, name in zip(tails, names)}
        spec = []
        for p in plans:
            head = None
            if p.head is not None:
                head = f"{remote_dir}/{p.id}_{p.head.name}"
                dev.put(p.head, head)
            spec.append({"id": p.id, "head": head, "model": served.get(p.id), "output": p.output})
        yield OnDevice(remote_dir, token, server, spec, input_args)
    finally:
        tear_down(dev, server, remote_dir, close=close)


def tear_down(dev: Device, server: CloudServer | None, remote_dir: str | None, close: bool = True) -> None:
    """Stop the server, remove the device's working folder, close the connection (unless the caller still needs it);
    cleanup never hides the real error."""
    if server is not None:
        server.stop()
    if remote_dir is not None:
        try:
            dev.remove(remote_dir)
        except Exception:  # noqa: BLE001 - cleanup must not hide the real error
            pass
    if close:
        dev.close()


def server_address(edge: str, bind: str | None) -> str:
    """Where the tail server listens: ``bind``, else loopback for a local edge, else the testbed's link address."""
    if bind:
        if bind in ("0.0.0.0", "::"):
            raise CpcdrlError("--bind needs the concrete address the edge connects to, not a wildcard")
        return bind
    if edge == "local":
        return "127.0.0.1"
    tb = load_state(edge)
    if tb is not None:
        return tb.host_ip  # the testbed's host end of its veth link
    raise CpcdrlError(f"the server binds to loopback unless told: pass --bind ADDRESS that {edge} can reach")
