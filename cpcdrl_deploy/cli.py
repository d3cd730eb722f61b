"""cpcdrl's command line: parse options, call one library function, print.

Every user-facing failure is a ``CpcdrlError``: printed as one line on stderr,
exit status 2, no traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import threading
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from cpcdrl_deploy.core.errors import CpcdrlError

if TYPE_CHECKING:  # imported where used: `cpcdrl --help` stays fast
    from cpcdrl_deploy.search.result import OptimizeResult

# The built-in demo model (its weights ship in the package); the same name as
# zoo.DEMO_MODEL, kept here so the CLI starts without importing torch.
DEMO_MODEL = "tinysplit"

app = typer.Typer(
    help="Split a DNN between an edge device and a cloud server, prune the edge half (CPCDRL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])


class Format(str, Enum):
    table = "table"
    json = "json"


# Shared options, defined once.
FormatOpt = Annotated[Format, typer.Option("--format", help="table for people, json for scripts")]
ModelHelp = (
    "a zoo name (cpcdrl models) or package.module:function returning an nn.Module; MODEL:SIZE is MODEL at SIZE px"
)
InputSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--input-size", min=8, max=2048, help="square input side in pixels (default: the model's); kept as MODEL:SIZE"
    ),
]
ProfileModelsOpt = Annotated[list[str], typer.Option("--model", "-m", help=f"model(s) to profile: {ModelHelp}")]
CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="state_dict file (bare, or under net/state_dict/model); 'builtin' for the shipped one",
    ),
]
DataOpt = Annotated[
    str, typer.Option("--data", "-d", help="CIFAR-10: ImageFolder dir, its .tar.gz, torchvision dir, or 'builtin'")
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="use only this many test images")]
SeedOpt = Annotated[int, typer.Option("--seed", help="random seed")]


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def _progress(fmt: Format):
    """Progress bars on stderr for people; none for scripts (--format json) or when stderr is not a terminal."""
    from cpcdrl_deploy.core.progress import progress_bars

    return progress_bars(fmt is Format.table and sys.stderr.isatty())


def command(fn: F) -> F:
    """Turn CpcdrlError / Ctrl-C into one line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CpcdrlError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            _err("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2))


def _show_report(rep: dict, fmt: Format, lines_of: Callable[[dict], list[str]], omit: str) -> None:
    """A run's report on stdout: JSON for scripts (less its bulky ``omit`` part, which the report file keeps), or its
    summary lines for people."""
    if fmt is Format.json:
        _print_json({k: v for k, v in rep.items() if k != omit})
    else:
        typer.echo("\n".join(lines_of(rep)))


def _table(rows: Sequence[Sequence[object]], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@app.command("models")
@command
def models_cmd(fmt: FormatOpt = Format.table) -> None:
    """List the model zoo."""
    from cpcdrl_deploy.models.zoo import list_models

    rows = list_models()
    if fmt is Format.json:
        _print_json(rows)
        return
    typer.echo(
        _table(
            [
                [
                    r["name"],
                    f"{r['input_size']}x{r['input_size']}",
                    r["classes"],
                    "yes" if r["builtin_checkpoint"] else "",
                    r["description"],
                ]
                for r in rows
            ],
            ["model", "input", "classes", "built-in ckpt", "description"],
        )
    )


@app.command("schemas")
@command
def schemas_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for one <artifact>.schema.json each")] = Path(
        "docs/schemas"
    ),
) -> None:
    """Write the JSON Schema of every file cpcdrl writes (plan, profile, manifest, reports)."""
    from cpcdrl_deploy.core.fileio import check_writable
    from cpcdrl_deploy.deploy.schemas import write_schemas

    check_writable(out, "--out", directory=True)
    for path in write_schemas(out):
        typer.echo(f"wrote {path}")


