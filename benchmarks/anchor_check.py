"""Do the anchored tables predict *pruned* heads? Time each deployed plan's head here and set the profile's tables beside it.

    python benchmarks/deploy_experiment.py --resume   # once, so that the heads are exported
    python benchmarks/anchor_check.py                 # on the host that measured --profile

The tables predict a pruned head as the whole unpruned head at that cut, times
what the per-layer tables say pruning saves (TableLatencyModel). Timed on the
host that made --profile (no device, no link), this shows whether that ratio
holds for pruned heads, apart from any drift of the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from cpcdrl_deploy.deploy import shape_of
from cpcdrl_deploy.fileio import atomic_write_json
from cpcdrl_deploy.latency import build_latency_model
from cpcdrl_deploy.profiles import LinkProfile, load_profile
from cpcdrl_deploy.zoo import build_model
from profilers.ort_profiler import load_session, time_session

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(RESULTS / "profile" / "local.json"), help="a profile measured on this host")
    ap.add_argument("--deploy-dir", default=str(RESULTS / "deploy"))
    ap.add_argument("--models", default="mobilenet,vgg16")
    ap.add_argument("--passes", type=int, default=3, help="time every head this many times, one pass over all heads each (the spread is this VM's drift)")
    ap.add_argument("--out", default=str(RESULTS / "deploy" / "anchor_check.json"))
    args = ap.parse_args()
    prof = load_profile(args.profile)
    # edge role only: the link is never used, any will do
    table = build_latency_model(prof, prof, LinkProfile(1.0, 1.0))
    plain = dataclasses.replace(table, anchor=False)  # type: ignore[type-var]
    threads = {m: int(prof.tables[m].get("threads", 1)) for m in prof.tables}
    heads = []  # (model, plan, shape, session, input shape)
    for model in args.models.split(","):
        net = build_model(model)
        for plan_path in sorted((Path(args.deploy_dir) / model / "plans").glob("*.json")):
            plan = json.loads(plan_path.read_text())
            head = plan_path.parent.parent / plan["method"] / "export" / "head.onnx"
            if not plan.get("feasible") or plan["cut"] == 0 or not head.exists():
                continue
            shape, _ = shape_of(plan, net)
            sess = load_session(str(head), threads[model])
            x_shape = [1, *sess.get_inputs()[0].shape[1:]]
            time_session(sess, x_shape, 5, 1, 0.1)
            heads.append((model, plan, shape, sess, x_shape))
    times: list[list[float]] = [[] for _ in heads]
    for k in range(args.passes):
        for j, (_, _, _, sess, x_shape) in enumerate(heads):
            # as the profiler does: rounds of >= 100 ms, the faster of two kept
            times[j].append(min(time_session(sess, x_shape, 1, 10, 0.1)["mean_ms"] for _ in range(2)))
        print(f"pass {k + 1}/{args.passes} done", flush=True)
    rows = []
    for (model, plan, shape, _, _), ts in zip(heads, times):
        t, s = table.predict(model, shape).edge_ms, plain.predict(model, shape).edge_ms
        errs = [100.0 * (t - ms) / ms for ms in ts]
        rows.append({"model": model, "plan": plan["method"], "cut": plan["cut"], "head_macs": shape.edge_macs, "head_ms": ts, "table_ms": t,
                     "table_err_pct": errs, "plain_sum_ms": s})
        print(f"{model:9s} {plan['method']:13s} cut {plan['cut']:2d}  head here {min(ts):6.2f}-{max(ts):6.2f} ms   anchored table {t:6.2f}"
              f" ({min(errs):+.1f} to {max(errs):+.1f} %)   plain sum {s:6.2f}", flush=True)
    atomic_write_json(Path(args.out), {"profile": args.profile, "host": prof.name, "rows": rows})


if __name__ == "__main__":
    main()
