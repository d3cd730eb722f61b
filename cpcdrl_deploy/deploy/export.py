"""A plan as deployable ONNX: ``head.onnx`` (the pruned layers 1..p) and ``tail.onnx`` (p+1..N).

The pruned, refitted weights are rebuilt from the plan exactly as the search
built them (same calibration images, same seed), so the exported split is the
model whose accuracy the plan reports. Every file is single-file ONNX (the
weights are small enough to live inside it) with a dynamic batch dimension,
and is checked in ONNX Runtime before the manifest is written:

- tail(head(x)) against the pruned PyTorch model on real images (max abs <= 1e-4 of the logits' scale);
- the tail's layers after the first (which the refit never touches) against
  the original model's, run on the same intermediate tensor.

Options beyond the paper, applied after that check and measured, not assumed:
``quantize="int8"`` (static QDQ quantisation of the head, calibrated on
training images) and ``transfer="fp16"|"int8"`` (the cut tensor is cast or
per-tensor quantised at the end of the head graph and restored at the start
of the tail graph, so any server that runs ONNX -- ours, Triton, KServe --
serves it unchanged).
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from cpcdrl_deploy import __version__
from cpcdrl_deploy.compress.transfer import check_transfer
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_bytes
from cpcdrl_deploy.core.progress import Ticker, no_ticker
from cpcdrl_deploy.measure.runtimes import RUNTIMES, Runtime, get_runtime
from cpcdrl_deploy.models.data import ImageData, subset
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import UnitModel, file_sha256, get_entry, preprocess_for
from cpcdrl_deploy.ondevice.datatypes import triton_type
from cpcdrl_deploy.ondevice.runner import load_model as load_edge_model
from cpcdrl_deploy.search.plan import Plan, load_plan
from cpcdrl_deploy.search.plan_model import calibration_images, rebuild
from cpcdrl_deploy.serving.manifest import (
    ExportManifest,
    ModelFile,
    RoleRuntimes,
    TensorSpec,
    io_specs,
    ort_session,
    run_split,
)

OPSET = 17
Log = Callable[[str], None]


EXPORT_STEPS = "export: rebuild, ONNX, check, quantise/write"


def onnx_model_bytes(m: nn.Module, input_shape: tuple[int, ...], in_name: str, out_name: str) -> bytes:
    # eval() first: the exporter restores the wrapper's mode afterwards, recursively,
    # and a fresh nn.Sequential is in training mode -- it would flip the model's
    # batch norms (shared with the units) to training
    m.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        f: Any = buf  # torch annotates a path, and takes a file object too
        torch.onnx.export(
            m,
            (torch.zeros(1, *input_shape),),
            f,
            dynamo=False,
            opset_version=OPSET,
            input_names=[in_name],
            output_names=[out_name],
            dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}},
        )
    return buf.getvalue()


def _converted_split(rt: Runtime, blob: bytes, tail_b: bytes | None, xs: np.ndarray, out: Path) -> np.ndarray:
    """The split's output with the converted head ``blob`` run here as the device runs it (batch 1; the runner's
    loader picks the runtime by the file's suffix) before the ONNX tail."""
    tmp = out / f".head_check{rt.suffix}"
    atomic_write_bytes(tmp, blob)
    try:
        model = load_edge_model(str(tmp))
        tail = ort_session(tail_b) if tail_b else None
        got = []
        for i in range(len(xs)):
            cut = model.run(xs[i : i + 1])["cut"]
            got.append(tail.run(None, {"cut": cut})[0] if tail is not None else cut)
    except Exception as exc:  # noqa: BLE001 - a head the runtime cannot load or run is one line, not a traceback
        raise CpcdrlError(f"the {rt.name} head does not run here: {type(exc).__name__}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return np.concatenate(got)


def _converted_head(
    rt: Runtime,
    head: nn.Module,
    in_shape: tuple[int, ...],
    head_onnx: bytes,
    tail_b: bytes | None,
    xs: np.ndarray,
    want: np.ndarray,
    out: Path,
) -> tuple[bytes, dict]:
    """The head built by a runtime whose file is not the ONNX model (fp32), checked image by image before the ONNX
    tail against the pruned PyTorch model.

    The dict holds the I/O specs, the largest difference and ``split_out``, the checked split's output."""
    blob = rt.build(head, in_shape)
    got = _converted_split(rt, blob, tail_b, xs, out)
    diff = float(np.abs(got - want).max())
    if diff > (tol := float_tolerance(want)):
        raise CpcdrlError(
            f"the {rt.name} head's split differs from the pruned PyTorch model by {diff:.2e} (> {tol:.1e})"
        )
    specs = io_specs(onnx.load_from_string(head_onnx))
    for t in specs["inputs"] + specs["outputs"]:
        t["shape"] = [1, *t["shape"][1:]]  # converted heads are built for a batch of 1
    return blob, {"specs": specs, "max_abs_diff": diff, "split_out": got}


def _identity_onnx(shape: tuple[int, ...]) -> bytes:
    """A head that computes nothing: ``input`` -> ``cut`` (for a cut-0 plan whose wire encodes the image)."""
    dims: list[str | int] = ["batch", *shape]
    g = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["cut"])],
        "cpcdrl_encoder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("cut", TensorProto.FLOAT, dims)],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]).SerializeToString()


