"""The plan as a typed artifact: written and read by one model, typed fields, older files upgraded by the loader."""

from __future__ import annotations

import json

import pytest

from cpcdrl_deploy.compress.pruning import PruneConfig
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.search.optimize import uniform_plan
from cpcdrl_deploy.search.plan import Plan, PlanRecord, PlanWeights, load_plan


def test_a_plan_round_trips_through_its_file(tmp_path) -> None:
    plan = uniform_plan("tinyvgg", 3, 0.5, None, "builtin", val_size=200, calib_size=64)
    plan = plan.model_copy(update={"weights": PlanWeights(file="plan.weights.pt", sha256="0" * 64)})
    p = load_plan(plan.save(tmp_path / "plan.json"))
    assert (p.model, p.cut, p.n_layers, p.ratios) == ("tinyvgg", 3, 7, [0.5, 0.5, 0.5]) and p.pruned
    assert p.calib_size == 64 and p.val_size == 200 and p.data_source == "builtin" and p.seed == 0
    assert isinstance(p.prune.config(), PruneConfig) and p.prune.round_to == PruneConfig().round_to
    assert p.weights == PlanWeights(file="plan.weights.pt", sha256="0" * 64)
    assert p == plan and len(p.channels) == 7
    d = json.loads((tmp_path / "plan.json").read_text())
    assert d["kind"] == "cpcdrl-plan" and d["schema_version"] == 1


def test_an_unreadable_version_names_the_command_that_remakes_it(tmp_path) -> None:
    d = uniform_plan("tinyvgg", 3, 0.5).to_data()
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({**d, "schema_version": 7}))
    with pytest.raises(CpcdrlError, match="schema_version 7 is not readable.*cpcdrl optimize"):
        load_plan(path)
    path.write_text(json.dumps({**d, "kind": "cpcdrl-export"}))
    with pytest.raises(CpcdrlError, match="not a cpcdrl-plan"):
        load_plan(path)


def test_an_older_plan_is_upgraded_by_the_loader(tmp_path) -> None:
    # plans from before data.calib_size, transfer and runtime: the loader fills them as those versions meant
    d = uniform_plan("tinyvgg", 3, 0.5, calib_size=64).to_data()
    del d["data"]["calib_size"], d["transfer"], d["runtime"]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(d))
    p = load_plan(path)
    assert p.calib_size == 64 and p.transfer == "fp32" and p.runtime == "onnxruntime"


def test_infeasible_records_and_unknown_fields() -> None:
    rec = PlanRecord.from_data({"kind": "cpcdrl-plan", "schema_version": 1, "model": "tinyvgg", "checkpoint": "x",
                                "feasible": False, "data": {"source": "builtin"}, "method": "greedy"})  # fmt: skip
    assert rec.cut is None and not rec.feasible
    with pytest.raises(CpcdrlError, match="field 'feasible' is false"):
        Plan.from_data(uniform_plan("tinyvgg", 2, 1.0).to_data() | {"feasible": False})
    with pytest.raises(CpcdrlError, match="field 'cutt' is not a known field"):
        Plan.from_data(uniform_plan("tinyvgg", 2, 1.0).to_data() | {"cutt": 2})


def test_unpruned_plan_is_not_pruned() -> None:
    assert not uniform_plan("tinyvgg", 2, 1.0, None, "builtin").pruned