@app.command("analyze")
@command
def analyze_cmd(
    model: Annotated[str, typer.Argument(help=ModelHelp)],
    checkpoint: CheckpointOpt = None,
    input_size: InputSizeOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Prunable layers, cut points (bytes crossing each, S_i), MACs (Eq. 3-4), the channel groups pruned together."""
    from cpcdrl_deploy.compress.pruning import model_structure
    from cpcdrl_deploy.models.zoo import model_key

    a, groups = model_structure(model_key(model, input_size), checkpoint)
    names = {layer.index: layer.name for layer in a.layers}
    if fmt is Format.json:
        _print_json({**a.to_dict(), "groups": [dataclasses.asdict(g) for g in groups]})
        return
    kinds = {layer.index: layer.kind for layer in a.layers}
    rows = [
        [
            p.index,
            p.name,
            kinds.get(p.index, "-"),
            f"{p.macs:,}",
            f"{p.cum_macs:,}",
            "x".join(map(str, p.out_shape)),
            f"{p.out_bytes:,}",
            "" if p.cuttable else "no",
        ]
        for p in a.points
    ]
    typer.echo(_table(rows, ["cut", "layer", "kind", "MACs", "cum MACs", "cut tensor", "S_i bytes", "cuttable"]))
    typer.echo(f"total MACs: {a.total_macs:,}  ({a.n_layers} prunable layers, {len(a.cuttable_points())} cut points)\n")
    rows = [
        [g.leader, g.channels, ", ".join(names[j] for j in g.producers), ", ".join(names[j] for j in g.consumers)]
        for g in groups
    ]
    typer.echo(f"{len(groups)} channel groups (each pruned as one: one action of the compression agent)")
    typer.echo(_table(rows, ["group", "channels", "layers whose outputs are pruned together", "refitted consumers"]))


PlanOpt = Annotated[
    Path | None,
    typer.Option("--plan", help="a saved plan: score its own pruned weights (model, --cut, --ratios come from it)"),
]
RatiosOpt = Annotated[
    str | None, typer.Option("--ratios", help="keep ratio(s) of layers 1..cut: one value or a comma list")
]
RoundToOpt = Annotated[
    int,
    typer.Option("--round-to", min=1, help="kept channels are multiples of this (8: ONNX Runtime's fast conv layout)"),
]


@app.command("evaluate")
@command
def evaluate_cmd(
    model: Annotated[str, typer.Argument(help=ModelHelp)] = DEMO_MODEL,
    checkpoint: CheckpointOpt = None,
    input_size: InputSizeOpt = None,
    data: DataOpt = "builtin",
    plan: PlanOpt = None,
    ratios: RatiosOpt = None,
    cut: Annotated[int | None, typer.Option("--cut", help="partition point P (default N: all on the edge)")] = None,
    limit: LimitOpt = None,
    refit: Annotated[bool, typer.Option("--refit/--no-refit", help="least-squares reconstruction (Eq. 2)")] = True,
    calib: Annotated[int, typer.Option("--calib", min=1, help="calibration images from the training split")] = 256,
    importance: Annotated[str, typer.Option("--importance", help="channel ranking: l1 or l2")] = "l1",
    round_to: RoundToOpt = 8,
    seed: SeedOpt = 0,
    fmt: FormatOpt = Format.table,
) -> None:
    """Top-1 accuracy of a model, optionally pruned, and its MACs before and after."""
    from cpcdrl_deploy.compress.evaluate import evaluate_plan
    from cpcdrl_deploy.compress.pruning import PruneConfig
    from cpcdrl_deploy.models.zoo import model_key
    from cpcdrl_deploy.search.plan_model import evaluate_saved_plan

    model = model_key(model, input_size)

    with _progress(fmt) as tick:
        if plan is not None:
            if ratios is not None or cut is not None:
                raise CpcdrlError("--plan brings its own cut and ratios: drop --cut/--ratios")
            res = evaluate_saved_plan(plan, None if data == "builtin" else data, checkpoint, limit, seed, tick=tick)
        else:
            res = evaluate_plan(
                model,
                checkpoint,
                data,
                ratios,
                cut,
                limit,
                calib,
                PruneConfig(importance=importance, round_to=round_to, refit=refit),
                seed,
                log=_err,
                tick=tick,
            )
    if fmt is Format.json:
        _print_json(res)
        return
    typer.echo(f"{res['model']} cut {res['cut']}: top-1 {res['accuracy']:.2f}% on {res['test_images']} test images")
    if plan is not None:
        was = res["plan_test_accuracy"]
        typer.echo(
            f"the plan's {res['weights']} weights"
            + (f"; optimize measured {was:.2f}% on its own test images" if was is not None else "")
        )
    typer.echo(
        f"MACs {res['macs_before']:,} -> {res['macs_after']:,} ({100 * res['macs_after'] / res['macs_before']:.1f}%),"
        f" edge MACs {res['edge_macs']:,}"
    )
    if res.get("refitted_layers"):
        typer.echo(f"refitted by least squares: {len(res['refitted_layers'])} layers")


@app.command("train")
@command
def train_cmd(
    model: Annotated[str, typer.Argument(help=ModelHelp)],
    data: DataOpt = "builtin",
    input_size: InputSizeOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 10,
    out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint to write (pytorch-cifar format)")] = Path(
        "checkpoint.pth"
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 128,
    lr: Annotated[float, typer.Option("--lr", help="peak learning rate of the one-cycle schedule")] = 0.1,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="train on at most this many images")] = None,
    seed: SeedOpt = 0,
    fmt: FormatOpt = Format.table,
) -> None:
    """Train a model from scratch on an image folder (its classes) and write a checkpoint with its test accuracy."""
    from cpcdrl_deploy.core.fileio import check_writable
    from cpcdrl_deploy.models.data import load_images
    from cpcdrl_deploy.models.train import TrainConfig, train
    from cpcdrl_deploy.models.zoo import model_key, preprocess_for

    check_writable(out, "--out")
    model = model_key(model, input_size)
    with _progress(fmt) as tick:
        res = train(
            model,
            load_images(data, preprocess_for(model)),
            out,
            TrainConfig(epochs=epochs, batch_size=batch_size, max_lr=lr, seed=seed, limit=limit),
            log=_err,
            tick=tick,
        )
    if fmt is Format.json:
        _print_json(res)
    else:
        typer.echo(f"wrote {res['out']}: test top-1 {res['acc']:.2f}%")


class Transfer(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class EdgeRuntime(str, Enum):
    onnxruntime = "onnxruntime"
    litert = "litert"


RuntimeOpt = Annotated[
    EdgeRuntime | None,
    typer.Option(
        "--runtime",
        help="the head's runtime on the device: onnxruntime (head.onnx) or litert (head.tflite); default: the plan's",
    ),
]


LinkOpt = Annotated[str | None, typer.Option("--link", help="profile whose link to use (default: the edge profile's)")]
BandwidthOpt = Annotated[
    str | None,
    typer.Option("--bandwidth", help="what-if link rate both ways, e.g. 1MB/s or 8Mbit (overrides the profile's)"),
]
RttOpt = Annotated[
    str | None, typer.Option("--rtt", help="what-if round-trip time, e.g. 10ms (overrides the profile's)")
]
BandwidthRangeOpt = Annotated[
    str | None,
    typer.Option(
        "--bandwidth-range",
        help="LOW:HIGH, e.g. 50KB/s:5MB/s: search a plan set, one plan per bandwidth band (--out writes it)",
    ),
]
BucketsOpt = Annotated[int, typer.Option("--buckets", min=2, help="with --bandwidth-range: rates searched")]
HysteresisOpt = Annotated[
    float, typer.Option("--hysteresis", help="with --bandwidth-range: switch only this far past a threshold")
]
DEFAULT_MAX_LOSS = 1.0  # points, where neither constraint is given: the tightest loss the grids try
MaxLossOpt = Annotated[
    float | None,
    typer.Option(
        "--max-accuracy-loss",
        help=f"D: at most D points below the unpruned model (default {DEFAULT_MAX_LOSS:g} without --accuracy)",
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="cpcdrl|cpcdrl-paper|neurosurgeon|greedy|edge-pruned|edge-only|cloud-only|random|all, or a list",
    ),
]
WarmupOpt = Annotated[int | None, typer.Option("--warmup", help="random-action episodes first (default episodes/5)")]
ValSourceOpt = Annotated[
    str,
    typer.Option("--val-source", help="train (seen in training) or test (half the test split; final test on the rest)"),
]
TestLimitOpt = Annotated[
    int | None, typer.Option("--limit", min=1, help="test images for the final accuracy (default all)")
]
OptimizeTransferOpt = Annotated[
    Transfer,
    typer.Option(
        "--transfer", help="cut tensor on the wire, priced and scored: fp32, fp16, int8 (at cut 0: the image)"
    ),
]
EdgeRuntimeOpt = Annotated[
    str,
    typer.Option(
        "--edge-runtime", help="auto (the faster per plan of those the edge profile timed), onnxruntime or litert"
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="where refits and accuracy checks run: cpu, cuda, cuda:N")]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache", help="persistent accuracy cache (default: ~/.cache/cpcdrl/accuracy, or $CPCDRL_CACHE/accuracy)"
    ),
]


@app.command("optimize")
@command
def optimize_cmd(
    model: Annotated[str, typer.Argument(help=ModelHelp)] = DEMO_MODEL,
    input_size: InputSizeOpt = None,
    checkpoint: CheckpointOpt = None,
    data: DataOpt = "builtin",
    edge: Annotated[str, typer.Option("--edge", help="edge profile: file or name in device_profiles/")] = "paper",
    cloud: Annotated[str, typer.Option("--cloud", help="cloud profile: file or name")] = "paper",
    link: LinkOpt = None,
    bandwidth: BandwidthOpt = None,
    bandwidth_range: BandwidthRangeOpt = None,
    buckets: BucketsOpt = 4,
    hysteresis: HysteresisOpt = 0.2,
    rtt: RttOpt = None,
    accuracy: Annotated[float | None, typer.Option("--accuracy", help="A0: required test top-1, percent")] = None,
    max_loss: MaxLossOpt = None,
    method: MethodOpt = "cpcdrl",
    episodes: Annotated[int, typer.Option("--episodes", help="RL episodes")] = 300,
    warmup: WarmupOpt = None,
    r_min: Annotated[float, typer.Option("--r-min", help="smallest keep ratio")] = 0.2,
    val_size: Annotated[int, typer.Option("--val-size", min=1, help="validation images (from --val-source)")] = 2000,
    val_source: ValSourceOpt = "train",
    calib: Annotated[int, typer.Option("--calib", min=1, help="calibration images for the refit")] = 256,
    test_limit: TestLimitOpt = None,
    round_to: RoundToOpt = 8,
    transfer: OptimizeTransferOpt = Transfer.fp32,
    edge_runtime: EdgeRuntimeOpt = "auto",
    refit: Annotated[bool, typer.Option("--refit/--no-refit")] = True,
    device: DeviceOpt = "cpu",
    cache: CacheOpt = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="score every plan afresh and store nothing")] = False,
    seed: SeedOpt = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the plan (first method listed) here")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="write results.json, table.md and plots here")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Choose the partition point and the edge layers' keep ratios (CPCDRL) or run a baseline."""
    from cpcdrl_deploy.compress.pruning import PruneConfig
    from cpcdrl_deploy.core.fileio import check_writable
    from cpcdrl_deploy.devices.testbed import parse_bandwidth, parse_duration_ms
    from cpcdrl_deploy.models.zoo import model_key, resolve_checkpoint
    from cpcdrl_deploy.search.accuracy_cache import default_cache_dir
    from cpcdrl_deploy.search.methods import METHODS, SearchConfig
    from cpcdrl_deploy.search.optimize import OptimizeRequest, optimize

    check_writable(out, "--out")
    check_writable(report, "--report", directory=True)
    model = model_key(model, input_size)
    methods = tuple(METHODS) if method == "all" else tuple(m.strip() for m in method.split(",") if m.strip())
    ckpt = resolve_checkpoint(model, checkpoint, required=True)
    assert ckpt is not None  # required=True raises instead of returning None
    req = OptimizeRequest(
        model=model,
        checkpoint=ckpt,
        data=data,
        edge=edge,
        cloud=cloud,
        link=link,
        bandwidth_bytes_per_s=parse_bandwidth(bandwidth) if bandwidth is not None else None,
        rtt_ms=parse_duration_ms(rtt) if rtt is not None else None,
        accuracy=accuracy,
        max_accuracy_loss=DEFAULT_MAX_LOSS if accuracy is None and max_loss is None else max_loss,
        methods=methods,
        val_size=val_size,
        calib_size=calib,
        test_limit=test_limit,
        search=SearchConfig(episodes=episodes, warmup=warmup, r_min=r_min, seed=seed),
        prune=PruneConfig(round_to=round_to, refit=refit),
        device=device,
        cache=None if no_cache else (cache or default_cache_dir()),
        val_source=val_source,
        keep_models=out is not None,
        transfer=transfer.value,
        edge_runtime=edge_runtime,
    )
    log = _err if fmt is Format.table and sys.stderr.isatty() else lambda s: None  # quiet for scripts
    if bandwidth_range is not None:
        return _optimize_set(req, bandwidth_range, buckets, hysteresis, out, fmt, log)
    with _progress(fmt) as tick:
        result = optimize(req, log=log, tick=tick)
    _optimize_outputs(model, result, methods[0], out, report, fmt)


def _optimize_set(req, text: str, buckets: int, hysteresis: float, out: Path | None, fmt: Format, log) -> None:
    """``optimize --bandwidth-range``: the plan set, written with its member plans and its plot, shown as bands."""
    from cpcdrl_deploy.devices.testbed import parse_bandwidth
    from cpcdrl_deploy.search.planset import SetRequest, optimize_set, plot_set, set_table, write_set

    low, sep, high = text.partition(":")
    if not sep:
        raise CpcdrlError(f"--bandwidth-range {text!r}: expected LOW:HIGH, e.g. 50KB/s:5MB/s")
    sreq = SetRequest(parse_bandwidth(low), parse_bandwidth(high), buckets=buckets, hysteresis=hysteresis)
    with _progress(fmt) as tick:
        planset, plans, models = optimize_set(req, sreq, log=log, tick=tick)
    if out is not None:
        write_set(out, planset, plans, models)
        plot_set(planset, out.with_suffix(".png"))
        _err(f"wrote {out}, its {len(plans)} plans beside it and {out.with_suffix('.png')}")
    if fmt is Format.json:
        _print_json(planset.to_data())
        return
    typer.echo(
        f"{planset.model}: {len(planset.members)} plans over {text} (searched at"
        f" {', '.join(f'{r / 1e3:.0f}' for r in planset.searched_bytes_per_s)} KB/s; test accuracy >="
        f" {planset.a0_test:.2f} %), switching {planset.hysteresis:.0%} past each threshold"
    )
    typer.echo(set_table(planset))


def _optimize_outputs(
    model: str, result: OptimizeResult, first: str, out: Path | None, report: Path | None, fmt: Format
) -> None:
    """The plan file, the report folder, and the answer on stdout (a table, or JSON for scripts)."""
    from cpcdrl_deploy.search.report import write_report

    if out is not None:
        _write_chosen(out, result, first)
    if report is not None:
        write_report(result, report)
        _err(f"wrote report to {report}")
    if result.interrupted:
        _err("interrupted")
        raise typer.Exit(130)
    if fmt is Format.json:
        _print_json(result.summary())
        return
    _print_optimize(model, result)


def _write_chosen(out: Path, result: OptimizeResult, first: str) -> None:
    """The plan of the first method listed, whatever order they ran in (after Ctrl-C: the first that got to run)."""
    from cpcdrl_deploy.search.optimize import write_plan

    chosen = result.plan_of(first) or (result.plans[0] if result.plans else None)
    if chosen is not None:
        write_plan(out, chosen, result.models.get(chosen.method))
        _err(f"wrote {out}" + (f" ({chosen.method}'s best plan when interrupted)" if result.interrupted else ""))


def _print_optimize(model: str, result: OptimizeResult) -> None:
    """optimize's answer for people: the target, where latencies come from, one row per method, the chosen plan in
    words."""
    from cpcdrl_deploy.search.report import explain_plan, methods_table

    n_layers = next((p.n_layers for p in result.plans if p.n_layers), None)
    typer.echo(
        f"{model}: the plan must keep test accuracy >= {result.a0_test:.2f}% (unpruned"
        f" {result.unpruned.test:.2f}%, at most {result.max_accuracy_loss:g} points lost)"
    )
    src = result.latency_model
    typer.echo(
        f"latencies from {src}"
        + (
            " -- a model, not a measurement (cpcdrl profile measures your hosts)"
            if src.startswith("the analytic")
            else ""
        )
    )
    typer.echo(
        f"cut = layers run on the edge: 0 = all on the server, {n_layers} = all on the edge; the edge sends the cut"
        " tensor to the server"
    )
    typer.echo(methods_table(result.plans))
    if result.plans:
        typer.echo(explain_plan(result.plans[0], result.input_bytes or 0, result.unpruned_channels))
    wire = next((p.transfer for p in result.plans if p.feasible), "fp32")
    heads = sorted({p.runtime for p in result.plans if p.feasible and p.cut})
    if wire != "fp32" or heads not in ([], ["onnxruntime"]):
        typer.echo(
            f"the cut tensor travels as {wire}" + (f"; edge heads run in {' and '.join(heads)}" if heads else "")
        )
    missed = [p.method for p in result.plans if p.accuracy.meets_a0_on_test is False]
    if missed:
        typer.echo(
            f"{', '.join(missed)}: met the target on the search's validation images but not on the test images; "
            "use a smaller --max-accuracy-loss, more --val-size images or --val-source test"
        )
    t, since_start = result.timers, result.since_start_s or result.wall_s
    typer.echo(
        f"{since_start:.1f} s in all (loading {since_start - result.wall_s:.1f} s); "
        f"pruning+refit {t['refit_s']:.1f} s, accuracy {t['accuracy_s']:.1f} s, agents {t['agents_s']:.1f} s; "
        f"{t['evaluations']} plans scored, {t['store_hits']} read from the accuracy cache"
    )


cache_app = typer.Typer(
    help="The persistent accuracy cache that optimize shares across links, devices and methods.", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")
CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache", help="cache directory (default: ~/.cache/cpcdrl/accuracy, or $CPCDRL_CACHE/accuracy)"),
]


@cache_app.command("info")
@command
def cache_info_cmd(cache: CacheDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Where the cache is, how many plans it holds and its size."""
    from cpcdrl_deploy.search.accuracy_cache import cache_info, default_cache_dir

    info = cache_info(cache or default_cache_dir())
    if fmt is Format.json:
        _print_json(info)
        return
    typer.echo(
        f"{info['path']}: {info['entries']} plan accuracies in {info['contexts']} contexts (model, data, pruning"
        f" set-up), {info['bytes'] / 1e3:.1f} KB"
    )


@cache_app.command("clear")
@command
def cache_clear_cmd(cache: CacheDirOpt = None) -> None:
    """Remove every stored accuracy."""
    from cpcdrl_deploy.search.accuracy_cache import clear_cache, default_cache_dir

    root = cache or default_cache_dir()
    typer.echo(f"removed {clear_cache(root)} plan accuracies from {root}")


testbed_app = typer.Typer(
    help="An emulated Raspberry Pi on this machine (root): network namespace, slow CPU, shaped link, sshd.",
    no_args_is_help=True,
)
app.add_typer(testbed_app, name="testbed")
NameOpt = Annotated[str, typer.Option("--name", help="testbed host name (its SSH alias)")]


ThrottleOpt = Annotated[
    str,
    typer.Option(
        "--throttle",
        help="how the CPU is slowed: duty (a real-time task takes the rest of every 250 us) or quota (CFS)",
    ),
]


@testbed_app.command("up")
@command
def testbed_up(
    name: NameOpt = "pi",
    cpu: Annotated[float, typer.Option("--cpu", help="share of one core")] = 0.25,
    bandwidth: Annotated[str, typer.Option("--bandwidth", help="link rate, e.g. 200KB/s or 1.6Mbit")] = "200KB/s",
    throttle: ThrottleOpt = "duty",
) -> None:
    """Create the emulated device and register it as an SSH host."""
    from cpcdrl_deploy.devices import testbed

    st = testbed.up(name, cpu, bandwidth, log=_err, throttle=throttle)
    typer.echo(
        f"{st.name}: {st.user}@{st.device_ip}, cpu {st.cpu}, {st.bandwidth_bytes_per_s / 1e3:g} KB/s; try: cpcdrl"
        f" profile --host {st.name}"
    )


@testbed_app.command("down")
@command
def testbed_down(name: NameOpt = "pi") -> None:
    """Remove everything `testbed up` made."""
    from cpcdrl_deploy.devices import testbed

    removed = testbed.down(name)
    typer.echo(f"removed {name}: " + (", ".join(removed) or "nothing was left"))


@testbed_app.command("link")
@command
def testbed_link(
    name: NameOpt = "pi",
    bandwidth: Annotated[str | None, typer.Option("--bandwidth", help="set the link rate once, e.g. 50KB/s")] = None,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="CSV of time_s,rate rows (e.g. 20,50KB/s), replayed from now")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Change a running testbed's link rate: once (--bandwidth) or on a schedule (--trace)."""
    from cpcdrl_deploy.devices import linktrace, testbed

    if (bandwidth is None) == (trace is None):
        raise CpcdrlError("give one of --bandwidth RATE or --trace FILE")
    points = (
        linktrace.read_trace(trace)
        if trace is not None
        else [linktrace.TracePoint(0.0, testbed.parse_bandwidth(bandwidth or ""))]
    )
    testbed.running(name)  # before a trace's first wait, not after it
    applied = linktrace.replay(
        points, lambda bps: testbed.set_rate(name, bps), log=_err if len(points) > 1 else lambda s: None
    )
    if fmt is Format.json:
        _print_json({"name": name, "applied": applied})
        return
    typer.echo(
        f"{name}: link at {applied[-1]['bytes_per_s'] / 1e3:g} KB/s"
        + (f" after {len(applied)} changes" if len(applied) > 1 else "")
    )


@testbed_app.command("status")
@command
def testbed_status(fmt: FormatOpt = Format.table) -> None:
    """Show the testbeds that are up."""
    from cpcdrl_deploy.devices import testbed

    rows = testbed.status()
    if fmt is Format.json:
        _print_json(rows)
        return
    if not rows:
        typer.echo("no testbed is up")
    for r in rows:
        sshd = "running" if r["sshd_running"] else "NOT running"
        cpu = f"cpu {r['cpu']} ({r['throttle']}" + (
            f", duty cycle {'running' if r['duty_cycle_running'] else 'NOT running'})"
            if r["throttle"] == "duty"
            else ")"
        )
        typer.echo(
            f"{r['name']}: {r['user']}@{r['device_ip']} {cpu} link {r['bandwidth_bytes_per_s'] / 1e3:g} KB/s, sshd"
            f" {sshd}"
        )


OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="profile file (default device_profiles/<host>.json)")]
RoundsOpt = Annotated[
    int,
    typer.Option(
        "--rounds", min=1, help="passes over each batch of models, seconds apart; each reports its median pass"
    ),
]
PythonOpt = Annotated[str | None, typer.Option("--python", help="device-side interpreter with numpy + the runtime")]
TrustHostKeyOpt = Annotated[bool, typer.Option("--trust-host-key", help="accept and record an unknown SSH host key")]
ProfileRuntimeOpt = Annotated[
    list[EdgeRuntime],
    typer.Option(
        "--runtime",
        help="time the models in onnxruntime and/or litert (repeat the option: "
        "both are then timed side by side in the same passes; tables kept as MODEL and MODEL@litert)",
    ),
]
RequestProbeOpt = Annotated[
    bool,
    typer.Option(
        "--request-probe/--no-request-probe",
        help="also time real KServe v2 requests from the device to a "
        "server here: the link's per-request overhead (needs --bind unless the host is a testbed)",
    ),
]
BindOpt = Annotated[
    str | None, typer.Option("--bind", help="this host's address the device reaches, for the request probe")
]
ColdGapMsOpt = Annotated[
    float,
    typer.Option(
        "--cold-gap-ms",
        min=0,
        help="also time each whole head and tail after this much idle, as a served request finds it (0: do not)",
    ),
]


