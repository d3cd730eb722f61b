"""Deployed vs predicted latency on the emulated Pi, for the plan of every method, both CIFAR models.

    python benchmarks/deploy_experiment.py --optimize-only   # the plans, with no testbed up
    cpcdrl testbed up                                         # (root): the emulated Pi 'pi'
    python benchmarks/deploy_experiment.py --resume          # deploy them

For each model: `optimize` every method against the *measured* profiles
(benchmarks/results/profile/pi.json, local.json; at most --loss points below
the unpruned model), then `deploy` each distinct plan on the testbed with
--requests CIFAR test images, one per request (more for short plans: at least
--min-seconds of requests by the plan's predicted latency). On the first plan that offloads
(0 < cut, or cut 0), also the lossy options: --transfer fp16 / int8 and
--quantize int8. Writes results.json, table.md and a measured-vs-predicted plot.

The tables say how fast the device was when it was profiled, and this VM's
speed comes in spells. A plan with a head is deployed again (up to --attempts
times) while the speed probe says its device ran outside the profiled speed
+-(--speed-band): the criterion reads only the probe, never the prediction
error. Every attempt is kept (tag/, tag/retry2/, ...) and listed in the table;
the row's figures are those of the first attempt within the band, else of the
one nearest it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from cpcdrl_deploy.core.fileio import atomic_write_bytes, atomic_write_json, portable_args, read_json
from cpcdrl_deploy.deploy.run import DeployRequest, deploy, repredict
from cpcdrl_deploy.search.methods import METHODS, SearchConfig
from cpcdrl_deploy.search.optimize import OptimizeRequest, optimize, uniform_plan, write_plan
from cpcdrl_deploy.search.plan import PlanRecord

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MAX_REQUESTS = 1_000  # each request's image goes to the device first, 12 KB of float32 over the 200 KB/s link: 1 min


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet,vgg16")
    ap.add_argument("--data", default=str(SHARED / "datasets" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--edge-profile", default=str(REPO / "benchmarks/results/profile/pi.json"))
    ap.add_argument("--cloud-profile", default=str(REPO / "benchmarks/results/profile/local.json"))
    ap.add_argument("--host", default="pi", help="testbed (or ssh alias) the heads run on")
    ap.add_argument("--loss", type=float, default=2.0)
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument(
        "--min-seconds",
        type=float,
        default=4.0,
        help="at least this long of requests per plan, by the plan's predicted latency",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="deploys per method plan at most, while the edge probe is outside --speed-band",
    )
    ap.add_argument(
        "--speed-band",
        type=float,
        default=0.10,
        help="the edge is at its profiled speed when |probe factor - 1| <= this",
    )
    ap.add_argument("--out", default="benchmarks/results/deploy")
    ap.add_argument(
        "--offload-cut",
        default="mobilenet=27,vgg16=7",
        help="MODEL=CUT: the unpruned split the lossy options are measured on",
    )
    ap.add_argument(
        "--resume", action="store_true", help="reuse optimize.json and deploy-report.json files already under --out"
    )
    ap.add_argument(
        "--optimize-only",
        action="store_true",
        help="write each model's optimize.json and stop (run it with the testbed down: its duty cycle takes a CPU)",
    )
    ap.add_argument(
        "--repredict",
        action="store_true",
        help="with --resume: recompute every report's predictions (no testbed needed)",
    )
    ap.add_argument("--no-options", action="store_true", help="deploy the methods' plans only, not the lossy options")
    ap.add_argument(
        "--skip-missing",
        action="store_true",
        help="with --resume: deploy nothing new; plans and options with no report are listed as not deployed",
    )
    args = ap.parse_args()
    args.resume = args.resume or args.repredict or args.skip_missing
    torch.set_num_threads(args.threads)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    out = Path(args.out)
    offload_cut = {k: int(v) for k, v in (kv.split("=") for kv in args.offload_cut.split(","))}
    rows: list[dict] = []

    def report_path(plan_path: Path, tag: str, attempt: int) -> Path:
        tag_dir = out / plan_path.parent.parent.name / tag
        return (tag_dir if attempt == 1 else tag_dir / f"retry{attempt}") / "deploy-report.json"

    def run(plan_path: Path, tag: str, attempt: int = 1, **kw) -> dict:
        rep_path = report_path(plan_path, tag, attempt)
        if args.repredict:
            return repredict(rep_path)
        if args.resume and rep_path.exists():
            return read_json(rep_path)
        n = request_count(plan_path, args.requests, args.min_seconds)
        return deploy(
            DeployRequest(
                plan_path,
                edge=args.host,
                requests=n,
                data=args.data,
                out=rep_path.parent,
                edge_profile=args.edge_profile,
                cloud_profile=args.cloud_profile,
                **kw,
            ),
            log,
        )

    def run_at_speed(plan_path: Path, tag: str) -> dict:
        reps = [run(plan_path, tag)]
        while len(reps) < args.attempts and speed_off(reps[-1]) > args.speed_band:
            if (args.repredict or args.skip_missing) and not report_path(plan_path, tag, len(reps) + 1).exists():
                break  # recompute what was measured, measure nothing new
            log(
                f"{tag}: edge probe factor {edge_factor(reps[-1]):.2f}, outside 1 +- {args.speed_band:g}: deploying"
                " again"
            )
            reps.append(run(plan_path, tag, attempt=len(reps) + 1))
        chosen = next((r for r in reps if speed_off(r) <= args.speed_band), min(reps, key=speed_off))
        chosen = dict(chosen, attempts=[_attempt(r) for r in reps], chosen_attempt=reps.index(chosen) + 1)
        return chosen

    for model in args.models.split(","):
        t0 = time.perf_counter()
        ckpt = SHARED / "models" / f"{model}-cifar10.pth"
        opt_path = out / model / "optimize.json"
        if args.resume and opt_path.exists():
            res = read_json(opt_path)
        else:
            req = OptimizeRequest(
                model=model,
                checkpoint=ckpt,
                data=args.data,
                edge=args.edge_profile,
                cloud=args.cloud_profile,
                max_accuracy_loss=args.loss,
                methods=METHODS,
                val_size=args.val_size,
                test_limit=args.test_limit,
                search=SearchConfig(episodes=args.episodes),
            )
            res = optimize(req, log).to_data()
            res.pop("history")
            atomic_write_json(opt_path, res)
            log(f"{model}: optimize took {time.perf_counter() - t0:.0f} s")
        if args.optimize_only:
            continue
        seen: dict[tuple, dict] = {}
        for plan in res["plans"]:
            if not plan["feasible"]:
                rows.append({"model": model, "method": plan["method"], "feasible": False})
                continue
            path = write_plan(out / model / "plans" / f"{plan['method']}.json", PlanRecord.from_data(plan))
            key = (plan["cut"], tuple(plan["channels"][: plan["cut"]]))
            if args.skip_missing and key not in seen and not report_path(path, plan["method"], 1).exists():
                log(f"{model}: {plan['method']} not deployed yet: listed as such (--skip-missing)")
                rows.append({"model": model, "method": plan["method"], "feasible": True, "not_deployed": True})
                continue
            if key not in seen:
                seen[key] = run_at_speed(path, plan["method"])
            rows.append(_row(model, plan["method"], "fp32", None, seen[key], plan))
        if not args.no_options:
            # the lossy options need a head and a tail: measured on one unpruned split with a small head to upload
            up = uniform_plan(model, offload_cut[model], 1.0, ckpt, args.data)
            offload_plan = write_plan(out / model / "plans" / f"cut{up.cut}-unpruned.json", up)
            for transfer, quantize in (
                ("fp32", None),
                ("fp16", None),
                ("int8", None),
                ("fp32", "int8"),
                ("int8", "int8"),
            ):
                tag = f"{offload_plan.stem}-{transfer}" + ("-q8" if quantize else "")
                if args.skip_missing and not report_path(offload_plan, tag, 1).exists():
                    log(f"{model}: {tag} not deployed yet: left out (--skip-missing)")
                    continue
                rep = run(offload_plan, tag, transfer=transfer, quantize=quantize)
                rows.append(_row(model, offload_plan.stem, rep["transfer"], rep["quantize"], rep, None))
        atomic_write_json(out / "results.json", {"args": portable_args(args), "rows": rows})
    if args.optimize_only:
        return
    atomic_write_bytes(out / "table.md", table(rows).encode())
    plot(rows, out / "measured_vs_predicted.png")
    print(table(rows))


def request_count(plan_path: Path, requests: int, min_seconds: float) -> int:
    """At least ``requests``, and enough for ``min_seconds`` at the plan's predicted latency (up to MAX_REQUESTS).

    Short requests get more of them: this VM has slow spells of 0.5-5 s, and 300
    requests of 4 ms (1.2 s) can fall wholly inside one.
    """
    predicted = float((read_json(plan_path).get("latency_ms") or {}).get("total_ms") or 0.0)
    return max(requests, min(MAX_REQUESTS, math.ceil(min_seconds * 1000.0 / predicted))) if predicted > 0 else requests


def edge_factor(rep: dict) -> float | None:
    """The edge speed probe's factor (probe now / in the profile), None without a head or a probe."""
    return ((rep.get("speed_probe") or {}).get("edge") or {}).get("factor")