def _compress_output(model: onnx.ModelProto, transfer: str) -> onnx.ModelProto:
    """End the head graph with the cast / per-tensor quantisation of its output ``cut``."""
    g = model.graph
    out = g.output[0]
    dims = [d for d in out.type.tensor_type.shape.dim]
    inner = "_cpcdrl_cut_fp32"
    for node in g.node:
        node.output[:] = [inner if o == out.name else o for o in node.output]
    del g.output[:]
    if transfer == "fp16":
        g.node.append(helper.make_node("Cast", [inner], ["cut"], to=TensorProto.FLOAT16))
        g.output.append(helper.make_tensor_value_info("cut", TensorProto.FLOAT16, None))
    else:
        # one scale / zero point per request (per tensor): the cheapest
        # dequantisable form, and what DynamicQuantizeLinear computes
        g.node.append(helper.make_node("DynamicQuantizeLinear", [inner], ["cut", "_cpcdrl_scale", "_cpcdrl_zp"]))
        g.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "_cpcdrl_shape_1"))
        g.node.append(helper.make_node("Reshape", ["_cpcdrl_scale", "_cpcdrl_shape_1"], ["cut_dq_scale"]))
        g.node.append(helper.make_node("Reshape", ["_cpcdrl_zp", "_cpcdrl_shape_1"], ["cut_dq_zero_point"]))
        g.output.append(helper.make_tensor_value_info("cut", TensorProto.UINT8, None))
        g.output.append(helper.make_tensor_value_info("cut_dq_scale", TensorProto.FLOAT, [1]))
        g.output.append(helper.make_tensor_value_info("cut_dq_zero_point", TensorProto.UINT8, [1]))
    g.output[0].type.tensor_type.shape.dim.extend(dims)
    return model