def _link_line(link: Any) -> str:
    """A measured link in one line: rates, RTT and, with the request probe, the cost per request."""
    extra = f", {link.request_overhead_ms:.2f} ms per request (request probe)" if link.request_probe else ""
    return (
        f"link: {link.uplink_bytes_per_s / 1e3:.1f} KB/s up, {link.downlink_bytes_per_s / 1e3:.1f} KB/s"
        f" down, RTT {link.rtt_ms:.1f} ms{extra}"
    )


ClassesOpt = Annotated[
    int | None,
    typer.Option(
        "--classes",
        min=2,
        help="the class count of the checkpoints you will optimise (default: the zoo entry's; 1000 for"
        " torchvision's): the last layer is timed at that size",
    ),
]


@app.command("profile")
@command
def profile_cmd(
    host: Annotated[str, typer.Option("--host", help="'local', an ssh_config alias, or user@host[:port]")] = "local",
    model: ProfileModelsOpt = ["mobilenet"],  # noqa: B006
    input_size: InputSizeOpt = None,
    out: OutOpt = None,
    grid: Annotated[str, typer.Option("--grid", help="kept channel fractions")] = "0.25,0.5,0.75,1.0",
    threads: Annotated[int, typer.Option("--threads", min=1, help="ONNX Runtime intra-op threads")] = 1,
    repeats: Annotated[int, typer.Option("--repeats", min=1)] = 20,
    warmup: Annotated[int, typer.Option("--warmup", min=0)] = 5,
    rounds: RoundsOpt = 4,
    python: PythonOpt = None,
    trust_host_key: TrustHostKeyOpt = False,
    timeout: Annotated[float, typer.Option("--timeout", help="SSH connect time-out, s")] = 10.0,
    runtime: ProfileRuntimeOpt = [  # noqa: B006
        EdgeRuntime.onnxruntime
    ],
    request_probe: RequestProbeOpt = True,
    bind: BindOpt = None,
    cold_gap_ms: ColdGapMsOpt = 20.0,
    classes: ClassesOpt = None,
    whole_passes: Annotated[
        int, typer.Option("--whole-passes", min=1, help="times each whole head and tail is timed, spread over the run")
    ] = 3,  # profiler.WHOLE_PASSES
    fmt: FormatOpt = Format.table,
) -> None:
    """Measure per-layer latency tables (and the link, over SSH) on a host."""
    from cpcdrl_deploy.core.fileio import check_writable
    from cpcdrl_deploy.devices.remote import connect
    from cpcdrl_deploy.measure.profiler import profile_host
    from cpcdrl_deploy.models.zoo import model_key

    check_writable(out, "--out")

    try:
        fractions = tuple(sorted(float(g) for g in grid.split(",")))
    except ValueError:
        raise CpcdrlError(f"--grid {grid!r}: expected numbers separated by commas") from None
    if not fractions or fractions[-1] != 1.0 or fractions[0] <= 0:
        raise CpcdrlError("--grid must be fractions in (0, 1] and include 1.0")
    dest = out or Path("device_profiles") / f"{host.replace('@', '_').replace(':', '_')}.json"
    probe_at = None
    if request_probe and host != "local":
        from cpcdrl_deploy.serving.session import server_address

        try:
            probe_at = server_address(host, bind)
        except CpcdrlError:
            _err(
                f"note: no request probe ({host} is not a testbed: pass --bind ADDRESS it reaches); the link is priced"
                " from SSH transfers alone"
            )
    dev = connect(host, python, trust_host_key, timeout)
    try:
        with _progress(fmt) as tick:
            prof = profile_host(
                dev,
                [model_key(m, input_size) for m in model],
                dest,
                fractions,
                threads,
                warmup,
                repeats,
                measure_link_too=host != "local",
                rounds=rounds,
                log=_err,
                tick=tick,
                runtime=[r.value for r in runtime] or ["onnxruntime"],
                request_probe_at=probe_at,
                cold_gap_ms=cold_gap_ms,
                classes=classes,
                whole_passes=whole_passes,
            )
    finally:
        dev.close()
    if fmt is Format.json:
        _print_json(prof.to_data())
        return
    typer.echo(f"wrote {dest}: {', '.join(prof.tables)} on {prof.host.get('hostname') if prof.host else host}")
    if prof.link:
        typer.echo(_link_line(prof.link))


