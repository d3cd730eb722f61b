"""Typed artifacts: the committed files load, the schemas in docs/ are the models', bad files are one line."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.deploy.reports import DeployReport
from cpcdrl_deploy.deploy.schemas import ARTIFACTS, schema_files
from cpcdrl_deploy.measure.profile import load_profile
from cpcdrl_deploy.search.plan import load_plan
from cpcdrl_deploy.search.result import OptimizeResult

REPO = Path(__file__).resolve().parents[1]


def _committed_documents() -> list[tuple[Path, dict]]:
    out = subprocess.run(["git", "ls-files", "*.json", "*.json.gz"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    docs = []
    for name in out.stdout.split():
        raw = (REPO / name).read_bytes()
        d = json.loads(gzip.decompress(raw) if name.endswith(".gz") else raw)
        if isinstance(d, dict):
            docs.append((REPO / name.removesuffix(".gz"), d))
    return docs


def test_every_committed_artifact_loads_with_todays_models() -> None:
    counts = {"plan": 0, "profile": 0, "deploy": 0, "optimize": 0}
    for path, d in _committed_documents():
        kind = d.get("kind")
        if kind == "cpcdrl-plan":
            load_plan(path)
            counts["plan"] += 1
        elif kind in ("analytic", "measured"):
            load_profile(path)
            counts["profile"] += 1
        elif kind == "cpcdrl-deploy-report":
            DeployReport.load(path)
            counts["deploy"] += 1
        elif path.name in ("results.json", "optimize.json") and "plans" in d:  # written before kind was (version 0)
            OptimizeResult.load(path)
            counts["optimize"] += 1
    assert all(n > 0 for n in counts.values()), counts


def test_docs_schemas_are_the_models_own() -> None:
    """docs/schemas/ is generated (cpcdrl schemas): a model changed without regenerating them fails here."""
    folder = REPO / "docs" / "schemas"
    files = schema_files()
    assert sorted(p.name for p in folder.glob("*.json")) == sorted(files), "run: cpcdrl schemas --out docs/schemas"
    for name, data in files.items():
        assert (folder / name).read_bytes() == data, f"{name} is stale; run: cpcdrl schemas --out docs/schemas"
    assert len(ARTIFACTS) == 7


def test_a_report_from_an_unknown_version_or_of_another_kind_is_one_line(tmp_path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"kind": "cpcdrl-deploy-report", "schema_version": 9}))
    with pytest.raises(CpcdrlError, match=r"schema_version 9 is not readable .*cpcdrl deploy"):
        DeployReport.load(path)
    path.write_text(json.dumps({"kind": "cpcdrl-plan", "schema_version": 1}))
    with pytest.raises(CpcdrlError, match="a 'cpcdrl-plan' document, not a cpcdrl-deploy-report one"):
        DeployReport.load(path)
    path.write_text("{not json")
    with pytest.raises(CpcdrlError, match="cannot read"):
        DeployReport.load(path)
    with pytest.raises(CpcdrlError, match="not found"):
        DeployReport.load(tmp_path / "missing.json")


def test_a_profile_table_with_a_bad_row_names_the_row(tmp_path) -> None:
    d = json.loads((REPO / "cpcdrl_deploy" / "assets" / "profiles" / "paper.json").read_text())
    d["kind"] = "measured"
    d["tables"] = {"m": {"grid": [1.0], "threads": 1, "weights": "w", "total_macs": 1, "layers": [{"index": 1}]}}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(d))
    with pytest.raises(CpcdrlError, match="field 'tables.m.layers.0.name' is missing"):
        load_profile(path)
