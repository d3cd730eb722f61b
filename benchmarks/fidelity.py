"""How good are the estimates? Many plans of one model benched in one sitting on the device; rank and ratio fidelity.

    python benchmarks/fidelity.py --model mobilenet --host pi [--seconds 4] [--plans 40] [--runtime litert] [--out \
        benchmarks/results/fidelity]
        [--optimizer-links 200KB/s,1MB/s] [--profile-before-rounds]

Plans (all of ``--model``, reference checkpoint from ../shared): uniform keeps
0.25-1.0 at cuts spread over the model (interior ones included), random
pruned plans (a random cut, per-layer keeps drawn from [0.25, 1]), and some
with ``round_to=1`` (channel counts that are not multiples of 8); with
``--optimizer-links``, also every method's plan from ``optimize`` at each
link (the sitting's profiles with the link's rate replaced). They are
written as plan files under OUT/plans and handed to ``cpcdrl bench`` (one
sitting, interleaved); its report holds each estimate's Spearman, Kendall,
pair order and paired-ratio error (``bench.fidelity``), here also for the
pruned plans alone. ``--runtime litert`` builds every head for LiteRT and
judges the profile's ``MODEL@litert`` tables (results under OUT/MODEL-litert). The profiles the estimates use were
measured earlier
(their dates are in the report): ranks and ratios are what an optimiser
needs, and they survive a change of the host's level better than absolute
times do. ``--profile-before-rounds`` has ``bench`` profile both hosts
again once the heads are uploaded, and the figures judge those profiles.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_json, read_json
from cpcdrl_deploy.deploy.bench import BenchRequest, bench, paired_ratio
from cpcdrl_deploy.deploy.run import shape_of
from cpcdrl_deploy.measure.fidelity import fidelity
from cpcdrl_deploy.measure.profile import load_profile, table_key
from cpcdrl_deploy.models.zoo import load_model
from cpcdrl_deploy.search.optimize import plan_channels, uniform_plan
from cpcdrl_deploy.search.plan import Plan, PlanRecord

# relative to the repository root, where benchmarks run: the committed plans and report name no machine's folders
SHARED = Path("../shared")
PROFILES = Path("benchmarks/results/profile")
CUTS = {"mobilenet": (0, 2, 6, 12, 20, 24, 27, 28), "vgg16": (0, 2, 4, 7, 10, 13, 14), "tinyvgg": (0, 2, 3, 5, 7)}


def spread_cuts(model: str, ckpt: Path | None, k: int = 8) -> tuple[int, ...]:
    """``CUTS[model]``, else ``k`` cut points spread evenly over the model's (0 and all on the device included)."""
    if model in CUTS:
        return CUTS[model]
    from cpcdrl_deploy.models.graph import analyze
    from cpcdrl_deploy.models.zoo import get_entry, load_model

    a = analyze(load_model(model, ckpt), get_entry(model).input_size, model)
    points = a.cuttable_points()
    picks = np.linspace(0, len(points) - 1, min(k, len(points))).round().astype(int)
    return tuple(sorted({points[i] for i in picks}))


def default_checkpoint(model: str) -> Path | None:
    return SHARED / "models" / f"{model}-cifar10.pth" if model != "tinyvgg" else None


def make_plans(
    model: str, n: int, out: Path, data: str, seed: int, edge: Path, cloud: Path, ckpt: Path | None
) -> list[Path]:
    rng = random.Random(seed)
    cuts = spread_cuts(model, ckpt)
    n_layers = max(cuts)
    net = load_model(model, ckpt)  # the checkpoint's class count: the last layer's channels in the plans
    specs: list[tuple[str, int, list[float], int]] = []
    for c in cuts:
        for k in (1.0,) if c == 0 else (1.0, 0.75, 0.5, 0.25):
            specs.append((f"uniform{k:g}", c, [k] * c, 8))
    while len(specs) < n - 4:
        c = rng.choice([c for c in cuts if c > 0])
        specs.append(("random", c, [round(rng.uniform(0.25, 1.0), 3) for _ in range(c)], 8))
    for _ in range(4):  # channel counts that are not multiples of 8
        c = rng.choice([c for c in cuts if 0 < c < n_layers])
        specs.append(("round1", c, [round(rng.uniform(0.3, 0.95), 3) for _ in range(c)], 1))
    paths = []
    out.mkdir(parents=True, exist_ok=True)
    for i, (kind, c, ratios, round_to) in enumerate(specs):
        p = uniform_plan(model, c, 1.0, ckpt, data).to_data()
        p.update(method=kind, ratios=ratios, profiles={"edge": str(edge), "cloud": str(cloud), "link": None})
        p["prune"]["round_to"] = round_to
        shape, a = shape_of(model, c, ratios, round_to, net)
        p["channels"] = plan_channels(a, shape)
        p["cut_bytes"] = shape.cut_bytes
        paths.append(Plan.from_data(p).save(out / f"{i:02d}-{kind}-cut{c}.json"))
    return paths