@app.command("compare")
@command
def compare_cmd(
    model: Annotated[str, typer.Argument(help=ModelHelp)],
    edge: Annotated[str, typer.Option("--edge", help="measured edge profile")],
    cloud: Annotated[str, typer.Option("--cloud", help="measured cloud profile")],
    link: Annotated[str | None, typer.Option("--link")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="PNG of all three across cut points")] = None,
    input_size: InputSizeOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Estimated (MACs, tables) vs directly measured latency at every cut."""
    from cpcdrl_deploy.measure.compare import compare, plot_compare
    from cpcdrl_deploy.models.zoo import model_key

    res = compare(model_key(model, input_size), edge, cloud, link)
    if plot is not None:
        plot_compare(res, plot)
        _err(f"wrote {plot}")
    if fmt is Format.json:
        _print_json(res)
        return
    rows = [
        [
            r["cut"],
            r["name"],
            f"{r['direct']['edge_ms']:.2f}",
            f"{r['direct']['transfer_ms']:.1f}",
            f"{r['direct']['cloud_ms']:.2f}",
            f"{r['direct']['total_ms']:.1f}",
            f"{r['table']['total_ms']:.1f}",
            f"{r['table_error_pct']:+.1f}%",
            f"{r['analytic']['total_ms']:.1f}",
            f"{r['analytic_error_pct']:+.1f}%",
        ]
        for r in res["rows"]
    ]
    typer.echo(
        _table(rows, ["cut", "layer", "edge ms", "link ms", "cloud ms", "measured", "table", "err", "MAC est.", "err"])
    )
    fi = res["fidelity"]
    typer.echo(
        f"per-layer tables vs measured: median {fi['total_table']['median_abs_pct']:.1f}%, worst"
        f" {fi['total_table']['worst_abs_pct']:.1f}% (edge side median"
        f" {fi['edge_table'].get('median_abs_pct', 0):.1f}%); MAC estimate: median"
        f" {fi['total_analytic']['median_abs_pct']:.1f}%, worst {fi['total_analytic']['worst_abs_pct']:.1f}%"
    )
    ratio, interp = fi.get("pruned_head_ratio"), fi.get("pruned_head_interpolated")
    if ratio:  # profiles that timed pruned heads
        typer.echo(
            f"{len(res['pruned_heads'])} pruned heads: the unpruned head x the tables' ratio median"
            f" {ratio['median_pct']:+.1f}%, worst {ratio['worst_abs_pct']:.1f}%"
            + (
                f"; interpolated from the other heads (leave one out) median {interp['median_pct']:+.1f}%, "
                f"worst {interp['worst_abs_pct']:.1f}%"
                if interp
                else ""
            )
        )
    for side in ("edge", "total"):
        if f"ranks_{side}_table" in fi:
            t, m = fi[f"ranks_{side}_table"], fi[f"ranks_{side}_analytic"]
            typer.echo(
                f"order and ratios ({'heads on the edge' if side == 'edge' else 'whole splits'}): tables Spearman"
                f" {t['spearman']:.2f}, ratio error median {t['ratio_error_median_pct']:.1f}%; MAC estimate Spearman"
                f" {m['spearman']:.2f}, ratio error median {m['ratio_error_median_pct']:.1f}%"
            )


TransferOpt = Annotated[
    Transfer | None,
    typer.Option(
        "--transfer", help="cut tensor on the wire: fp32, fp16 (cast), int8 (per-tensor quantised); default: the plan's"
    ),
]
QuantizeOpt = Annotated[
    str | None, typer.Option("--quantize", help="int8: static quantisation of the head (ONNX Runtime, QDQ)")
]
PlanArg = Annotated[Path, typer.Argument(help="plan.json from cpcdrl optimize")]


ExportOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="directory for head.onnx, tail.onnx, full.onnx, manifest.json")
]
ExportDataOpt = Annotated[
    str | None, typer.Option("--data", "-d", help="CIFAR-10 the plan was made on (default: the plan's)")
]
TritonOpt = Annotated[
    Path | None, typer.Option("--triton", help="also write the tail as a Triton model repository here")
]
KserveOpt = Annotated[
    bool,
    typer.Option(
        "--kserve",
        help="also write OUT/inferenceservice.yaml, a KServe InferenceService serving the tail's Triton repository"
        " (--triton, default OUT/triton)",
    ),
]
StorageUriOpt = Annotated[
    str | None,
    typer.Option("--storage-uri", help="with --kserve: where you upload the Triton repository (s3://, gs://, pvc://)"),
]


@app.command("export")
@command
def export_cmd(
    plan: PlanArg,
    out: ExportOutOpt = Path("export"),
    data: ExportDataOpt = None,
    checkpoint: CheckpointOpt = None,
    quantize: QuantizeOpt = None,
    transfer: TransferOpt = None,
    triton: TritonOpt = None,
    runtime: RuntimeOpt = None,
    kserve: KserveOpt = False,
    storage_uri: StorageUriOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Export a plan as ONNX head (pruned, edge) and tail (cloud), checked in ONNX Runtime."""
    from cpcdrl_deploy.core.fileio import check_writable
    from cpcdrl_deploy.deploy.export import export_plan
    from cpcdrl_deploy.deploy.kserve import write_inference_service
    from cpcdrl_deploy.search.planset import is_plan_set

    triton = _kserve_triton(kserve, storage_uri, triton, out, is_plan_set(plan))
    check_writable(out, "--out", directory=True)
    check_writable(triton, "--triton", directory=True)
    if is_plan_set(plan):
        return _export_set(plan, out, data, checkpoint, quantize, transfer, triton, runtime, fmt)
    with _progress(fmt) as tick:
        m = export_plan(
            plan,
            out,
            data,
            checkpoint,
            quantize,
            transfer.value if transfer else None,
            triton,
            log=_err,
            tick=tick,
            runtime=runtime.value if runtime else None,
        )
    tail = m.files.get("tail")
    isvc = write_inference_service(out, tail.model_name, storage_uri) if kserve and tail else None
    if fmt is Format.json:
        _print_json(m.to_data() | ({"kserve_inference_service": str(isvc)} if isvc else {}))
        return
    rows = [
        [
            role,
            f.file,
            f"{(f.bytes or 0) / 1e3:.1f} KB",
            ", ".join(f"{t.name} {t.datatype}{t.shape}" for t in f.inputs),
            ", ".join(f"{t.name} {t.datatype}{t.shape}" for t in f.outputs),
        ]
        for role, f in m.files.items()
    ]
    typer.echo(_table(rows, ["part", "file", "size", "inputs", "outputs"]))
    c = m.check
    typer.echo(
        f"split vs pruned PyTorch: max |diff| {c['split_vs_pytorch_max_abs']:.1e}; after {m.transfer}"
        f" transfer{' and int8 head' if m.quantize else ''}: agreement {c['agreement_with_pytorch_pct']:.1f} %,"
        f" accuracy {c['accuracy_pct']:.2f} % (PyTorch {c['pytorch_accuracy_pct']:.2f} %) on {c['images']} test images"
    )
    if triton:
        typer.echo(f"Triton model repository: {triton}")
    if isvc:
        typer.echo(f"KServe InferenceService: {isvc}" + ("" if storage_uri else " (fill in its storageUri)"))
    elif kserve:
        _err("note: no KServe manifest: this plan runs everything on the device, there is no tail to serve")