def speed_off(rep: dict) -> float:
    """How far the edge ran from its profiled speed: |factor - 1|, 0 when there is nothing to compare."""
    f = edge_factor(rep)
    return 0.0 if f is None else abs(f - 1.0)


def _attempt(rep: dict) -> dict:
    return {
        "p50_ms": rep["measured"]["e2e_ms"]["p50"],
        "edge_factor": edge_factor(rep),
        "table_err_pct": rep["prediction_error_pct"].get("table"),
        "drift_err_pct": rep["prediction_error_pct"].get("table_drift"),
    }


def _row(model: str, method: str, transfer: str, quantize: str | None, rep: dict, plan: dict | None) -> dict:
    m = rep["measured"]
    return {
        "attempts": rep.get("attempts", [_attempt(rep)]),
        "chosen_attempt": rep.get("chosen_attempt", 1),
        "model": model,
        "method": method,
        "feasible": True,
        "cut": rep["cut"],
        "n_layers": rep["n_layers"],
        "transfer": transfer,
        "quantize": quantize,
        "requests": rep["requests"],
        "answered": rep["answered"],
        "errors": rep["errors"],
        "p50_ms": m["e2e_ms"]["p50"],
        "p90_ms": m["e2e_ms"]["p90"],
        "p99_ms": m["e2e_ms"]["p99"],
        "edge_p50_ms": m["edge_ms"]["p50"],
        "remote_p50_ms": m["transfer_and_cloud_ms"].get("p50", 0.0),
        "table_ms": rep["predicted"].get("table", {}).get("total_ms"),
        "table_err_pct": rep["prediction_error_pct"].get("table"),
        "analytic_ms": rep["predicted"].get("analytic", {}).get("total_ms"),
        "analytic_err_pct": rep["prediction_error_pct"].get("analytic"),
        "mean_ms": m["e2e_ms"]["mean"],
        "table_err_vs_mean_pct": rep["prediction_error_vs_mean_pct"].get("table"),
        "table_sum_ms": rep["predicted"].get("table_sum", {}).get("total_ms"),
        "table_sum_err_pct": rep["prediction_error_pct"].get("table_sum"),
        "table_median_ms": rep["predicted"].get("table_median", {}).get("total_ms"),
        "table_median_err_pct": rep["prediction_error_pct"].get("table_median"),
        "quota_ms": rep["predicted"].get("table_quota", {}).get("total_ms"),
        "quota_err_pct": rep["prediction_error_pct"].get("table_quota"),
        "quota_p90_ms": rep["predicted"].get("table_quota", {}).get("total_p90_ms"),
        "drift_ms": rep["predicted"].get("table_drift", {}).get("total_ms"),
        "drift_err_pct": rep["prediction_error_pct"].get("table_drift"),
        "drift_edge": (rep.get("speed_probe") or {}).get("edge", {}).get("factor"),
        "drift_cloud": (rep.get("speed_probe") or {}).get("cloud", {}).get("factor"),
        "overhead_pct": rep["protocol_overhead"]["pct_of_e2e_p50"] if rep["protocol_overhead"] else None,
        "bytes_per_request": rep["bytes_per_request"],
        "agreement_pct": rep["agreement_with_pytorch_pct"],
        "accuracy_pct": rep["accuracy_pct"],
        "plan_val_acc": plan["accuracy"]["validation"] if plan else None,
    }


