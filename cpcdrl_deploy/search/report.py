"""Tables and PNG plots of optimisation results (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from cpcdrl_deploy.core.fileio import atomic_write_bytes
from cpcdrl_deploy.core.plotting import plt, save_figure
from cpcdrl_deploy.search.plan import PlanRecord
from cpcdrl_deploy.search.result import OptimizeResult


def methods_table(plans: list[PlanRecord]) -> str:
    """Markdown table: one row per method."""
    lines = [
        "| method | cut | edge ms | transfer ms | cloud ms | total ms | val acc % | test acc % | plans scored |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        if not p.feasible:
            lines.append(f"| {p.method} | - | - | - | - | none meets A0 | - | - | {p.evaluations} |")
            continue
        lat, acc = p.latency_ms, p.accuracy
        test = f"{acc.test:.2f}" if acc.test is not None else "-"
        if acc.meets_a0_on_test is False:
            test += " (below A0)"  # met on validation, not on the test images
        val = f"{acc.validation:.2f}" if acc.validation is not None else "-"
        lines.append(
            f"| {p.method} | {p.cut} | {lat['edge_ms']:.1f} | {lat['transfer_ms']:.1f} | {lat['cloud_ms']:.1f} | "
            f"{lat['total_ms']:.1f} | {val} | {test} | {p.evaluations} |"
        )
    return "\n".join(lines)


def explain_plan(plan: PlanRecord, input_bytes: int, unpruned_channels: list[int]) -> str:
    """One sentence for people: where the plan runs what, and what crosses the link."""
    if not plan.feasible or plan.cut is None or plan.channels is None or plan.cut_bytes is None:
        return f"{plan.method}: no plan met the accuracy target"
    cut, n = plan.cut, plan.n_layers
    if cut == 0:
        return f"{plan.method}: everything runs on the server; the edge sends the {input_bytes:,} B image"
    if cut == n:
        return f"{plan.method}: everything runs on the edge; nothing crosses the link"
    kept, full = plan.channels[cut - 1], unpruned_channels[cut - 1]
    pruned = f", pruned to {kept} of {full} channels" if kept < full else ""
    return (
        f"{plan.method}: layers 1-{cut} run on the edge (up to {plan.cut_name}{pruned}) and send"
        f" {plan.cut_bytes:,} B instead of the {input_bytes:,} B image; layers {cut + 1}-{n} run on the server"
    )


def plot_rewards(rewards: dict[str, list[float]], path: Path, title: str = "") -> None:
    """Reward vs episode (the paper's Fig. 3), raw and as a 10-episode moving average."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for method, r in rewards.items():
        line = ax.plot(range(1, len(r) + 1), r, alpha=0.25)[0]
        k = max(1, min(10, len(r)))
        avg = [sum(r[max(0, i - k + 1) : i + 1]) / len(r[max(0, i - k + 1) : i + 1]) for i in range(len(r))]
        ax.plot(range(1, len(r) + 1), avg, color=line.get_color(), label=method)
    ax.set_xlabel("episode")
    ax.set_ylabel("reward (Eq. 10)")
    ax.set_title(title or "Reward vs episode")
    ax.legend()
    save_figure(fig, path)


def plot_search_space(
    history: dict[str, list[tuple[int, float, float]]], a0: float, plans: list[PlanRecord], path: Path, title: str = ""
) -> None:
    """Every plan tried (latency vs validation accuracy), the A0 line and each method's pick."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, h in history.items():
        if h:
            ax.scatter([x[2] for x in h], [x[1] for x in h], s=6, alpha=0.35, label=f"{method} (tried)")
    for p in plans:
        if p.feasible and p.accuracy.validation is not None:
            ax.scatter(
                [p.latency_ms["total_ms"]],
                [p.accuracy.validation],
                marker="*",
                s=120,
                edgecolors="k",
                label=f"{p.method} pick",
            )
    ax.axhline(a0, color="r", linestyle="--", linewidth=1, label="A0 (validation)")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title or "Plans tried")
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


def plot_latency_vs(
    xs: list[float], series: dict[str, list[float | None]], xlabel: str, path: Path, title: str = ""
) -> None:
    """Latency of each method against an accuracy requirement or loss (Fig. 4/5); None = infeasible."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    markers = "os^vD<>p"
    for i, (method, ys) in enumerate(series.items()):
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)], label=method)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def latency_at_bandwidth(plan: PlanRecord, link: dict, bytes_per_s: float) -> float | None:
    """A plan's predicted latency if the link ran at ``bytes_per_s`` (its compute and RTT unchanged); None if
    infeasible."""
    if not plan.feasible or plan.cut is None or plan.n_layers is None:
        return None
    lat = plan.latency_ms
    if plan.cut >= plan.n_layers:
        return lat["total_ms"]  # nothing crosses the link
    rtt = link["rtt_ms"] + (link.get("request_overhead_ms") or 0.0)  # per request, whatever the rate
    wire = max(0.0, lat["transfer_ms"] - rtt) * link["uplink_bytes_per_s"] / bytes_per_s
    ret = lat.get("return_ms", 0.0) * link.get("downlink_bytes_per_s", link["uplink_bytes_per_s"]) / bytes_per_s
    return lat["edge_ms"] + wire + rtt + lat["cloud_ms"] + ret


def plot_latency_vs_bandwidth(result: OptimizeResult, path: Path) -> None:
    """Each method's plan priced across link speeds (the split-computing papers' figure), the run's link marked."""
    link = result.link
    bws = [10 ** (3.5 + 0.1 * i) for i in range(36)]  # ~3 KB/s .. ~10 MB/s
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for p in result.plans:
        ys = [latency_at_bandwidth(p, link, b) for b in bws]
        if any(y is not None for y in ys):
            ax.plot(
                [b / 1e3 for b in bws],
                [float("nan") if y is None else y for y in ys],
                label=f"{p.method} (cut {p.cut})",
            )
    ax.axvline(
        float(link["uplink_bytes_per_s"] or 0.0) / 1e3, color="k", linestyle=":", linewidth=1, label="this run's link"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("link bandwidth (KB/s)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{result.model}: each method's plan vs bandwidth (plans fixed; --bandwidth re-optimises)", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def write_report(result: OptimizeResult, out_dir: str | Path) -> list[Path]:
    """results.json, table.md and the plots of one optimize run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [result.save(out / "results.json")]
    written.append(atomic_write_bytes(out / "table.md", (methods_table(result.plans) + "\n").encode()))
    if result.rewards:
        plot_rewards(result.rewards, out / "rewards.png", f"{result.model}: reward vs episode")
        written.append(out / "rewards.png")
    plot_search_space(
        result.history, result.a0_validation, result.plans, out / "plans.png", f"{result.model}: plans tried"
    )
    written.append(out / "plans.png")
    if result.link:
        plot_latency_vs_bandwidth(result, out / "latency_vs_bandwidth.png")
        written.append(out / "latency_vs_bandwidth.png")
    return written
