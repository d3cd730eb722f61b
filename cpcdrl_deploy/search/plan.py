"""The plan: what ``optimize`` chose, as a typed, versioned, validated artifact.

A plan file is JSON (``kind: cpcdrl-plan``, ``schema_version``); the pruned,
refitted weights the search scored sit beside it (``weights``: file name and
SHA-256), so export, deploy and evaluate load them instead of replaying the
refit. ``Plan.from_dict`` turns a (possibly hand-edited) document into typed
fields or one error line naming the first bad field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cpcdrl_deploy.compress.pruning import PruneConfig
from cpcdrl_deploy.compress.transfer import TRANSFERS
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import read_document
from cpcdrl_deploy.measure.runtimes import RUNTIMES
from cpcdrl_deploy.models.zoo import get_entry

PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PlanWeights:
    file: str  # a name beside the plan file
    sha256: str


@dataclass(frozen=True)
class Plan:
    """A feasible plan: cut after layer ``cut`` (0: all on the server, ``n_layers``: all on the edge), keep ratios of
    layers 1..cut."""

    model: str
    method: str
    checkpoint: str
    checkpoint_sha256: str | None
    n_layers: int
    cut: int
    ratios: tuple[float, ...]
    channels: tuple[int, ...]  # every layer's output channels after pruning: what a rebuild must reproduce
    data_source: str
    val_size: int | None
    calib_size: int | None
    seed: int
    prune: PruneConfig
    weights: PlanWeights | None
    latency_ms: dict[str, float]  # the optimiser's estimate, by part
    profiles: dict  # edge, cloud, link names as optimize was given them
    accuracy: dict  # a0_test, validation, test, ...
    transfer: str  # the cut tensor's encoding the plan was priced and scored with (wire.py); "fp32" in older plans
    runtime: str  # the head's runtime on the device it was priced with (runtimes.py); "onnxruntime" in older plans
    document: dict  # the whole JSON document: reports and manifests embed it as it was

    @property
    def pruned(self) -> bool:
        return any(r < 1.0 for r in self.ratios)

    @classmethod
    def from_dict(cls, d: dict, where: str = "plan") -> Plan:
        """Validate ``d`` (a feasible plan) and type it; raise CpcdrlError naming the first bad field."""
        validate_plan(d, where)
        data, pcfg, w = d["data"], d.get("prune") or {}, d.get("weights")
        defaults = PruneConfig()
        return cls(
            model=d["model"],
            method=str(d.get("method", "")),
            checkpoint=d["checkpoint"],
            checkpoint_sha256=d.get("checkpoint_sha256"),
            n_layers=d["n_layers"],
            cut=d["cut"],
            ratios=tuple(float(r) for r in d["ratios"]),
            channels=tuple(d["channels"]),
            data_source=data["source"],
            val_size=data.get("val_size"),
            calib_size=data.get("calib_size", pcfg.get("calibration_images")),
            seed=int(d.get("seed", 0)),
            prune=PruneConfig(
                importance=str(pcfg.get("importance", defaults.importance)),
                round_to=int(pcfg.get("round_to", defaults.round_to)),
                refit=bool(pcfg.get("refit", defaults.refit)),
            ),
            weights=PlanWeights(w["file"], w["sha256"]) if w is not None else None,
            latency_ms={k: float(v) for k, v in (d.get("latency_ms") or {}).items()},
            profiles=dict(d.get("profiles") or {}),
            accuracy=dict(d.get("accuracy") or {}),
            transfer=str(d.get("transfer", "fp32")),
            runtime=str(d.get("runtime", "onnxruntime")),
            document=d,
        )

    def to_dict(self) -> dict:
        return dict(self.document)


def load_plan(path: str | Path) -> Plan:
    """A plan file, validated: every field export and deploy use has the right type and range, or one error line."""
    d = read_document(path, "cpcdrl-plan", PLAN_SCHEMA_VERSION, "plan")
    p = Path(path)
    if not d.get("feasible"):
        raise CpcdrlError(f"{p}: method {d.get('method')} found no plan meeting the accuracy constraint")
    return Plan.from_dict(d, str(p))


def validate_plan(d: dict, where: str = "plan") -> None:
    """Check a (possibly hand-edited) feasible plan's fields; raise CpcdrlError naming the first bad one."""

    def bad(field: str, why: str) -> CpcdrlError:
        return CpcdrlError(f"{where}: field {field!r} {why}")

    def need(field: str, kind: type | tuple[type, ...], container: dict = d, name: str | None = None):
        if field not in container:
            raise bad(name or field, "is missing")
        v = container[field]
        if isinstance(v, bool) or not isinstance(v, kind):
            raise bad(
                name or field,
                f"must be {kind.__name__ if isinstance(kind, type) else ' or '.join(k.__name__ for k in kind)}, not"
                f" {type(v).__name__}",
            )
        return v

    model = need("model", str)
    try:
        get_entry(model)
    except CpcdrlError:
        raise bad("model", f"names no zoo model ({model!r})") from None
    need("checkpoint", str)
    sha = d.get("checkpoint_sha256")
    if sha is not None and (
        not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)
    ):
        raise bad("checkpoint_sha256", "must be 64 lowercase hex digits")
    n = need("n_layers", int)
    cut = need("cut", int)
    if not 0 <= cut <= n:
        raise bad("cut", f"must be in 0..{n}, not {cut}")
    ratios = need("ratios", list)
    if len(ratios) != cut or not all(
        isinstance(r, (int, float)) and not isinstance(r, bool) and 0.0 < r <= 1.0 for r in ratios
    ):
        raise bad("ratios", f"must be {cut} keep ratios in (0, 1]")
    channels = need("channels", list)
    if len(channels) != n or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
        raise bad("channels", f"must be {n} positive integers")
    data = need("data", dict)
    need("source", str, data, "data.source")
    for k in ("val_size", "calib_size"):
        if k in data and (not isinstance(data[k], int) or isinstance(data[k], bool) or data[k] < 1):
            raise bad(f"data.{k}", "must be a positive integer")
    if "seed" in d and (not isinstance(d["seed"], int) or isinstance(d["seed"], bool)):
        raise bad("seed", "must be an integer")
    prune_cfg = d.get("prune", {})
    if not isinstance(prune_cfg, dict):
        raise bad("prune", "must be an object")
    if "round_to" in prune_cfg and (not isinstance(prune_cfg["round_to"], int) or prune_cfg["round_to"] < 1):
        raise bad("prune.round_to", "must be a positive integer")
    if d.get("transfer", "fp32") not in TRANSFERS:
        raise bad("transfer", f"must be one of {', '.join(TRANSFERS)}")
    if d.get("runtime", "onnxruntime") not in RUNTIMES:
        raise bad("runtime", f"must be one of {', '.join(RUNTIMES)}")
    w = d.get("weights")
    if w is not None and not (
        isinstance(w, dict)
        and isinstance(w.get("file"), str)
        and "/" not in w["file"]
        and isinstance(w.get("sha256"), str)
    ):
        raise bad("weights", "must be {file: a name beside the plan, sha256}")
    lat = d.get("latency_ms", {})
    if not isinstance(lat, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in lat.values()
    ):
        raise bad("latency_ms", "must map parts to non-negative milliseconds")