def _f(v: float | int | None, fmt: str) -> str:
    """A table cell: ``v`` formatted, "-" where there is none."""
    return "-" if v is None else format(v, fmt)


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| model | method | cut | wire | p50 ms | p90 | p99 | mean | edge p50 | transfer+cloud p50 | **tables,"
            " anchored** (the optimiser's) ms: err vs p50 / vs mean | speed probe: now / profiled, edge, cloud |"
            " **tables x probe** ms: err vs p50 | tables, plain sums ms: err vs p50 | MAC est. ms: err vs p50 |"
            " protocol overhead | bytes/request | agreement | accuracy | attempts: edge probe factor (tables err),"
            " **used** |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("not_deployed"):
            lines.append(f"| {r['model']} | {r['method']} | not deployed in this run |" + " |" * 17)
            continue
        if not r["feasible"]:
            lines.append(f"| {r['model']} | {r['method']} | no plan meets A0 |" + " |" * 17)
            continue
        wire = r["transfer"] + (" + int8 head" if r["quantize"] else "")
        lines.append(
            f"| {r['model']} | {r['method']} | {r['cut']}/{r['n_layers']} | {wire} | {r['p50_ms']:.2f} |"
            f" {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_ms']:.2f} | {r['edge_p50_ms']:.2f} |"
            f" {r['remote_p50_ms']:.2f} | **{_f(r['table_ms'], '.2f')}: {_f(r['table_err_pct'], '+.1f')} %** /"
            f" {_f(r['table_err_vs_mean_pct'], '+.1f')} % | {_f(r.get('drift_edge'), '.2f')},"
            f" {_f(r.get('drift_cloud'), '.2f')} | **{_f(r.get('drift_ms'), '.2f')}:"
            f" {_f(r.get('drift_err_pct'), '+.1f')} %** | {_f(r.get('table_sum_ms'), '.2f')}:"
            f" {_f(r.get('table_sum_err_pct'), '+.1f')} % | {_f(r['analytic_ms'], '.2f')}:"
            f" {_f(r['analytic_err_pct'], '+.1f')} % | {_f(r['overhead_pct'], '.1f')} % |"
            f" {_f(r['bytes_per_request'], 'd')} | {r['agreement_pct']:.1f} % | {r['accuracy_pct']:.1f} % |"
            f" {_attempts(r)} |"
        )
    return "\n".join(lines) + "\n"


