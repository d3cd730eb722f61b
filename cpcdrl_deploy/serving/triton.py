"""``cpcdrl serve DIR --engine triton``: the tails on NVIDIA Triton (through PyTriton) in a Python of its own.

Triton's Python backend stub loads the system's shared ``libpython``, so the
interpreter hosting PyTriton must be the one that library belongs to: a
Python built elsewhere (pyenv's 3.11.7 here, beside Debian's 3.11.2
library) fails at model load. So the engine (``triton_engine.py``, which
needs numpy, onnxruntime and nvidia-pytriton, not torch) runs in a
separate interpreter, ``--triton-python``, checked first
(``triton_python_problem``), and is told what to serve on stdin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.devices.testbed import host_cpus_preexec

ENGINE = Path(__file__).with_name("triton_engine.py")
DEFAULT_PYTHON = Path.home() / ".cpcdrl" / "triton-env" / "bin" / "python"
PYTHON_ENV = "CPCDRL_TRITON_PYTHON"
MAX_BATCH = 8  # rows per ONNX Runtime run that Triton's dynamic batcher may gather
QUEUE_DELAY_US = 500  # how long a request may wait for others to join its batch
SETUP = (
    "/usr/bin/python3 -m venv ~/.cpcdrl/triton-env && ~/.cpcdrl/triton-env/bin/pip install"
    " nvidia-pytriton==0.7.0 onnxruntime numpy"
)

# run in the candidate interpreter: the modules, and whether the libpython the dynamic linker finds for its
# soname (what Triton's stub will load) is this interpreter's own
_CHECK = r"""
import json, os, subprocess, sys, sysconfig
missing = []
for m in ("numpy", "onnxruntime", "pytriton"):
    try:
        __import__(m)
    except Exception as exc:
        missing.append(f"{m} ({type(exc).__name__})")
so = sysconfig.get_config_var("INSTSONAME") or ""
own = os.path.realpath(os.path.join(sysconfig.get_config_var("LIBDIR") or "", so))
found = None
try:
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
        if line.strip().startswith(so + " "):
            found = os.path.realpath(line.rsplit("=>", 1)[1].strip())
            break
except OSError:
    pass
print(json.dumps({"missing": missing, "shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")),
                  "own": own, "found": found, "version": sys.version.split()[0]}))
"""


def triton_python(given: str | None) -> str:
    """The interpreter to host Triton: ``--triton-python``, else $CPCDRL_TRITON_PYTHON, else ~/.cpcdrl/triton-env."""
    return given or os.environ.get(PYTHON_ENV) or str(DEFAULT_PYTHON)


def triton_python_problem(python: str) -> str | None:
    """Why ``python`` cannot host Triton's Python backend (one line, with the fix), or None."""
    fix = f"make one: {SETUP}, and pass --triton-python ~/.cpcdrl/triton-env/bin/python"
    if not Path(python).exists():
        return f"no Python for the Triton engine at {python}; {fix}"
    try:
        out = subprocess.run([python, "-c", _CHECK], capture_output=True, text=True, timeout=120)
        facts = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        return f"{python} could not be checked ({type(exc).__name__}); {fix}"
    if facts["missing"]:
        return f"{python} lacks {', '.join(facts['missing'])}; {fix}"
    if not facts["shared"] or facts["found"] != facts["own"]:
        return (
            f"{python} (Python {facts['version']}) cannot host Triton's Python backend: its stub would load"
            f" {facts['found'] or 'no shared libpython'}, not this interpreter's {facts['own']}; {fix}"
        )
    return None


class TritonServer:
    """The Triton engine as a child process, like ``session.CloudServer``: ``url`` once every model is ready."""

    def __init__(
        self,
        models: list[dict],
        python: str,
        host: str = "127.0.0.1",
        port: int = 8000,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        max_batch: int = MAX_BATCH,
        queue_delay_us: int = QUEUE_DELAY_US,
        threads: int = 1,
        start_timeout: float = 180.0,
    ) -> None:
        spec = {
            "models": models,
            "host": host,
            "http_port": port,
            "grpc_port": grpc_port if grpc_port is not None else port + 1,
            "metrics_port": metrics_port if metrics_port is not None else port + 2,
            "max_batch": max_batch,
            "queue_delay_us": queue_delay_us,
            "threads": threads,
        }
        self.proc = subprocess.Popen(
            [python, str(ENGINE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=host_cpus_preexec(),  # not on a duty-cycled testbed device's CPU
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(spec))
        self.proc.stdin.close()
        self.lines: list[str] = []
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(start_timeout) or not self.lines or not self.lines[-1].startswith("serving "):
            err = self._stderr_tail()
            self.stop()
            raise CpcdrlError(f"the Triton engine did not start: {err or f'no answer in {start_timeout:.0f} s'}")
        self.banner = self.lines[-1].strip()
        self.url = f"http://{host}:{spec['http_port']}"
        self.grpc = f"{host}:{spec['grpc_port']}"

    def _read(self, ready: threading.Event) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("serving "):
                ready.set()
        ready.set()  # ended before serving

    def _stderr_tail(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        lines = [x for x in self.proc.stderr.read().strip().splitlines() if x.strip()]
        return lines[-1] if lines else f"exit {self.proc.returncode}"

    def stop(self) -> dict:
        """Stop the engine; the batch sizes each model ran (``{model: {size: runs}}``) where it said."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for line in reversed(self.lines):
            if line.startswith("{"):
                try:
                    return json.loads(line)["batch_sizes"]
                except (ValueError, KeyError):
                    break
        return {}


def tail_specs(export_dir: Path | list[Path]) -> list[dict]:
    """What the engine serves: each tail of an export (or plan-set export) under the embedded server's names."""
    from cpcdrl_deploy.serving.server import served_tails

    return [
        {
            "name": name,
            "path": str(path.resolve()),
            "inputs": [t.model_dump() for t in tail.inputs],
            "outputs": [t.model_dump() for t in tail.outputs],
        }
        for name, path, tail in served_tails(export_dir)
    ]