def optimizer_plans(
    model: str,
    links: list[str],
    out: Path,
    data: str,
    edge: Path,
    cloud: Path,
    episodes: int,
    loss: float,
    log,
    ckpt: Path | None,
) -> list[Path]:
    """Every method's plan from ``optimize`` at each of ``links`` (the sitting's own profiles, the link's rate
    replaced).

    Plans the methods share (same cut, same ratios) are written once. The
    search scores accuracy on half the test split (``--val-source test``) and
    shares the persistent accuracy cache, as the optimizer grid does.
    """
    from cpcdrl_deploy.devices.testbed import parse_bandwidth
    from cpcdrl_deploy.search.accuracy_cache import default_cache_dir
    from cpcdrl_deploy.search.methods import METHODS, SearchConfig
    from cpcdrl_deploy.search.optimize import OptimizeRequest, optimize, write_plan

    seen: set[tuple] = set()
    paths: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    for link in links:
        req = OptimizeRequest(
            model,
            ckpt,
            data,
            edge=str(edge),
            cloud=str(cloud),
            bandwidth_bytes_per_s=parse_bandwidth(link),
            max_accuracy_loss=loss,
            methods=METHODS,
            val_source="test",
            cache=default_cache_dir(),
            search=SearchConfig(episodes=episodes, seed=0),
        )
        t0 = time.time()
        res = optimize(req, log=log).to_data()
        log(f"optimize at {link}: {time.time() - t0:.0f} s")
        for p in res["plans"]:
            key = (p.get("cut"), tuple(p.get("ratios") or ()))
            if not p["feasible"] or key in seen:
                continue
            seen.add(key)
            name = f"opt-{link.replace('/', 'p')}-{p['method']}-cut{p['cut']}"
            paths.append(
                write_plan(
                    out / f"{len(paths):02d}-{name}.json",
                    PlanRecord.from_data({**p, "method": f"optimize {link} {p['method']}"}),
                )
            )
    return paths


DISTURBED_RULE = (
    "a round is disturbed when, over the plans that compute on the device, the median of (the plan's median edge time"
    " in that round / its median edge time over all rounds) exceeds 1.25: something else ran on the device then; the"
    " rule never looks at a prediction"
)


def disturbed_rounds(rep: dict, limit: float = 1.25) -> list[int]:
    """Rounds in which the device-computing plans ran slow together (see DISTURBED_RULE)."""
    per: dict[tuple[str, int], list[float]] = {}
    for r in rep["records"]:
        if "e2e_ms" in r:
            per.setdefault((r["plan"], r["round"]), []).append(r["edge_ms"])
    edge_plans = [p["id"] for p in rep["plans"] if p.get("e2e_ms") and p["cut"] > 0]
    overall = {p: float(np.median([x for (q, _), xs in per.items() if q == p for x in xs])) for p in edge_plans}
    out = []
    for rd in range(rep["rounds"]):
        rel = [np.median(per[(p, rd)]) / overall[p] for p in edge_plans if (p, rd) in per]
        if rel and float(np.median(rel)) > limit:
            out.append(rd)
    return out