def _attempts(r: dict) -> str:
    cells = [f"{_f(a['edge_factor'], '.2f')} ({_f(a['table_err_pct'], '+.1f')} %)" for a in r["attempts"]]
    k = r["chosen_attempt"] - 1
    cells[k] = f"**{cells[k]}**"
    return ", ".join(cells)


def plot(rows: list[dict], path: Path) -> None:
    from cpcdrl_deploy.core.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 5))
    pts = [
        r for r in rows if r["feasible"] and not r.get("not_deployed") and r["transfer"] == "fp32" and not r["quantize"]
    ]
    for key, marker, label in (
        ("table_ms", "o", "tables anchored to whole heads/tails"),
        ("drift_ms", "D", "anchored tables x speed probe"),
        ("table_sum_ms", "s", "tables, plain sums"),
        ("analytic_ms", "^", "MAC estimate (F fitted)"),
    ):
        xs = [r["p50_ms"] for r in pts if r.get(key) is not None]
        ax.scatter(xs, [r[key] for r in pts if r.get(key) is not None], marker=marker, label=label)
    lim = max([r["p50_ms"] for r in pts] + [1.0]) * 1.2
    ax.plot([0.1, lim], [0.1, lim], "k:", lw=1)
    ax.fill_between([0.1, lim], [0.085, 0.85 * lim], [0.115, 1.15 * lim], color="0.9", label="+-15 %")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("deployed p50 (ms), emulated Pi + this host")
    ax.set_ylabel("predicted (ms)")
    ax.legend(fontsize=8)
    ax.set_title("every method's plan, MobileNet and VGG16")
    save_figure(fig, path)


if __name__ == "__main__":
    main()
