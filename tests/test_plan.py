"""The plan as a typed artifact: from_dict types every field export and deploy read, and round-trips the document."""

from __future__ import annotations

import json

import pytest

from cpcdrl_deploy.compress.pruning import PruneConfig
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.search.optimize import uniform_plan
from cpcdrl_deploy.search.plan import Plan, PlanWeights, load_plan


def test_from_dict_types_the_fields(tmp_path) -> None:
    d = uniform_plan("tinyvgg", 3, 0.5, None, "builtin", val_size=200, calib_size=64)
    d["weights"] = {"file": "plan.weights.pt", "sha256": "0" * 64}
    p = Plan.from_dict(d)
    assert (p.model, p.cut, p.n_layers, p.ratios) == ("tinyvgg", 3, 7, (0.5, 0.5, 0.5)) and p.pruned
    assert p.calib_size == 64 and p.val_size == 200 and p.data_source == "builtin" and p.seed == 0
    assert isinstance(p.prune, PruneConfig) and p.prune.round_to == d["prune"]["round_to"]
    assert p.weights == PlanWeights("plan.weights.pt", "0" * 64)
    assert p.to_dict() == d and len(p.channels) == 7
    # the file form: a kind and a schema version are required
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({k: v for k, v in d.items() if k != "schema_version"}))
    with pytest.raises(CpcdrlError, match="schema"):
        load_plan(path)


def test_unpruned_plan_is_not_pruned() -> None:
    assert not Plan.from_dict(uniform_plan("tinyvgg", 2, 1.0, None, "builtin")).pruned