def _kserve_triton(kserve: bool, storage_uri: str | None, triton: Path | None, out: Path, is_set: bool) -> Path | None:
    """``--kserve``'s checks, before minutes of export; the Triton repository to write (``OUT/triton`` by default)."""
    from cpcdrl_deploy.deploy.kserve import inference_service

    if not kserve:
        if storage_uri is not None:
            raise CpcdrlError("--storage-uri goes with --kserve")
        return triton
    if is_set:
        raise CpcdrlError("--kserve takes one plan; export a set's members one by one for KServe")
    inference_service("tail", storage_uri)  # refuses a storage URI that is no URI
    return triton or out / "triton"


def _export_set(plan, out, data, checkpoint, quantize, transfer, triton, runtime, fmt) -> None:
    """``export plans.json`` of a plan set: each member in its own folder, the set beside them; one row each."""
    from cpcdrl_deploy.deploy.export import export_set

    if triton is not None:
        raise CpcdrlError("--triton takes one plan; export a set's members one by one for Triton")
    opts = dict(data=data, checkpoint=checkpoint, quantize=quantize, transfer=transfer.value if transfer else None)
    with _progress(fmt) as tick:
        ms = export_set(plan, out, log=_err, tick=tick, runtime=runtime.value if runtime else None, **opts)
    if fmt is Format.json:
        return _print_json({name: m.to_data() for name, m in ms.items()})
    rows = [
        [name, ", ".join(m.files), f"{m.check['agreement_with_pytorch_pct']:.1f} %", f"{m.check['accuracy_pct']:.2f} %"]
        for name, m in ms.items()
    ]
    typer.echo(_table(rows, ["plan", "files", "agreement with PyTorch", "accuracy"]))
    typer.echo(f"serve every tail of the set with: cpcdrl serve {out}")


