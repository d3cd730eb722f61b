"""Estimated vs measured latency per cut: the paper's MAC model, the measured tables, direct timings.

For every cut of an unpruned model:
- *analytic*: Eq. 5-7 with F_e, F_c from an analytic profile, or fitted to a
  measured host as (total MACs) / (measured time of the whole model there);
- *table*: the plain sum of the per-layer measurements (the optimiser
  anchors these sums to the direct head/tail timings below, which would make
  this comparison true by construction: it checks the tables alone);
- *direct*: the head (layers 1..i) timed as one model on the edge, the tail
  on the cloud, and the cut tensor over the measured link.
Errors are relative to the direct measurement, in percent.
"""

from __future__ import annotations

import dataclasses
import statistics

from cpcdrl_deploy.compress.pruning import ChannelGroup, PlanShape, channel_groups, plan_shape
from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.measure.fidelity import fidelity
from cpcdrl_deploy.measure.latency import AnalyticLatencyModel, TableLatencyModel, build_latency_model, transfer_ms
from cpcdrl_deploy.measure.profile import LinkProfile, Profile, PrunedHead, load_profile
from cpcdrl_deploy.models.graph import ModelAnalysis, analyze
from cpcdrl_deploy.models.zoo import build_model, get_entry


def fitted_rate(p: Profile, role: str, model: str) -> float:
    if p.kind == "analytic":
        return p.compute_rate(role).macs_per_s
    t = p.tables.get(model)
    if t is None:
        raise CpcdrlError(f"profile {p.name!r} has no table for {model}")
    n = len(t.layers)
    whole = next((h.ms for h in t.heads if h.cut == n), None)
    if whole is None:
        whole = next(x.ms for x in t.tails if x.cut == 0)
    return t.total_macs / (whole / 1000.0)


def _cut_row(
    a: ModelAnalysis,
    cut: int,
    shape: PlanShape,
    analytic: AnalyticLatencyModel,
    table: TableLatencyModel,
    heads: dict[int, float],
    tails: dict[int, float],
    lp: LinkProfile,
) -> dict:
    """One unpruned cut: the head and tail timed whole, against the MAC estimate and the plain table sums."""
    model = a.model
    est, tab = analytic.predict(model, shape), table.predict(model, shape)
    direct_edge = heads.get(cut, 0.0)
    direct_cloud = tails.get(cut, 0.0)
    direct_transfer = (
        transfer_ms(shape.cut_bytes, lp.uplink_bytes_per_s, lp.per_request_ms) if cut < a.n_layers else 0.0
    )
    direct = direct_edge + direct_transfer + direct_cloud
    return {
        "cut": cut,
        "name": a.points[cut].name,
        "cut_bytes": shape.cut_bytes,
        "direct": {
            "edge_ms": direct_edge,
            "transfer_ms": direct_transfer,
            "cloud_ms": direct_cloud,
            "total_ms": direct,
        },
        "table": tab.to_dict(),
        "analytic": est.to_dict(),
        "table_error_pct": 100.0 * (tab.total_ms - direct) / direct,
        "analytic_error_pct": 100.0 * (est.total_ms - direct) / direct,
        "table_edge_error_pct": 100.0 * (tab.edge_ms - direct_edge) / direct_edge if direct_edge else 0.0,
        "table_cloud_error_pct": 100.0 * (tab.cloud_ms - direct_cloud) / direct_cloud if direct_cloud else 0.0,
        "analytic_edge_error_pct": 100.0 * (est.edge_ms - direct_edge) / direct_edge if direct_edge else 0.0,
    }


def compare(model: str, edge: str, cloud: str, link: str | None = None) -> dict:
    entry = get_entry(model)
    ep, cp = load_profile(edge), load_profile(cloud)
    lp = load_profile(link).link if link else (ep.link or cp.link)
    if lp is None:
        raise CpcdrlError("no link in the profiles: profile the edge over SSH (it measures the link) or pass --link")
    if ep.kind != "measured" or cp.kind != "measured":
        raise CpcdrlError("compare needs measured profiles for --edge and --cloud (cpcdrl profile)")
    timed = ep.tables.get(model)
    net = build_model(model, timed.classes if timed is not None else None)  # as the profile timed it
    a = analyze(net, entry.input_size, model)
    groups = channel_groups(net, a)
    table = build_latency_model(ep, cp, lp)
    assert isinstance(table, TableLatencyModel)
    table = dataclasses.replace(table, anchor=False)
    f_e, f_c = fitted_rate(ep, "edge", model), fitted_rate(cp, "cloud", model)
    analytic = AnalyticLatencyModel.over(f_e, f_c, lp)
    heads = {h.cut: h.ms for h in ep.tables[model].heads}
    tails = {h.cut: h.ms for h in cp.tables[model].tails}
    rows = [
        _cut_row(a, cut, plan_shape(a, groups, cut, [1.0] * cut), analytic, table, heads, tails, lp)
        for cut in a.cuttable_points()
    ]

    # the profile's pruned heads were timed back to back: judge the anchoring on those timings, not as served
    pruned = _pruned_head_rows(model, a, groups, dataclasses.replace(table, anchor=True, cold=False))

    def summary(key: str) -> dict[str, float]:
        errs = [abs(r[key]) for r in rows if r[key] != 0.0 or key.startswith(("table_error", "analytic_error"))]
        return {"median_abs_pct": statistics.median(errs), "worst_abs_pct": max(errs)} if errs else {}

    return {
        "model": model,
        "edge": ep.name,
        "cloud": cp.name,
        "edge_host": ep.host,
        "cloud_host": cp.host,
        "fitted_macs_per_s": {"edge": f_e, "cloud": f_c},
        "link": {
            "uplink_bytes_per_s": lp.uplink_bytes_per_s,
            "downlink_bytes_per_s": lp.downlink_bytes_per_s,
            "rtt_ms": lp.rtt_ms,
        },
        "rows": rows,
        "pruned_heads": pruned,
        "fidelity": {
            "pruned_head_ratio": _abs_summary([r["ratio_error_pct"] for r in pruned]),
            "pruned_head_interpolated": _abs_summary(
                [r["interpolated_error_pct"] for r in pruned if r["interpolated_error_pct"] is not None]
            ),
            "total_table": summary("table_error_pct"),
            "total_analytic": summary("analytic_error_pct"),
            "edge_table": summary("table_edge_error_pct"),
            "cloud_table": summary("table_cloud_error_pct"),
            "edge_analytic": summary("analytic_edge_error_pct"),
            **_rank_fidelity(rows, a.n_layers),
        },
    }


