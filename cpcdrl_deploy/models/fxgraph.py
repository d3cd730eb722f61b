"""Units of any traceable model, found from its graph: no hand-written list per architecture.

``torch.fx`` traces the model into a graph whose nodes are in execution
order. After a node, the model may be cut where exactly one tensor made so
far is still needed later (in a residual block the skip tensor is live too,
so a block is never cut inside). Of the cut places between two consecutive
prunable layers (convolutions and linear layers) the last is taken, so each
unit is a prunable layer with what follows it (batch norm, activation,
pooling, the residual add): the same units the hand-written CIFAR models
have. Each unit is a small ``GraphModule`` that references the model's own
modules, so in-place channel pruning of the model is seen by its units and
the model's ``state_dict`` is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx, nn

from cpcdrl_deploy.core.errors import CpcdrlError

PRUNABLE = (nn.Conv2d, nn.Linear)


class _Tracer(fx.Tracer):
    """torch.nn's modules are leaves by default; so is any subclass of a prunable layer (a scoring copy's packed
    convolution is one: its forward branches on the tensor's layout, which fx cannot trace)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, PRUNABLE) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` as a torch.fx graph, or one error line naming what could not be traced."""
    try:
        graph = _Tracer().trace(model)
        return fx.GraphModule(model, graph, class_name=type(model).__name__)
    except Exception as exc:  # noqa: BLE001 - fx raises many kinds for data-dependent control flow
        first = (str(exc).splitlines() or [""])[0]
        raise CpcdrlError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {first}); "
            "a model with data-dependent control flow needs its forward written without it"
        ) from None


def _is_prunable(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), PRUNABLE)


def cut_places(gm: fx.GraphModule) -> list[int]:
    """Positions ``p`` in ``gm``'s node list after which exactly one tensor node is live (used after ``p``).

    Parameters and constants (``get_attr``) are not counted: a unit that
    needs one reads it itself.
    """
    nodes = [n for n in gm.graph.nodes if n.op != "get_attr"]
    pos = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((pos[u] for u in n.users if u in pos), default=pos[n]) for n in nodes}
    places = []
    for p, n in enumerate(nodes[:-1]):  # the output node ends the graph: nothing to cut after it
        live = [m for m in nodes[: p + 1] if last_use[m] > p]
        if len(live) == 1 and live[0] is n and n.op != "output":
            places.append(p)
    return places


def unit_boundaries(gm: fx.GraphModule) -> list[int]:
    """The cut places that end units: of those between two prunable layers, the last (see the module docstring)."""
    nodes = [n for n in gm.graph.nodes if n.op != "get_attr"]
    prunable_at = [i for i, n in enumerate(nodes) if _is_prunable(gm, n)]
    if not prunable_at:
        raise CpcdrlError("the model has no Conv2d or Linear layer to prune or to cut after")
    places = cut_places(gm)
    chosen: list[int] = []
    for nxt in prunable_at[1:]:  # before each prunable layer after the first: the last place before it
        before = [p for p in places if p < nxt and (not chosen or p > chosen[-1])]
        if before and before[-1] >= prunable_at[0]:
            chosen.append(before[-1])
    return chosen


def _segment(gm: fx.GraphModule, nodes: list[fx.Node], first: int, last: int) -> fx.GraphModule:
    """Nodes ``first..last`` as a module: one input (the tensor crossing into it), one output (node ``last``)."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    inside = nodes[first : last + 1]
    for n in inside:
        for arg in n.all_input_nodes:
            if arg in env:
                continue
            if arg.op == "get_attr":
                env[arg] = graph.node_copy(arg, lambda a: env[a])
            elif arg not in inside:  # the one tensor crossing in (cut_places guarantees there is one)
                env[arg] = graph.placeholder("x")
        env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(env[nodes[last]])
    return fx.GraphModule(gm, graph, class_name="Unit")


UnitSpec = tuple[str, Callable[[torch.Tensor], torch.Tensor], list[nn.Module]]


def graph_units(model: nn.Module) -> list[UnitSpec]:
    """(name, forward, the modules it calls) of each unit of ``model``, in order."""
    gm = trace(model)
    nodes = [n for n in gm.graph.nodes if n.op != "get_attr"]
    ends = [*unit_boundaries(gm), len(nodes) - 2]  # the last unit ends at the node the output returns
    out: list[UnitSpec] = []
    start = 1  # node 0 is the input placeholder
    for end in ends:
        seg = _segment(gm, nodes, start, end)
        mods = [m for m in seg.modules() if m is not seg and not list(m.children())]
        name = next((str(n.target) for n in nodes[start : end + 1] if _is_prunable(gm, n)), nodes[end].name)
        out.append((name, seg, mods))
        start = end + 1
    return out