TokenEnvOpt = Annotated[
    str, typer.Option("--token-env", help="environment variable holding the bearer token (unset: no token)")
]


class Engine(str, Enum):
    embedded = "embedded"
    triton = "triton"


EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine", help="embedded: this package's server; triton: NVIDIA Triton through PyTriton (--triton-python)"
    ),
]
TritonPythonOpt = Annotated[
    str | None,
    typer.Option(
        "--triton-python",
        help="with --engine triton: a Python with nvidia-pytriton whose libpython is its own"
        " (default: $CPCDRL_TRITON_PYTHON, else ~/.cpcdrl/triton-env/bin/python)",
    ),
]
MaxBatchOpt = Annotated[int, typer.Option("--max-batch", min=1, help="with --engine triton: rows per batched run")]
QueueDelayOpt = Annotated[
    int, typer.Option("--queue-delay-us", min=0, help="with --engine triton: how long a request waits for a batch")
]


@app.command("serve")
@command
def serve_cmd(
    export_dir: Annotated[Path, typer.Argument(help="directory written by cpcdrl export")],
    host: Annotated[str, typer.Option("--host", help="address to listen on (loopback unless told)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    threads: Annotated[int, typer.Option("--threads", min=1, help="ONNX Runtime intra-op threads")] = 1,
    token_env: TokenEnvOpt = "CPCDRL_TOKEN",
    engine: EngineOpt = Engine.embedded,
    triton_python: TritonPythonOpt = None,
    max_batch: MaxBatchOpt = 8,  # serving.triton.MAX_BATCH
    queue_delay_us: QueueDelayOpt = 500,  # serving.triton.QUEUE_DELAY_US
) -> None:
    """Serve the tail over the KServe v2 / Open Inference Protocol (tritonclient works unchanged)."""
    import os

    from cpcdrl_deploy.serving.server import exposure_warning, make_server

    token = os.environ.get(token_env) or None
    if engine is Engine.triton:
        return _serve_triton(export_dir, host, port, threads, token, triton_python, max_batch, queue_delay_us)
    if (warn := exposure_warning(host, token)) is not None:
        _err(f"warning: {warn}")
    httpd = make_server(export_dir, host, port, token, threads)
    h, p = httpd.server_address[:2]
    _err(
        f"serving {', '.join(httpd.cpcdrl_models)} on http://{h}:{p} (KServe v2{', bearer token' if token else ''});"
        " Ctrl-C"
        " stops"
    )
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
        _err(f"served {httpd.cpcdrl_stats.requests} requests, refused {httpd.cpcdrl_stats.errors}")


def _serve_triton(export_dir, host, port, threads, token, triton_python, max_batch, queue_delay_us) -> None:
    """``serve --engine triton``: the tails on Triton in its own Python until Ctrl-C; the batch sizes it ran."""
    import signal

    from cpcdrl_deploy.serving.triton import TritonServer, tail_specs, triton_python_problem
    from cpcdrl_deploy.serving.triton import triton_python as pick_python

    if token is not None:
        raise CpcdrlError(
            "--engine triton takes no bearer token: Triton checks no Authorization header that PyTriton lets us set;"
            " serve on 127.0.0.1 behind an authenticating proxy (docs/deploying.md), or use the embedded engine"
        )
    models = tail_specs(export_dir)  # a bad export fails before the engine starts
    python = pick_python(triton_python)
    if (problem := triton_python_problem(python)) is not None:
        raise CpcdrlError(problem)
    from cpcdrl_deploy.serving.server import exposure_warning

    if (warn := exposure_warning(host, None)) is not None:  # HTTP, gRPC and metrics all listen there
        _err(f"warning: {warn}")
    srv = TritonServer(models, python, host, port, max_batch=max_batch, queue_delay_us=queue_delay_us, threads=threads)
    _err(f"{srv.banner}; Ctrl-C stops")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0) and srv.proc.poll() is None:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        _err(f"batch sizes run: {srv.stop()}")


PlansOpt = Annotated[
    list[Path], typer.Argument(help="two or more plan.json files (the first is the reference of the ratios)")
]
EdgeOpt = Annotated[
    str, typer.Option("--edge", help="'local', an ssh_config alias (e.g. the testbed's 'pi'), or user@host[:port]")
]
BenchOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="directory for bench-report.json, bench.png and the exports")
]
ServerBindOpt = Annotated[
    str | None,
    typer.Option("--bind", help="server address the edge reaches (default: loopback, or the testbed's link)"),
]
EdgeProfileOpt = Annotated[
    str | None, typer.Option("--edge-profile", help="profile for the predictions (default: the first plan's)")
]
CloudProfileOpt = Annotated[
    str | None, typer.Option("--cloud-profile", help="profile for the predictions (default: the first plan's)")
]
ProfileBeforeRoundsOpt = Annotated[
    Path | None,
    typer.Option(
        "--profile-before-rounds",
        help="profile the edge and this host into this folder "
        "once everything is uploaded, right before the rounds, and judge those profiles' "
        "estimates (the plans keep the profiles they were made with)",
    ),
]