def _abs_summary(errs: list[float]) -> dict[str, float]:
    return (
        {
            "median_abs_pct": statistics.median(abs(e) for e in errs),
            "median_pct": statistics.median(errs),
            "worst_abs_pct": max(abs(e) for e in errs),
        }
        if errs
        else {}
    )


def _rank_fidelity(rows: list[dict], n_layers: int) -> dict:
    """Over the heads timed at every cut (edge side) and the whole splits (end to end): does each estimate order them as
    measured, and get their ratios to the whole model (cut N) right? What an optimiser needs, whatever the host's level.
    """
    out = {}
    for side, key in (("edge", "edge_ms"), ("total", "total_ms")):
        use = [r for r in rows if r["direct"][key] > 0]
        ref = next((r for r in use if r["cut"] == n_layers), None)
        if ref is None or len(use) < 3:
            continue
        meas = [r["direct"][key] for r in use]
        for est in ("table", "analytic"):
            pred = [r[est][key] for r in use]
            out[f"ranks_{side}_{est}"] = fidelity(
                pred, meas, [p / ref[est][key] for p in pred], [m / ref["direct"][key] for m in meas]
            )
    return out


def _pruned_head_rows(model: str, a: ModelAnalysis, groups: list[ChannelGroup], table: TableLatencyModel) -> list[dict]:
    """How well the anchored edge tables predict the uniformly pruned heads the profile timed.

    Each is predicted twice without its own timing: from the unpruned head by
    the tables' ratio (the model before pruned heads were timed), and by
    interpolating between the other timed heads at that cut (leave one out:
    what the latency model does for a plan between grid keeps).
    """
    t = table.edge_tables[model]
    heads = t.pruned_heads
    rows = []
    for h in heads:
        shape = plan_shape(a, groups, h.cut, [h.keep] * h.cut)
        others = [o for o in heads if o is not h]

        def edge(pruned_heads: list[PrunedHead]) -> float:
            tables = {**table.edge_tables, model: t.model_copy(update={"pruned_heads": pruned_heads})}
            return dataclasses.replace(table, edge_tables=tables).predict(model, shape).edge_ms

        ratio = edge([])
        # interpolation needs a timed head on each side: below it at this cut, there is one only above keep 0.25
        inside = any(o.cut == h.cut and o.keep < h.keep for o in others)
        interp = edge(others) if inside else None
        rows.append(
            {
                "cut": h.cut,
                "keep": h.keep,
                "measured_ms": h.ms,
                "ratio_ms": ratio,
                "interpolated_ms": interp,
                "ratio_error_pct": 100.0 * (ratio - h.ms) / h.ms,
                "interpolated_error_pct": 100.0 * (interp - h.ms) / h.ms if interp is not None else None,
            }
        )
    return rows


def plot_compare(res: dict, path) -> None:
    """Two panels across cut points: end to end, and the edge side alone (where the tables are really tested)."""
    from pathlib import Path

    from cpcdrl_deploy.core.plotting import plt, save_figure

    rows = res["rows"]
    cuts = [r["cut"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "total_ms", "end to end"), (axes[1], "edge_ms", "edge side (layers 1..i)")):
        direct = [r["direct"][key] for r in rows]
        ax.plot(
            cuts,
            direct,
            "k-o",
            label="measured" + (" (head + link + tail)" if key == "total_ms" else " (head as one model)"),
        )
        ax.plot(cuts, [r["table"][key] for r in rows], "b--s", label="per-layer tables")
        ax.plot(cuts, [r["analytic"][key] for r in rows], "r:^", label="MAC estimate (F fitted)")
        ax.set_xlabel("cut point")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"{res['model']}: edge {res['edge']}, cloud {res['cloud']}")
    save_figure(fig, Path(path))