def fidelity_sets(rep: dict, drop_rounds: list[int] | None = None) -> tuple[dict, dict, list[dict]]:
    """Each estimate's fidelity over all plans and over the pruned ones, and its median absolute error; optionally
    without some rounds."""
    good = [r for r in rep["plans"] if r.get("e2e_ms")]
    ref = next(r for r in good if r["id"] == rep["reference"])
    meas, ratio = (
        {r["id"]: r["e2e_ms"]["p50"] for r in good},
        {r["id"]: r["ratio_to_reference"]["median"] for r in good},
    )
    if drop_rounds:
        dropped = set(drop_rounds)
        recs = [x for x in rep["records"] if x["round"] not in dropped and "e2e_ms" in x]
        meas = {r["id"]: float(np.median([x["e2e_ms"] for x in recs if x["plan"] == r["id"]])) for r in good}
        ratio = {r["id"]: paired_ratio(recs, r["id"], ref["id"], rep["seed"])["median"] for r in good}
    pruned = [r for r in good if r["ratios_mean"] < 1.0]
    chosen = [
        r for r in good if str(r.get("method", "")).startswith("optimize ")
    ]  # the optimiser's own plans (--optimizer-links)
    by_set = {}
    for name, rows in (("all", good), ("pruned", pruned), ("optimizer", chosen)):
        if len(rows) < 2:  # no optimiser plans in this sitting (or one): nothing to rank
            continue
        by_set[name] = {
            est: fidelity(
                [r["predicted_ms"][est] for r in rows],
                [meas[r["id"]] for r in rows],
                [r["predicted_ms"][est] / ref["predicted_ms"][est] for r in rows],
                [ratio[r["id"]] for r in rows],
            )
            for est in rep["fidelity"]
        }
    absolute = {
        est: float(np.median([abs(r["predicted_ms"][est] / meas[r["id"]] - 1) * 100 for r in good]))
        for est in rep["fidelity"]
    }
    return by_set, absolute, good


def repriced(rep: dict, edge_profile: str, cloud_profile: str, runtime: str) -> dict:
    """The report with every plan's estimates recomputed from other profiles; the measurements untouched.

    A diagnostic, never the sitting's figures: it asks how much of an
    estimate's error the profile's own hour explains (a profile taken after
    the bench cannot have steered the plans benched).
    """
    from cpcdrl_deploy.deploy.bench import plan_estimates
    from cpcdrl_deploy.search.plan import load_plan

    rows = [
        (
            {
                **r,
                "predicted_ms": plan_estimates(
                    load_plan(r["plan"]), r["bytes_per_request"], edge_profile, cloud_profile, runtime
                )[0],
            }
            if r.get("e2e_ms")
            else r
        )
        for r in rep["plans"]
    ]
    return {**rep, "plans": rows}