@app.command("bench")
@command
def bench_cmd(
    plans: PlansOpt,
    edge: EdgeOpt = "local",
    seconds: Annotated[float, typer.Option("--seconds", help="requests' time per plan, at least")] = 10.0,
    block: Annotated[int, typer.Option("--block", min=1, help="requests per plan per visit, at least")] = 3,
    slice_ms: Annotated[float, typer.Option("--slice-ms", help="time per plan per visit, at least")] = 100.0,
    min_rounds: Annotated[int, typer.Option("--min-rounds", min=1, help="interleaved rounds, at least")] = 5,
    images: Annotated[int, typer.Option("--images", min=1, help="distinct test images, sent in turn")] = 64,
    out: BenchOutOpt = Path("bench"),
    bind: ServerBindOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds, every network call of the edge runner")] = 10.0,
    edge_profile: EdgeProfileOpt = None,
    cloud_profile: CloudProfileOpt = None,
    trust_host_key: TrustHostKeyOpt = False,
    runtime: RuntimeOpt = None,
    profile_before_rounds: ProfileBeforeRoundsOpt = None,
    seed: SeedOpt = 0,
    fmt: FormatOpt = Format.table,
) -> None:
    """Measure plans against each other on the device, interleaved; rank and ratio fidelity of each estimate."""
    from cpcdrl_deploy.core.fileio import check_writable
    from cpcdrl_deploy.deploy.bench import BenchRequest, bench, summary_lines

    check_writable(out, "--out", directory=True)
    if profile_before_rounds is not None:
        check_writable(profile_before_rounds, "--profile-before-rounds", directory=True)
    req = BenchRequest(
        list(plans),
        edge=edge,
        out=out,
        seconds=seconds,
        block=block,
        slice_ms=slice_ms,
        min_rounds=min_rounds,
        images=images,
        bind=bind,
        timeout_s=timeout,
        edge_profile=edge_profile,
        cloud_profile=cloud_profile,
        trust_host_key=trust_host_key,
        seed=seed,
        runtime=runtime.value if runtime else None,
        profile_before_rounds=profile_before_rounds,
    )
    with _progress(fmt) as tick:
        rep = bench(req, log=_err, tick=tick)
    _show_report(rep, fmt, summary_lines, omit="records")
    if rep["failed"]:  # the figures of the plans left stand, but a script must not take them for the whole bench
        _err(f"{len(rep['failed'])} of {len(plans)} plans failed: {', '.join(sorted(rep['failed']))}")
        raise typer.Exit(1)


