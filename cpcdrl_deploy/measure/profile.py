"""Device profiles: typed dataclasses <-> versioned JSON, units in field names.

A profile describes what a latency model needs about the hosts and the link.
``kind == "analytic"`` profiles give a compute rate per role (the paper's
F_e, F_c) and a link; measured profiles (``cpcdrl profile``) add per-layer
latency tables for the host that measured them.

``--edge NAME`` / ``--cloud NAME`` accept a file path, the name of a profile in
``./device_profiles/`` (where ``cpcdrl profile`` writes by default), or the name
of one shipped in the package (``paper`` is the paper's Sec. IV-A setting).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_json, existing, read_json

SCHEMA_VERSION = 1
KINDS = ("analytic", "measured")


def table_key(model: str, runtime: str = "onnxruntime") -> str:
    """Where a measured profile keeps ``model``'s tables for an edge ``runtime``: ONNX Runtime's under the model's
    name (as profiles always had them), another runtime's as ``model@runtime`` beside them."""
    return model if runtime == "onnxruntime" else f"{model}@{runtime}"


@dataclass(frozen=True)
class ComputeRate:
    """The paper's F: MACs the host executes per second (Eq. 5, 7)."""

    macs_per_s: float


@dataclass(frozen=True)
class LinkProfile:
    """The edge-cloud link. The paper uses one bandwidth B and no RTT."""

    uplink_bytes_per_s: float  # edge -> cloud (the cut tensor), Eq. 6
    downlink_bytes_per_s: float  # cloud -> edge (the result)
    rtt_ms: float = 0.0  # added once per request when anything is sent
    count_result_return: bool = False  # the paper ignores the result's return trip
    # what a KServe v2 request costs beyond bytes / uplink + RTT (HTTP framing, the runner's and the server's
    # request paths), added once per request; measured by profile's request probe (linkprobe.py), else 0
    request_overhead_ms: float = 0.0
    request_probe: dict | None = None  # that probe's points and fit, and the SSH uplink it replaced

    @property
    def per_request_ms(self) -> float:
        """What every request pays whatever its size: the RTT and the protocol's overhead."""
        return self.rtt_ms + self.request_overhead_ms


@dataclass
class Profile:
    name: str
    kind: str
    edge: ComputeRate | None = None  # rate when this profile plays the edge role
    cloud: ComputeRate | None = None  # rate when it plays the cloud role
    link: LinkProfile | None = None
    host: dict[str, Any] | None = None  # facts about the measuring host (measured kind)
    tables: dict[str, Any] = field(default_factory=dict)  # measured per-model tables
    notes: str = ""
    schema_version: int = SCHEMA_VERSION

    def compute_rate(self, role: str) -> ComputeRate:
        rate = self.edge if role == "edge" else self.cloud
        if rate is None:
            raise CpcdrlError(f"profile {self.name!r} has no compute rate for the {role} role")
        return rate

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"schema_version": d.pop("schema_version"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "profile") -> Profile:
        if not isinstance(d, dict):
            raise CpcdrlError(f"{source}: not a profile (expected a JSON object)")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise CpcdrlError(
                f"{source}: schema_version {version!r} is not supported (this cpcdrl reads {SCHEMA_VERSION})"
            )
        if d.get("kind") not in KINDS:
            raise CpcdrlError(f"{source}: kind must be one of {', '.join(KINDS)}, got {d.get('kind')!r}")
        try:
            return cls(
                name=str(d["name"]),
                kind=d["kind"],
                edge=ComputeRate(**d["edge"]) if d.get("edge") else None,
                cloud=ComputeRate(**d["cloud"]) if d.get("cloud") else None,
                link=LinkProfile(**d["link"]) if d.get("link") else None,
                host=d.get("host"),
                tables=d.get("tables") or {},
                notes=d.get("notes", ""),
            )
        except (KeyError, TypeError) as exc:
            raise CpcdrlError(f"{source}: malformed profile ({exc})") from None


USER_PROFILES = Path("device_profiles")  # relative to the working directory: `cpcdrl profile`'s default output folder


def _shipped() -> Path:
    return Path(str(resources.files("cpcdrl_deploy") / "assets" / "profiles"))


def builtin_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in _shipped().iterdir() if p.name.endswith(".json"))


def resolve_profile_path(name_or_path: str | Path) -> Path:
    p = existing(Path(name_or_path).expanduser())
    if p is not None:
        return p
    for folder in (USER_PROFILES, _shipped()):
        candidate = folder / f"{name_or_path}.json"
        if candidate.is_file():
            return candidate
    raise CpcdrlError(
        f"unknown profile {str(name_or_path)!r}: not a file, and not one of {', '.join(builtin_profiles())}"
    )


def load_profile(name_or_path: str | Path) -> Profile:
    path = resolve_profile_path(name_or_path)
    try:
        d = read_json(path)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise CpcdrlError(f"cannot read profile {path}: {exc}") from None
    if not isinstance(d, dict):
        raise CpcdrlError(f"{path}: malformed profile (not a JSON object)")
    return Profile.from_dict(d, str(path))


def save_profile(profile: Profile, path: str | Path) -> Path:
    return atomic_write_json(path, profile.to_dict())
