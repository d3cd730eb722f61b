"""Deploy some of deploy_experiment.py's plans again, as they are: does the speed probe follow the machine?

    cpcdrl testbed up                                                  # (root)
    python benchmarks/deploy_repeat.py --model mobilenet greedy edge-pruned cpcdrl edge-only

Same profiles, plans and request counts as the experiment; the reports go to
--out/<plan>/ and a summary (measured p50, unscaled and probe-scaled errors,
the edge probe's blocks) to --out/summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from deploy_experiment import request_count  # beside this file: the same number of requests per plan

from cpcdrl_deploy.deploy import DeployRequest, deploy
from cpcdrl_deploy.fileio import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plans", nargs="+", help="method names under benchmarks/results/deploy/MODEL/plans/")
    ap.add_argument("--model", default="mobilenet")
    ap.add_argument("--host", default="pi")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--out", default=str(RESULTS / "deploy" / "repeat"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    rows = []
    for name in args.plans:
        plan = RESULTS / "deploy" / args.model / "plans" / f"{name}.json"
        n = request_count(plan, 100, 4.0)  # deploy_experiment.py's defaults
        rep = deploy(DeployRequest(plan, edge=args.host, requests=n, data=args.data, out=out / args.model / name,
                                   edge_profile=str(RESULTS / "profile" / "pi.json"), cloud_profile=str(RESULTS / "profile" / "local.json")))
        sp = rep["speed_probe"].get("edge", {})
        row = {
            "model": args.model, "plan": name, "requests": n, "at": time.strftime("%H:%M:%SZ", time.gmtime()),
            "p50_ms": rep["measured"]["e2e_ms"]["p50"], "edge_p50_ms": rep["measured"]["edge_ms"]["p50"],
            "table_ms": rep["predicted"]["table"]["total_ms"], "table_err_pct": rep["prediction_error_pct"]["table"],
            "edge_factor": sp.get("factor"), "probe_blocks_ms": sp.get("block_means_ms"),
            "drift_ms": rep["predicted"].get("table_drift", {}).get("total_ms"), "drift_err_pct": rep["prediction_error_pct"].get("table_drift"),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    atomic_write_json(out / "summary.json", {"rows": rows})


if __name__ == "__main__":
    sys.exit(main())
