"""Why kept channel counts are rounded to multiples of 8: ONNX Runtime CPU time of pruned CIFAR MobileNets.

    python benchmarks/channel_alignment.py [--host pi]

Times, side by side in one run on one host, the whole MobileNet unpruned and
with every layer at keep 0.8 / 0.7 / 0.5, channel counts free (round_to 1) and
rounded to multiples of 8 (the default). Weights do not matter for the time;
the models are built without refit.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

from torch import nn

from cpcdrl_deploy.compress.pruning import PruneConfig, prune
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.devices.remote import connect
from cpcdrl_deploy.measure.profiler import PROFILER, make_constant, time_on_device, timing_file
from cpcdrl_deploy.models.graph import analyze
from cpcdrl_deploy.models.zoo import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="local")
    ap.add_argument("--model", default="mobilenet")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    net = build_model(args.model)
    a = analyze(net, 32, args.model)
    variants = [("unpruned", 1.0, 1)] + [(f"keep {k} round_to {r}", k, r) for k in (0.8, 0.7, 0.5) for r in (1, 8)]
    try:
        dev = connect(args.host)
    except CpcdrlError as exc:
        raise SystemExit(f"error: {exc}") from None
    remote = dev.mkdtemp()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            jobs = []
            for i, (name, keep, rt) in enumerate(variants):
                m = (
                    copy.deepcopy(net)
                    if keep == 1.0
                    else prune(
                        net, a, a.n_layers, [keep] * a.n_layers, None, PruneConfig(refit=False, round_to=rt)
                    ).model
                )
                f = Path(tmp) / f"m{i}.onnx.gz"
                f.write_bytes(timing_file(make_constant(nn.Sequential(*m.units())), (3, 32, 32)))
                dev.put(f, f"{remote}/{f.name}")
                jobs.append({"id": name, "file": f.name, "input_shape": [1, 3, 32, 32]})
            (Path(tmp) / "job.json").write_text(json.dumps(jobs))
            dev.put(PROFILER, f"{remote}/timer.py")
            res = time_on_device(dev, remote, Path(tmp) / "job.json", f"--repeats {args.repeats}", timeout=900)
    except CpcdrlError as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        dev.remove(remote)
        dev.close()
    base = res["unpruned"]["mean_ms"]
    print(f"{args.model} on {args.host} (ONNX Runtime, 1 thread; sustained mean per run)")
    print("| variant | ms | vs unpruned |\n|---|---|---|")
    for name, *_ in variants:
        print(f"| {name} | {res[name]['mean_ms']:.3f} | {res[name]['mean_ms'] / base:.2f}x |")


if __name__ == "__main__":
    main()