def _decompress_input(model: onnx.ModelProto, transfer: str) -> onnx.ModelProto:
    """Start the tail graph by restoring the float cut tensor from what the head sent."""
    g = model.graph
    inp = g.input[0]
    dims = [d for d in inp.type.tensor_type.shape.dim]
    inner = "_cpcdrl_cut_fp32"
    for node in g.node:
        node.input[:] = [inner if i == inp.name else i for i in node.input]
    del g.input[0]
    if transfer == "fp16":
        first = [helper.make_node("Cast", ["cut"], [inner], to=TensorProto.FLOAT)]
        new_inputs = [helper.make_tensor_value_info("cut", TensorProto.FLOAT16, None)]
    else:
        g.initializer.append(numpy_helper.from_array(np.array([], dtype=np.int64), "_cpcdrl_shape_scalar"))
        first = [
            helper.make_node("Reshape", ["cut_dq_scale", "_cpcdrl_shape_scalar"], ["_cpcdrl_scale"]),
            helper.make_node("Reshape", ["cut_dq_zero_point", "_cpcdrl_shape_scalar"], ["_cpcdrl_zp"]),
            helper.make_node("DequantizeLinear", ["cut", "_cpcdrl_scale", "_cpcdrl_zp"], [inner]),
        ]
        new_inputs = [
            helper.make_tensor_value_info("cut", TensorProto.UINT8, None),
            helper.make_tensor_value_info("cut_dq_scale", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("cut_dq_zero_point", TensorProto.UINT8, [1]),
        ]
    new_inputs[0].type.tensor_type.shape.dim.extend(dims)
    nodes = first + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    for i, v in enumerate(new_inputs):
        g.input.insert(i, v)
    return model


def _check_options(quantize: str | None, transfer: str) -> None:
    check_transfer(transfer)
    if quantize not in (None, "int8"):
        raise CpcdrlError("--quantize takes int8")


def export_plan(
    plan_path: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    checkpoint: str | Path | None = None,
    quantize: str | None = None,
    transfer: str | None = None,
    triton: str | Path | None = None,
    check_images: int = 256,
    log: Log = lambda s: None,
    tick: Ticker = no_ticker,
    runtime: str | None = None,
) -> ExportManifest:
    """Write head.onnx (or head.tflite) / tail.onnx / full.onnx and manifest.json to ``out``; return the manifest.

    ``transfer`` / ``runtime`` None: the wire and the edge runtime the plan was optimised for.
    """
    plan = load_plan(plan_path)
    transfer = transfer or plan.transfer
    runtime = runtime or plan.runtime
    get_runtime(runtime)
    _check_options(quantize, transfer)
    t0 = time.perf_counter()
    tick(EXPORT_STEPS, 0, 4)
    original, pruned, ds = rebuild(plan, data, checkpoint, plan_path)
    log(f"rebuilt {plan.model} cut {plan.cut} in {time.perf_counter() - t0:.1f} s; exporting")
    return export_models(plan, original, pruned, ds, out, quantize, transfer, triton, check_images, log, tick, runtime)


def export_set(
    set_path: str | Path, out: str | Path, log: Log = lambda s: None, tick: Ticker = no_ticker, **options
) -> dict[str, ExportManifest]:
    """A plan set: each member exported to ``out/<member>`` (``export_plan``'s ``options``), the set beside them as
    ``out/planset.json``; ``cpcdrl serve out`` then serves every member's tail under the member's name."""
    from cpcdrl_deploy.search.planset import load_set
    from cpcdrl_deploy.serving.server import SET_FILE

    set_path, out = Path(set_path), Path(out)
    planset, _ = load_set(set_path)
    manifests = {}
    for k, m in enumerate(planset.members):
        tick("plans of the set exported", k, len(planset.members))
        log(f"{m.name}: {m.plan}")
        manifests[m.name] = export_plan(set_path.with_name(m.plan), out / m.name, log=log, **options)
    tick("plans of the set exported", len(planset.members), len(planset.members))
    planset.save(out / SET_FILE)  # last: a folder with the set's file holds every member's export
    return manifests


@dataclass
class _Split:
    """The split as files: ONNX head (None at cut 0), tail (None at cut N) and full model; a head in another runtime."""

    head: bytes | None
    tail: bytes | None
    full: bytes
    cut_shape: tuple[int, ...]
    head_file: tuple[bytes, dict] | None = None  # (file, its I/O specs and check) for a head not in ONNX


def export_models(
    plan: Plan,
    original: UnitModel,
    pruned: UnitModel,
    ds: ImageData,
    out: str | Path,
    quantize: str | None = None,
    transfer: str = "fp32",
    triton: str | Path | None = None,
    check_images: int = 256,
    log: Log = lambda s: None,
    tick: Ticker = no_ticker,
    runtime: str = "onnxruntime",
) -> ExportManifest:
    """The export proper, from models ``rebuild`` made (``deploy`` reuses them for its own check).

    ``runtime``: what the head is built for (runtimes.py); the tail is ONNX for the server either way.
    """
    _check_options(quantize, transfer)
    # at cut 0 the device runs no layers (at most the wire's encoder, in ONNX): the runtime choice is moot
    rt = get_runtime(runtime) if plan.cut > 0 else RUNTIMES["onnxruntime"]
    if transfer not in rt.transfers:
        raise CpcdrlError(
            f"--runtime {rt.name} sends the cut tensor in {'|'.join(rt.transfers)} for now; for --transfer {transfer}"
            " use --runtime onnxruntime"
        )
    t0 = time.perf_counter()
    tick(EXPORT_STEPS, 1, 4)
    analysis = analyze(pruned, get_entry(plan.model).input_size, plan.model)
    b = analysis.points[plan.cut].unit_boundary
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x_check, y_check = ds.test.tensors(subset(len(ds.test), check_images, plan.seed))
    split, want = _float_split(pruned, b, x_check)
    tick(EXPORT_STEPS, 2, 4)
    check = _check_float(split, pruned.units(), original.units(), b, x_check, want, log)
    xs = x_check.numpy()
    if split.head and not rt.onnx_head:
        split.head_file = _converted_head(
            rt, nn.Sequential(*pruned.units()[:b]), tuple(x_check.shape[1:]), split.head, split.tail, xs, want, out
        )
        log(
            f"{rt.name} head checked on {len(xs)} test images: max |diff|"
            f" {split.head_file[1]['max_abs_diff']:.1e} against the pruned PyTorch model"
        )
    tick(EXPORT_STEPS, 3, 4)
    _make_lossy(split, rt, plan, ds, quantize, transfer, tuple(x_check.shape[1:]), log)
    check.update(_check_final(split, rt, xs, want, y_check.numpy(), quantize, transfer, out))
    files = _write_files(out, plan.model.replace("-", "_"), rt, split, quantize)
    manifest = _manifest(
        plan, analysis.n_layers, split, b, transfer, quantize, files, check, rt, time.perf_counter() - t0
    )
    manifest.save(out / "manifest.json")
    if triton and split.tail:
        write_triton_repo(Path(triton), files["tail"], out / "tail.onnx")
    tick(EXPORT_STEPS, 4, 4)
    log(
        f"wrote {', '.join(sorted(files))} + manifest.json to {out} "
        f"(agreement with PyTorch {check['agreement_with_pytorch_pct']:.1f} % on {len(xs)} images)"
    )
    return manifest


def _check_final(
    split: _Split,
    rt: Runtime,
    xs: np.ndarray,
    want: np.ndarray,
    y: np.ndarray,
    quantize: str | None,
    transfer: str,
    out: Path,
) -> dict:
    """The split as it will run (quantised, on its wire) against the pruned PyTorch model and the labels."""
    if split.head_file is not None:
        # the fp32 head's split was run by the check above; an int8 head is a new model
        final = (
            _converted_split(rt, split.head_file[0], split.tail, xs, out)
            if quantize
            else split.head_file[1]["split_out"]
        )
    else:
        head, tail = (ort_session(b) if b else None for b in (split.head, split.tail))
        final = run_split(head, tail, xs)
    return dict(
        agreement_with_pytorch_pct=float((final.argmax(1) == want.argmax(1)).mean() * 100.0),
        accuracy_pct=float((final.argmax(1) == y).mean() * 100.0),
        pytorch_accuracy_pct=float((want.argmax(1) == y).mean() * 100.0),
        lossy=bool(quantize is not None or (transfer != "fp32" and split.tail is not None)),
        **({"litert_head_max_abs": split.head_file[1]["max_abs_diff"]} if split.head_file is not None else {}),
    )


def _manifest(
    plan: Plan,
    n_layers: int,
    split: _Split,
    b: int,
    transfer: str,
    quantize: str | None,
    files: dict[str, ModelFile],
    check: dict,
    rt: Runtime,
    export_s: float,
) -> ExportManifest:
    """The export's manifest: what each file is, how the split was checked, and the plan it came from."""
    return ExportManifest(
        cpcdrl_version=__version__,
        model=plan.model,
        cut=plan.cut,
        n_layers=n_layers,
        cut_shape=list(split.cut_shape),
        transfer=transfer if split.head and split.tail else "fp32",
        quantize=quantize if b > 0 else None,
        preprocess={"layout": "NCHW float32", **preprocess_for(plan.model).to_dict()},
        files=files,
        check=check,
        runtime=RoleRuntimes(head=rt.name if split.head else None, tail="onnxruntime" if split.tail else None),
        plan=plan.to_data(),
        export_s=export_s,
    )


def _float_split(pruned: UnitModel, b: int, x_check: torch.Tensor) -> tuple[_Split, np.ndarray]:
    """The pruned model's units before / after boundary ``b`` as ONNX, and its outputs on ``x_check``."""
    units = pruned.units()
    with torch.no_grad():
        h = x_check
        for u in units[:b]:
            h = u(h)
        want = pruned(x_check).numpy()
    in_shape, cut_shape = tuple(x_check.shape[1:]), tuple(h.shape[1:])
    head = onnx_model_bytes(nn.Sequential(*units[:b]), in_shape, "input", "cut") if b > 0 else None
    tail = onnx_model_bytes(nn.Sequential(*units[b:]), cut_shape, "cut", "logits") if b < len(units) else None
    return _Split(head, tail, onnx_model_bytes(nn.Sequential(*units), in_shape, "input", "logits"), cut_shape), want


def float_tolerance(want: np.ndarray) -> float:
    """How far a float32 runtime may differ from PyTorch on these logits: 1e-4 of their largest magnitude (at least
    1e-4).

    Float rounding grows with the values it rounds: a heavily pruned, refitted head of a deep network (MobileNetV3
    at a quarter of its channels) gives logits in the tens and differs by 1e-3 in the last digits, while an export
    mistake changes the answer itself. Agreement of every answer is checked as well.
    """
    return 1e-4 * max(1.0, float(np.abs(want).max()))


def _check_float(
    split: _Split,
    units: Sequence[nn.Module],
    orig_units: Sequence[nn.Module],
    b: int,
    x_check: torch.Tensor,
    want: np.ndarray,
    log: Log,
) -> dict:
    """The float split must be the pruned model before anything lossy is applied, and the tail's unpruned layers the
    original's."""
    xs = x_check.numpy()
    got = run_split(
        ort_session(split.head) if split.head else None, ort_session(split.tail) if split.tail else None, xs
    )
    split_diff = float(np.abs(got - want).max())
    if split_diff > (tol := float_tolerance(want)):
        raise CpcdrlError(f"exported split differs from the pruned PyTorch model by {split_diff:.2e} (> {tol:.1e})")
    untouched_diff = 0.0
    if split.tail and b + 1 < len(units):
        with torch.no_grad():
            h = x_check
            for u in units[: b + 1]:
                h = u(h)
            ref = nn.Sequential(*orig_units[b + 1 :])(h).numpy()
        tail_rest = ort_session(onnx_model_bytes(nn.Sequential(*units[b + 1 :]), tuple(h.shape[1:]), "cut", "logits"))
        untouched_diff = float(np.abs(tail_rest.run(None, {"cut": h.numpy()})[0] - ref).max())
        if untouched_diff > 1e-4:
            raise CpcdrlError(f"the tail's unpruned layers differ from the original model by {untouched_diff:.2e}")
    log(
        f"checked in ONNX Runtime on {len(xs)} test images: split vs PyTorch max |diff| {split_diff:.1e}, untouched"
        f" layers {untouched_diff:.1e}"
    )
    return {"images": len(xs), "split_vs_pytorch_max_abs": split_diff, "untouched_layers_max_abs": untouched_diff}


def _make_lossy(
    split: _Split,
    rt: Runtime,
    plan: Plan,
    ds: ImageData,
    quantize: str | None,
    transfer: str,
    in_shape: tuple[int, ...],
    log: Log,
) -> None:
    """Quantise the head to int8 (the runtime's own quantiser) and / or encode the wire (fp16, int8), in place."""
    if split.head and quantize == "int8":
        # activations calibrated on the refit's own images (data.search_split), not a second draw
        calib_x = calibration_images(plan, ds).numpy()
        if split.head_file is not None:
            split.head_file = (rt.quantize(split.head_file[0], calib_x), split.head_file[1])
        else:
            split.head = rt.quantize(split.head, calib_x)
        log(f"head quantised to int8 ({rt.quantizer}, the plan's {len(calib_x)} calibration images)")
    if split.tail and transfer != "fp32":
        # at cut 0 the head is only the encoder: the device quantises or casts the image it sends
        head = split.head or _identity_onnx(in_shape)
        split.head = _compress_output(onnx.load_from_string(head), transfer).SerializeToString()
        split.tail = _decompress_input(onnx.load_from_string(split.tail), transfer).SerializeToString()


def _write_files(out: Path, name: str, rt: Runtime, split: _Split, quantize: str | None) -> dict[str, ModelFile]:
    """head / tail / full model files (checked, written atomically) and their manifest entries."""
    files: dict[str, ModelFile] = {}
    for stale in (
        out / f"head{r.suffix}" for r in RUNTIMES.values()
    ):  # a head of another runtime from an earlier export
        stale.unlink(missing_ok=True)
    for role, blob in (("head", split.head), ("tail", split.tail), ("full", split.full)):
        path = out / f"{role}.onnx"
        if blob is None:
            path.unlink(missing_ok=True)
            continue
        if role == "head" and split.head_file is not None:
            path = out / f"head{rt.suffix}"
            atomic_write_bytes(path, split.head_file[0])
            files[role] = ModelFile(
                file=path.name,
                sha256=file_sha256(path),
                bytes=len(split.head_file[0]),
                model_name=f"{name}_{role}",
                runtime=rt.name,
                layout="NCHW at the boundaries",
                precision=quantize or "fp32",
                io="int8 inside; the runner quantises the image and dequantises the cut tensor" if quantize else None,
                **split.head_file[1]["specs"],
            )
            continue
        onnx.checker.check_model(onnx.load_from_string(blob))
        atomic_write_bytes(path, blob)
        files[role] = ModelFile(
            file=path.name,
            sha256=file_sha256(path),
            bytes=len(blob),
            model_name=f"{name}_{role}",
            runtime="onnxruntime",
            layout="NCHW",
            precision=quantize if role == "head" and quantize else "fp32",
            **io_specs(onnx.load_from_string(blob)),
        )
    return files


def write_triton_repo(repo: Path, spec: ModelFile, onnx_path: Path) -> Path:
    """``repo/<name>/config.pbtxt`` + ``repo/<name>/1/model.onnx`` for NVIDIA Triton's onnxruntime backend.

    max_batch_size 0 with an explicit -1 batch dimension: the int8 transfer's
    per-request scale is shape [1], which Triton's implicit batching would
    otherwise require to carry a batch dimension too.
    """

    def block(kind: str, items: list[TensorSpec]) -> str:
        rows = [
            f'  {{ name: "{t.name}" data_type: {triton_type(t.datatype)} dims: [ {", ".join(map(str, t.shape))} ] }}'
            for t in items
        ]
        return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"

    name = spec.model_name
    config = (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        + block("input", spec.inputs)
        + block("output", spec.outputs)
    )
    atomic_write_bytes(repo / name / "config.pbtxt", config.encode())
    atomic_write_bytes(repo / name / "1" / "model.onnx", onnx_path.read_bytes())
    return repo / name
