"""ONNX Runtime vs LiteRT on the edge device: whole models and plan heads, fp32 and int8, timed interleaved in one
sitting.

    python benchmarks/runtime_compare.py [--host pi] [--models mobilenet,vgg16] [--out \
        benchmarks/results/runtime_compare]

For each model: the whole model and heads at two cuts, unpruned and pruned
uniformly to keep 0.5. Weights are constants, one per tensor, as the
profiler makes them (``profiling.make_constant``: latency does not depend on
their values, and the files gzip to almost nothing over the device's slow
link; real VGG16 weights are 60 MB per file). Each is
built four ways: ONNX fp32 (what `export` writes), ONNX int8 (`export
--quantize int8`: static QDQ, calibrated on 64 training images, float I/O),
LiteRT fp32 (`export --runtime litert`: litert-torch) and LiteRT int8
(ai-edge-quantizer's static_wi8_ai8 recipe on the same 64 images; its input
and output are int8 too, so it also skips the float boundary). All files go to
the device and are timed by the profiler's device-side code
(cpcdrl_deploy/ondevice/timer.py ``time_jobs``): every round visits every file in
turn, so a slow spell of the device falls on all of them alike, and each
file reports its median round. Results: results.json and README-ready
table.md under --out.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cpcdrl_deploy.compress.pruning import PruneConfig, channel_groups, prune
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_bytes, atomic_write_json, read_json
from cpcdrl_deploy.deploy.export import onnx_model_bytes
from cpcdrl_deploy.devices.remote import connect
from cpcdrl_deploy.measure.profiler import PROFILER, make_constant, time_on_device
from cpcdrl_deploy.measure.runtimes import check_runtime, tflite_bytes, tflite_int8
from cpcdrl_deploy.measure.runtimes import onnx_int8 as quantize_onnx
from cpcdrl_deploy.models.data import load_images
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import build_model, get_entry

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CUTS = {"mobilenet": (8, 20), "vgg16": (4, 10), "tinyvgg": (3, 5)}


def build(model_name: str, calib: np.ndarray, workdir: Path, log) -> list[dict]:
    """Every (plan, runtime, precision) file for one model, gzipped into ``workdir``; their job records."""
    net = build_model(model_name)
    a = analyze(net, get_entry(model_name).input_size, model_name)
    groups = channel_groups(net, a)
    shape = tuple(a.input_shape)
    plans = [("whole", a.n_layers, 1.0)] + [(f"head {c}", c, k) for c in CUTS[model_name] for k in (1.0, 0.5)]
    jobs = []
    for label, cut, keep in plans:
        m = net if keep == 1.0 else prune(net, a, cut, [keep] * cut, None, PruneConfig(refit=False), groups).model
        m = make_constant(copy.deepcopy(m))
        head = nn.Sequential(*m.units()[: a.points[cut].unit_boundary]).eval()
        onnx_fp32 = onnx_model_bytes(head, shape, "input", "cut")
        onnx_int8 = quantize_onnx(onnx_fp32, calib)
        lite_fp32 = tflite_bytes(head, shape)
        lite_int8 = tflite_int8(lite_fp32, calib)
        plan = f"{label}" + (f" keep {keep:g}" if keep < 1 else "")
        for rt, prec, blob, ext in (
            ("onnxruntime", "fp32", onnx_fp32, "onnx"),
            ("onnxruntime", "int8", onnx_int8, "onnx"),
            ("litert", "fp32", lite_fp32, "tflite"),
            ("litert", "int8", lite_int8, "tflite"),
        ):
            jid = f"{model_name}_{cut}_{keep:g}_{rt}_{prec}"
            (workdir / f"{jid}.{ext}.gz").write_bytes(gzip.compress(blob, 6))
            jobs.append(
                {
                    "id": jid,
                    "file": f"{jid}.{ext}.gz",
                    "input_shape": [1, *shape],
                    "model": model_name,
                    "plan": plan,
                    "cut": cut,
                    "keep": keep,
                    "runtime": rt,
                    "precision": prec,
                    "bytes": len(blob),
                }
            )
        log(f"{model_name} {plan}: built 4 files")
    return jobs


def paired(lite: dict, ort: dict) -> tuple[float, float, float]:
    """LiteRT / ONNX Runtime per round (the two timed minutes apart at most, in the same pass): median, min, max."""
    r = sorted(a / b for a, b in zip(lite["round_means_ms"], ort["round_means_ms"]))
    return statistics.median(r), r[0], r[-1]


def table(rows: list[dict]) -> str:
    out = [
        (
            "| model | plan | ORT fp32 ms | LiteRT fp32 ms | LiteRT / ORT (rounds) | ORT int8 ms | LiteRT int8 ms |"
            " LiteRT / ORT (rounds) |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["model"], r["plan"], r["runtime"], r["precision"]): r for r in rows}
    for model, plan in dict.fromkeys((r["model"], r["plan"]) for r in rows):
        cells = []
        for prec in ("fp32", "int8"):
            o, lt = by[(model, plan, "onnxruntime", prec)], by[(model, plan, "litert", prec)]
            med, lo, hi = paired(lt, o)
            cells += [f"{o['median_ms']:.2f}", f"{lt['median_ms']:.2f}", f"{med:.2f} ({lo:.2f}-{hi:.2f})"]
        out.append(f"| {model} | {plan} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def summarise(rows: list[dict]) -> dict:
    by = {(r["model"], r["plan"], r["runtime"], r["precision"]): r for r in rows}
    out = {}
    for prec in ("fp32", "int8"):
        meds = [
            paired(by[(m, p, "litert", prec)], by[(m, p, "onnxruntime", prec)])[0]
            for m, p in dict.fromkeys((r["model"], r["plan"]) for r in rows)
        ]
        out[prec] = {
            "median_litert_over_ort": statistics.median(meds),
            "litert_faster": sum(x < 1 for x in meds),
            "plans": len(meds),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="pi")
    ap.add_argument("--models", default="mobilenet,vgg16")
    ap.add_argument("--data", default=str(SHARED / "datasets" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--window-ms", type=float, default=200.0, help="per file per round")
    ap.add_argument("--out", default="benchmarks/results/runtime_compare")
    ap.add_argument(
        "--table-only",
        action="store_true",
        help="rewrite table.md (and the summary) from OUT/results.json; time nothing",
    )
    args = ap.parse_args()
    if args.table_only:
        doc = read_json(Path(args.out) / "results.json")
        doc["summary"] = summarise(doc["rows"])
        atomic_write_json(Path(args.out) / "results.json", doc)
        atomic_write_bytes(Path(args.out) / "table.md", (table(doc["rows"]) + "\n").encode())
        print(table(doc["rows"]))
        print(json.dumps(doc["summary"]))
        return 0
    log = lambda s: print(s, file=sys.stderr, flush=True)
    out = Path(args.out)
    torch.set_num_threads(2)
    try:
        ds = load_images(args.data)
        calib = ds.train.tensors(np.arange(64))[0].numpy()
        dev = connect(args.host)
    except CpcdrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        check_runtime(dev, "onnxruntime")
        facts = check_runtime(dev, "litert")
        with tempfile.TemporaryDirectory() as tmp:
            jobs = []
            for m in args.models.split(","):
                jobs += build(m, calib, Path(tmp), log)
            remote = dev.mkdtemp()
            try:
                dev.put(PROFILER, f"{remote}/timer.py")
                for j in jobs:
                    dev.put(Path(tmp) / j["file"], f"{remote}/{j['file']}")
                (Path(tmp) / "job.json").write_text(
                    json.dumps([{k: j[k] for k in ("id", "file", "input_shape")} for j in jobs])
                )
                opts = (
                    f"--threads 1 --warmup 5 --repeats {4 * args.rounds} --rounds {args.rounds} --min-time-ms"
                    f" {round(args.window_ms * args.rounds)}"
                )
                t0 = time.time()
                started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                log(f"timing {len(jobs)} files on {dev.name}, {args.rounds} interleaved rounds")
                timed = time_on_device(dev, remote, Path(tmp) / "job.json", opts, timeout=3600)
            finally:
                dev.remove(remote)
    except CpcdrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        dev.close()
    rows = [
        {**j, **{k: timed[j["id"]][k] for k in ("median_ms", "mean_ms", "p10_ms", "p90_ms", "round_means_ms")}}
        for j in jobs
    ]
    summary = summarise(rows)
    doc = {
        "host": dev.name,
        "device": facts,
        "started": started,
        "timing_s": round(time.time() - t0, 1),
        "rounds": args.rounds,
        "window_ms": args.window_ms,
        "rows": rows,
        "summary": summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", doc)
    text = table(rows)
    atomic_write_bytes(out / "table.md", (text + "\n").encode())
    print(text)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