def profiled_at(model: str, runtime: str, host: str, edge: Path, cloud: Path) -> dict[str, str | None]:
    """When the edge and cloud profiles timed ``model``."""
    return {
        host: load_profile(str(edge)).tables[table_key(model, runtime)].measured_at,
        "local": load_profile(str(cloud)).tables[model].measured_at,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet")
    ap.add_argument(
        "--checkpoint", default=None, help="the model's checkpoint (default: ../shared/models/MODEL-cifar10.pth)"
    )
    ap.add_argument("--host", default="pi")
    ap.add_argument("--plans", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--data", default=str(SHARED / "datasets" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--profiles", default=str(PROFILES), help="folder with HOST.json (the edge) and local.json (the cloud)"
    )
    ap.add_argument(
        "--runtime", default="onnxruntime", choices=("onnxruntime", "litert"), help="every head's edge runtime"
    )
    ap.add_argument("--out", default="benchmarks/results/fidelity")
    ap.add_argument(
        "--optimizer-links",
        default=None,
        help="also bench every method's plan from optimize at these links (comma-separated, e.g. 200KB/s,1MB/s)",
    )
    ap.add_argument("--optimizer-episodes", type=int, default=40)
    ap.add_argument("--optimizer-loss", type=float, default=1.0, help="the optimizer plans' --max-accuracy-loss")
    ap.add_argument(
        "--summarise-only",
        action="store_true",
        help="recompute summary.json from the sitting's bench report, measure nothing",
    )
    ap.add_argument(
        "--profile-before-rounds",
        action="store_true",
        help=(
            "bench profiles the edge and this host again once the heads are uploaded, right before the rounds, into"
            " OUT/MODEL/profiles-before-rounds, and the figures judge those profiles"
        ),
    )
    ap.add_argument(
        "--reprice-edge",
        help=(
            "with --summarise-only: also the figures with the edge estimates from this profile (a diagnostic, "
            "written as summary['repriced'])"
        ),
    )
    args = ap.parse_args()
    name = args.model.replace(":", "-")  # a model key such as mobilenet_v3_small:96
    out = Path(args.out) / (name if args.runtime == "onnxruntime" else f"{name}-{args.runtime}")
    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint(args.model)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    try:
        edge, cloud = Path(args.profiles) / f"{args.host}.json", Path(args.profiles) / "local.json"
        if args.summarise_only:  # the sitting's report as it was written; only the summary is recomputed
            rep = read_json(out / "bench" / "bench-report.json")
            plans = sorted((out / "plans").glob("*.json")) + sorted((out / "plans-optimizer").glob("*.json"))
            wall = read_json(out / "summary.json").get("bench_wall_s") if (out / "summary.json").exists() else None
        else:
            plans = make_plans(args.model, args.plans, out / "plans", args.data, args.seed, edge, cloud, ckpt)
            if args.optimizer_links:
                plans += optimizer_plans(
                    args.model,
                    args.optimizer_links.split(","),
                    out / "plans-optimizer",
                    args.data,
                    edge,
                    cloud,
                    args.optimizer_episodes,
                    args.optimizer_loss,
                    log,
                    ckpt,
                )
            log(f"{len(plans)} plans; benching on {args.host}")
            t0 = time.time()
            rep = bench(
                BenchRequest(
                    plans,
                    edge=args.host,
                    out=out / "bench",
                    seconds=args.seconds,
                    seed=args.seed,
                    runtime=args.runtime,
                    profile_before_rounds=out / "profiles-before-rounds" if args.profile_before_rounds else None,
                ),
                log=log,
            )
            wall = round(time.time() - t0, 1)
    except CpcdrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    by_set, absolute, good = fidelity_sets(rep)
    made_with: dict = {}  # with bench --profile-before-rounds: when the plans' own profiles were taken
    beside: dict = {}  # ...and what those say of the same rounds
    if rep.get("profiles_of_the_plans"):  # profiled again right before the rounds: the figures judge those
        plans_made = profiled_at(args.model, args.runtime, args.host, edge, cloud)
        # the profiles that made the plans were taken before the searches and uploads
        sets, abs_, _ = fidelity_sets(repriced(rep, str(edge), str(cloud), args.runtime))
        made_with = {"plans_made_with_profiles_measured_at": plans_made}
        beside = {
            "with_the_plans_profiles": {"measured_at": plans_made, "fidelity": sets, "absolute_error_median_pct": abs_}
        }
        edge, cloud = Path(rep["profiles"]["edge"]), Path(rep["profiles"]["cloud"])
    profiled = profiled_at(args.model, args.runtime, args.host, edge, cloud)
    summary = {
        "model": args.model,
        "runtime": args.runtime,
        "host": args.host,
        "plans": len(plans),
        "benched": len(good),
        "failed": rep["failed"],
        "rounds": rep["rounds"],
        "bench_wall_s": wall,
        "measured_at": rep["measured_at"],
        "profiles_measured_at": profiled,
        **made_with,
        "fidelity": by_set,
        "absolute_error_median_pct": absolute,
        **beside,
    }
    # whether the server kept its profiled speed, and what the host's CPUs did (reports from before these fields lack
    # them)
    for key in ("server_vs_tables", "host_load"):
        if rep.get(key):
            summary[key] = {k: v for k, v in rep[key].items() if k not in ("per_round", "rounds")}
    dropped = disturbed_rounds(rep)
    if dropped:  # say how much they weigh: the figures again without them (the ones above keep every round)
        sets, abs_, _ = fidelity_sets(rep, dropped)
        summary["without_disturbed_rounds"] = {
            "rule": DISTURBED_RULE,
            "rounds_dropped": dropped,
            "fidelity": sets,
            "absolute_error_median_pct": abs_,
        }
    if args.reprice_edge:
        sets, abs_, _ = fidelity_sets(repriced(rep, args.reprice_edge, str(cloud), args.runtime))
        after = profiled_at(args.model, args.runtime, args.host, Path(args.reprice_edge), cloud)[args.host]
        summary["repriced"] = {
            "edge_profile": args.reprice_edge,
            "measured_at": after,
            "fidelity": sets,
            "absolute_error_median_pct": abs_,
        }
    atomic_write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