RequestsOpt = Annotated[
    int, typer.Option("--requests", "-n", min=1, help="test images sent end to end, one per request")
]
DeployOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="directory for the export, deploy-report.json and deploy.png")
]
FallbackOpt = Annotated[
    bool, typer.Option("--fallback", help="answer on the edge (full model) when the server cannot be reached")
]
DeployEdgeProfileOpt = Annotated[
    str | None, typer.Option("--edge-profile", help="profile for the predictions (default: the plan's)")
]
DeployCloudProfileOpt = Annotated[
    str | None, typer.Option("--cloud-profile", help="profile for the predictions (default: the plan's)")
]
ProbeOpt = Annotated[
    bool,
    typer.Option(
        "--probe/--no-probe",
        help="time the whole model beside the requests; scale the tables by the speed now vs profiled",
    ),
]


AdaptiveOpt = Annotated[
    bool, typer.Option("--adaptive", help="PLAN is a plan set: follow the uplink, switching plans (needs --trace)")
]
TraceOpt = Annotated[
    Path | None, typer.Option("--trace", help="--adaptive: time_s,rate rows replayed on the testbed's link")
]
StaticsOpt = Annotated[
    bool, typer.Option("--statics/--no-statics", help="--adaptive: also run each plan alone under the trace")
]


def _deploy_adaptive(plan, edge, trace, seconds, out, statics, bind, timeout, trust_host_key, seed, fmt) -> None:
    """``deploy --adaptive``: the set under the trace, and each of its plans alone; a table per phase."""
    from cpcdrl_deploy.deploy.adaptive import AdaptiveRequest, deploy_adaptive, summary_lines
    from cpcdrl_deploy.search.planset import is_plan_set

    if trace is None:
        raise CpcdrlError("--adaptive replays a link trace on the testbed: give --trace trace.csv")
    if not is_plan_set(plan):
        raise CpcdrlError(f"{plan}: --adaptive takes a plan set (optimize --bandwidth-range ... --out plans.json)")
    areq = AdaptiveRequest(
        plan, trace, seconds, edge, out, statics=statics, bind=bind, timeout_s=timeout, trust_host_key=trust_host_key
    )
    areq.seed = seed
    with _progress(fmt) as tick:
        rep = deploy_adaptive(areq, log=_err, tick=tick)
    _show_report(rep, fmt, summary_lines, omit="trace_applied")
    bad = {n: c for n, c in rep["checks"].items() if c["failed"] or c["agreement_with_pytorch_pct"] != 100.0}
    if rep["aborted"] or bad:
        _err(f"runs with failed or wrong answers: {', '.join(sorted(set(bad) | set(rep['aborted'])))}")
        raise typer.Exit(1)


@app.command("deploy")
@command
def deploy_cmd(
    plan: PlanArg,
    edge: EdgeOpt = "local",
    cloud: Annotated[str, typer.Option("--cloud", help="where the tail runs: 'local' (this machine)")] = "local",
    requests: RequestsOpt = 50,
    data: Annotated[str | None, typer.Option("--data", "-d", help="CIFAR-10 (default: the plan's)")] = None,
    out: DeployOutOpt = Path("deploy"),
    transfer: TransferOpt = None,
    quantize: QuantizeOpt = None,
    fallback: FallbackOpt = False,
    bind: ServerBindOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds, every network call of the edge runner")] = 10.0,
    edge_profile: DeployEdgeProfileOpt = None,
    cloud_profile: DeployCloudProfileOpt = None,
    trust_host_key: TrustHostKeyOpt = False,
    seed: SeedOpt = 0,
    probe: ProbeOpt = True,
    runtime: RuntimeOpt = None,
    adaptive: AdaptiveOpt = False,
    trace: TraceOpt = None,
    seconds: Annotated[float, typer.Option("--seconds", help="--adaptive: seconds of requests per run")] = 60.0,
    statics: StaticsOpt = True,
    fmt: FormatOpt = Format.table,
) -> None:
    """Run a plan for real: head on the edge, tail on this machine; measured vs estimated latency."""
    from cpcdrl_deploy.core.fileio import check_writable
    from cpcdrl_deploy.deploy.run import DeployRequest, deploy, summary_lines

    check_writable(out, "--out", directory=True)
    if adaptive or trace is not None:
        return _deploy_adaptive(plan, edge, trace, seconds, out, statics, bind, timeout, trust_host_key, seed, fmt)
    with _progress(fmt) as tick:
        rep = deploy(
            DeployRequest(
                plan,
                edge,
                cloud,
                requests,
                data,
                out,
                transfer.value if transfer else None,
                quantize,
                fallback,
                bind,
                timeout,
                edge_profile,
                cloud_profile,
                trust_host_key,
                seed,
                probe,
                runtime.value if runtime else None,
            ),
            log=_err,
            tick=tick,
        )
    _show_report(rep, fmt, summary_lines, omit="records")
    if fmt is Format.table:
        _err(
            f"wrote {out / 'deploy-report.json'}"
            + (f" and {out / 'deploy.png'}" if (out / "deploy.png").exists() else "")
        )
    if rep["aborted"]:
        raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        from cpcdrl_deploy import __version__

        typer.echo(f"cpcdrl {__version__}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
]


@app.callback()
def _root(version: VersionOpt = False) -> None:
    """Split a DNN between an edge device and a cloud server, prune the edge half (CPCDRL)."""


def main() -> int:
    """Run the CLI; a usage mistake (unknown option, bad value) is one ``error:`` line like every other bad input.

    In standalone mode typer draws usage errors in a box over several lines;
    here they are caught and printed the way ``command`` prints a CpcdrlError.
    """
    try:  # typer >= 0.25 raises its vendored copy of click's exceptions, older typer click's own
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions as cx  # type: ignore[no-redef]

    try:
        rv = app(standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:  # a bare group (``cpcdrl``, ``cpcdrl cache``): its help, as before
        typer.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        return exc.exit_code
    except cx.UsageError as exc:
        where = f"; try '{exc.ctx.command_path} --help'" if exc.ctx else ""
        _err(f"error: {exc.format_message().rstrip('.')}{where}")
        return exc.exit_code
    except cx.ClickException as exc:
        _err(f"error: {exc.format_message()}")
        return exc.exit_code
    except typer.Abort:
        _err("aborted")
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
