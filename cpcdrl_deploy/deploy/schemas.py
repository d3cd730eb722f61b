"""JSON Schemas of every artifact cpcdrl writes, generated from the models that read them (``docs/schemas/``).

``cpcdrl schemas --out docs/schemas`` rewrites them; a test checks the
committed files match the models, so the documentation cannot drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cpcdrl_deploy.core.artifact import Artifact
from cpcdrl_deploy.core.fileio import atomic_write_bytes
from cpcdrl_deploy.deploy.reports import BenchReport, DeployReport
from cpcdrl_deploy.measure.profile import Profile
from cpcdrl_deploy.search.plan import PlanRecord
from cpcdrl_deploy.search.planset import PlanSet
from cpcdrl_deploy.search.result import OptimizeResult
from cpcdrl_deploy.serving.manifest import ExportManifest

# file stem -> artifact: what `cpcdrl optimize --out` (a plan, or a set with --bandwidth-range), `profile`, `export`,
# `optimize --report`, `deploy`, `bench` write
ARTIFACTS: dict[str, type[Artifact]] = {
    "plan": PlanRecord,
    "planset": PlanSet,
    "profile": Profile,
    "export-manifest": ExportManifest,
    "optimize-result": OptimizeResult,
    "deploy-report": DeployReport,
    "bench-report": BenchReport,
}


def schema(cls: type[Artifact]) -> dict[str, Any]:
    """The artifact's JSON Schema, with what a reader needs to know on top: its kind and version."""
    s = cls.model_json_schema(mode="serialization")
    s["$comment"] = (
        f"kind {cls.KIND!r}, schema_version {cls.VERSION}; written by: {cls.REMAKE}"
        if cls.KIND
        else f"schema_version {cls.VERSION}; kind is the profile's own (analytic or measured); written by: {cls.REMAKE}"
    )
    return s


def schema_files() -> dict[str, bytes]:
    """File name -> the bytes ``write_schemas`` puts there."""
    return {
        f"{stem}.schema.json": (json.dumps(schema(cls), indent=2) + "\n").encode() for stem, cls in ARTIFACTS.items()
    }


def write_schemas(folder: str | Path) -> list[Path]:
    return [atomic_write_bytes(Path(folder) / name, data) for name, data in schema_files().items()]
