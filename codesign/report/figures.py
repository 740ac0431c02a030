"""The report's figures: one function per figure, data in, a matplotlib ``Figure`` out.

Figures are built with matplotlib's object API (``Figure``, never pyplot's global state), so they
can be made in any thread and in a process without a display; ``svg`` turns one into the SVG text
the HTML page embeds. Every axis is labelled with its unit. Graphs of cells are drawn with
networkx on matplotlib axes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import CodesignError
from ..kernelspec import KernelSpec
from ..spaces.base import NetworkGraph

# Units of the cost metrics in axis labels.
METRIC_LABELS = {"latency_ms": "latency (ms)", "energy_mj": "energy (mJ)", "area_mm2": "area (mm²)"}
# Memory levels of the accelerator model, innermost first (the stacking order of energy bars).
LEVELS = ("mac", "rf", "noc", "glb", "dram")
MAX_KERNELS = 25  # kernels drawn one by one in a breakdown; the rest are summed


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def svg(fig: Figure) -> str:
    """The figure as SVG text (text kept as text, no timestamp: the same data gives the same file)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "codesign"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def kernel_label(key: str) -> str:
    """A short label of a kernel key: op, window/stride/groups, input C×H×W -> output channels."""
    try:
        s = KernelSpec.from_key(key)
    except (CodesignError, ValueError, KeyError):
        return key
    parts = [s.op]
    k = s.attr("kernel")
    if k:
        kh, kw = s.kernel_hw()
        parts.append(f"{kh}x{kw}" + (f"/{s.attr('stride')}" if (s.attr("stride") or 1) > 1 else ""))
    shape = tuple(s.input_shape)
    groups = s.attr("groups") or 1
    if groups > 1:
        parts.append("depthwise" if len(shape) == 4 and groups == shape[1] else f"g{groups}")
    dims = "×".join(str(d) for d in shape[1:])
    out = s.attr("out_channels") or s.attr("out_features")
    parts.append(dims + (f"→{out}" if out else ""))
    if (s.attr("activation") or "none") != "none":
        parts.append("+" + s.attr("activation"))
    if s.attr("residual"):
        parts.append("+add")
    return " ".join(parts)


def _epoch_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _budget_line(ax, limit: float | None) -> None:
    if limit is not None and math.isfinite(limit):
        ax.axhline(limit, color="tab:red", linestyle=":", linewidth=1.5, label=f"budget {limit:.4g}")


# --- search ---------------------------------------------------------------------------------------


def _panels(n: int) -> tuple[Figure, list]:
    """A figure of ``n`` panels over an integer x axis (epochs, candidates), two per row."""
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig = _figure(5.2 * cols, 2.8 * rows)
    axes = list(np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n]:
        _epoch_axis(ax)
    return fig, axes[:n]


def trajectory_figure(epochs: Sequence[dict], budgets: dict[str, float]) -> Figure:
    """Per epoch of a gradient search: train/validation accuracy, the expected cost of every metric
    (and the cost of the epoch's derived network) against its budget, the Lagrange multipliers and,
    for single-path strategies, the Gumbel temperature.

    Args:
        epochs: log.jsonl records (``epoch``, ``train_accuracy``, ``val_accuracy``, ``expected``,
            ``derived_cost``, ``multipliers``, ``tau``).
        budgets: metric -> limit.
    """
    x = [r["epoch"] for r in epochs]
    metrics = list(dict.fromkeys(m for r in epochs for m in (r.get("expected") or {})))
    multipliers = list(dict.fromkeys(m for r in epochs for m in (r.get("multipliers") or {})))
    has_tau = any(r.get("tau") is not None for r in epochs)
    fig, axes = _panels(1 + len(metrics) + (1 if multipliers else 0) + (1 if has_tau else 0))
    ax = axes[0]
    ax.plot(x, [100 * r["train_accuracy"] for r in epochs], marker="o", label="train (supernet)")
    val = [(e, 100 * r["val_accuracy"]) for e, r in zip(x, epochs) if r.get("val_accuracy") is not None]
    if val:
        ax.plot(*zip(*val), marker="s", label="validation (supernet)")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax.legend(fontsize="small")
    i = 1
    for m in metrics:
        ax = axes[i]
        i += 1
        ax.plot(x, [(r.get("expected") or {}).get(m, np.nan) for r in epochs], marker="o", label="expected (search)")
        derived = [(r.get("derived_cost") or {}).get(m, np.nan) for r in epochs]
        if not all(np.isnan(derived)):
            ax.plot(x, derived, marker="x", linestyle="--", label="derived network")
        _budget_line(ax, budgets.get(m))
        ax.set(xlabel="epoch", ylabel=metric_label(m), title=f"{metric_label(m)} against its budget")
        ax.legend(fontsize="small")
    if multipliers:
        ax = axes[i]
        i += 1
        for m in multipliers:
            ax.plot(x, [(r.get("multipliers") or {}).get(m, np.nan) for r in epochs], marker="o", label=m)
        ax.set(xlabel="epoch", ylabel="multiplier (per unit of log budget)", title="Lagrange multipliers")
        ax.legend(fontsize="small")
    if has_tau:
        ax = axes[i]
        ax.plot(x, [r.get("tau") if r.get("tau") is not None else np.nan for r in epochs], marker="o")
        ax.set(xlabel="epoch", ylabel="tau (dimensionless)", title="Gumbel-softmax temperature")
    return fig


def candidates_figure(candidates: Sequence[dict], budgets: dict[str, float]) -> Figure:
    """Per candidate of a sample-based search (random, evolution): its validation accuracy and the
    best so far, and its cost of every metric against the budget."""
    x = [c["candidate"] for c in candidates]
    acc = [100 * c["val_accuracy"] for c in candidates]
    metrics = list(dict.fromkeys(m for c in candidates for m in (c.get("cost") or {})))
    fig, axes = _panels(1 + len(metrics))
    ax = axes[0]
    ax.plot(x, acc, marker="o", linestyle="none", label="candidate")
    ax.plot(x, np.maximum.accumulate(acc), drawstyle="steps-post", label="best so far")
    ax.set(xlabel="candidate", ylabel="validation accuracy (%)", title="accuracy of the candidates")
    ax.legend(fontsize="small")
    for ax, m in zip(axes[1:], metrics):
        ax.plot(x, [(c.get("cost") or {}).get(m, np.nan) for c in candidates], marker="o", linestyle="none")
        _budget_line(ax, budgets.get(m))
        ax.set(xlabel="candidate", ylabel=metric_label(m), title=f"predicted {metric_label(m)}")
        if budgets.get(m) is not None:
            ax.legend(fontsize="small")
    return fig


def arch_probs_figure(epochs: Sequence[int], probs: Sequence[np.ndarray], names: Sequence[str],
                      options: Sequence[Sequence[str]]) -> Figure:
    """Architecture probabilities of every decision over the epochs, one heatmap per decision.

    Args:
        epochs: the epoch numbers (columns).
        probs: per decision an array [epochs, options].
        names: the decisions' names; options: each decision's option names.
    """
    n = len(probs)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    tallest = max(len(o) for o in options)
    fig = _figure(3.1 * cols + 0.8, (0.2 * tallest + 0.75) * rows)
    axes = list(np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel())
    image = None
    for ax, p, name, opts in zip(axes, probs, names, options):
        image = ax.imshow(np.asarray(p).T, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest",
                          extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(opts) - 0.5, -0.5))
        ax.set_yticks(range(len(opts)), labels=opts, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("epoch", fontsize=8)
        _epoch_axis(ax)
    for ax in axes[n:]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes[:n], label="probability (0-1)", shrink=0.9)
    return fig


# --- the network --------------------------------------------------------------------------------------


def _layout(graph: NetworkGraph) -> dict[int, tuple[float, float]]:
    """Node positions: a long chain wraps into rows; a cell has its inputs stacked in the first
    column and every other node in a column of its own, alternately above and below the middle
    (so that few edges cross), the output in the middle."""
    n = len(graph.nodes)
    chain = all(b == a + 1 and not op for a, b, op in graph.edges) and len(graph.edges) == n - 1
    if chain:  # rows of 6, every other one right to left: each edge joins neighbours
        per_row = n if n <= 8 else 6
        return {i: (float(i % per_row if (i // per_row) % 2 == 0 else per_row - 1 - i % per_row),
                    -float(i // per_row)) for i in range(n)}
    k = graph.inputs
    pos = {i: (0.0, (k - 1) / 2 - i) for i in range(k)}
    for j, i in enumerate(range(k, n)):
        pos[i] = (float(j + 1), 0.0 if i == n - 1 else (0.5 if j % 2 == 0 else -0.5))
    return pos


def _passes_node(pos, a: int, b: int, clearance: float = 0.25) -> bool:
    """Whether the straight edge a -> b passes within ``clearance`` of another node."""
    p, q = np.array(pos[a]), np.array(pos[b])
    d = q - p
    for n, r in pos.items():
        if n in (a, b):
            continue
        t = float(np.clip(np.dot(np.array(r) - p, d) / max(np.dot(d, d), 1e-12), 0.0, 1.0))
        if np.linalg.norm(p + t * d - np.array(r)) < clearance:
            return True
    return False


def _box_margin(label: str, direction: tuple[float, float]) -> float:
    """Points from the centre of a node's label box (8 pt text) to its border along ``direction``
    (inches), so that arrows end at the box and not under it."""
    half_w, half_h = 2.5 * len(label) + 6, 9.0
    dx, dy = abs(direction[0]), abs(direction[1])
    return min(half_w / max(dx, 1e-9), half_h / max(dy, 1e-9)) * float(np.hypot(dx, dy))


def network_figure(graphs: Sequence[NetworkGraph], title: str = "") -> Figure:
    """The derived network: each cell (or the chain of layers) as a graph, edges labelled by op."""
    import networkx as nx

    sizes = []
    for g in graphs:
        pos = _layout(g)
        xs = [p[0] for p in pos.values()]
        ys = [p[1] for p in pos.values()]
        sizes.append((max(xs) - min(xs) + 1, max(ys) - min(ys) + 1))
    x_inch = 1.9  # inches per column
    width = min(14.0, max(5.0, x_inch * max(s[0] for s in sizes)))
    heights = [max(1.8, 1.15 * s[1] + 0.9) for s in sizes]
    fig = _figure(width, sum(heights))
    axes = np.atleast_1d(fig.subplots(len(graphs), 1, squeeze=False, height_ratios=heights)).ravel()
    for ax, g, (w, h), height in zip(axes, graphs, sizes, heights):
        pos = _layout(g)
        G = nx.DiGraph()
        G.add_nodes_from(range(len(g.nodes)))
        G.add_edges_from((a, b) for a, b, _ in g.edges)
        # An edge that would run through another node is drawn as an arc, longer ones higher.
        curved = {(a, b) for a, b, _ in g.edges if _passes_node(pos, a, b)}
        arc = max((abs(pos[b][0] - pos[a][0]) for a, b in curved), default=0) * 0.25
        scale = (width / (w + 0.2), height / (h + arc))  # inches per data unit, x and y
        for a, b, op in g.edges:
            style, margins = "arc3", (9.0, 9.0)  # an arc leaves and enters a box at its top
            if (a, b) in curved:
                span = abs(pos[b][0] - pos[a][0])
                style = f"arc3,rad={-(0.22 + 0.1 * max(0.0, span - 2)):.2f}"
            else:
                d = ((pos[b][0] - pos[a][0]) * scale[0], (pos[b][1] - pos[a][1]) * scale[1])
                margins = (_box_margin(g.nodes[a], d), _box_margin(g.nodes[b], d))
            nx.draw_networkx_edges(G, pos, edgelist=[(a, b)], ax=ax, arrows=True, arrowstyle="-|>", arrowsize=12,
                                   edge_color="#555555", connectionstyle=style, node_size=0,
                                   min_source_margin=margins[0], min_target_margin=margins[1])
            if op:
                nx.draw_networkx_edge_labels(G, pos, edge_labels={(a, b): op}, ax=ax, font_size=8,
                                             connectionstyle=style, node_size=0,
                                             bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"})
        nx.draw_networkx_labels(G, pos, labels=dict(enumerate(g.nodes)), ax=ax, font_size=8,
                                bbox={"boxstyle": "round,pad=0.35", "fc": "#e8eef7", "ec": "#4a6fa5"})
        ax.set_title(g.title, fontsize=10)
        # Labels do not count in autoscaling: limits from the nodes, room for the arcs of curved edges.
        xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
        ax.set_ylim(min(ys) - 0.45, max(ys) + 0.45 + arc)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --- costs ---------------------------------------------------------------------------------------------


def cost_check_figure(rows: Sequence[dict], budgets: dict[str, float]) -> Figure:
    """Predicted against measured cost of each network of the run, one panel per metric.

    Args:
        rows: per network ``{"network": name, "latency_ms": {"predicted": v, "TVM": v, ...},
            "energy_mj": {...}}``, each inner dict mapping a source to its value (None: absent),
            and optional ``"latency_ms_std"`` {source: std} for error bars.
        budgets: metric -> limit, drawn as a line.
    """
    # A metric gets a panel where something besides the prediction has a value.
    metrics = [m for m in ("latency_ms", "energy_mj")
               if any(v is not None for r in rows for s, v in r.get(m, {}).items() if s != "predicted")]
    fig = _figure(4.8 * max(1, len(metrics)), 3.8)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(metrics)), squeeze=False)).ravel()
    for ax, m in zip(axes, metrics):
        sources = list(dict.fromkeys(s for r in rows for s, v in r.get(m, {}).items() if v is not None))
        width = 0.8 / max(1, len(sources))
        for k, src in enumerate(sources):
            xs = np.arange(len(rows)) + (k - (len(sources) - 1) / 2) * width
            vals = [r.get(m, {}).get(src) for r in rows]
            errs = [(r.get(f"{m}_std") or {}).get(src) or 0.0 for r in rows]
            bars = ax.bar(xs, [np.nan if v is None else v for v in vals], width, label=src,
                          yerr=errs if any(errs) else None, capsize=3)
            ax.bar_label(bars, labels=["" if v is None else f"{v:.3g}" for v in vals], fontsize=7, padding=2)
        _budget_line(ax, budgets.get(m))
        ax.set_xticks(range(len(rows)), labels=[r["network"] for r in rows], fontsize=8)
        ax.set(ylabel=metric_label(m), title=f"{metric_label(m)}: predicted and measured")
        ax.margins(y=0.12)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
    return fig


def kernel_breakdown_figure(keys: Sequence[str], latency_ms: Sequence[float],
                            energy_mj: Sequence[float] | None, overhead_ms: float = 0.0, note: str = "",
                            energy_note: str = "") -> Figure:
    """Latency (and energy) of every kernel of the network (kernel keys), costliest first; kernels
    beyond the 25 costliest are summed into one bar, the network's fitted overhead is one bar."""
    lat = np.asarray(latency_ms, float)
    order = np.argsort(-lat, kind="stable")
    keep, rest = list(order[:MAX_KERNELS]), list(order[MAX_KERNELS:])
    names = [f"{i}: {kernel_label(keys[i])}" for i in keep]
    lat_rows = [lat[i] for i in keep]
    en = np.asarray(energy_mj, float) if energy_mj is not None else None
    en_rows = [en[i] for i in keep] if en is not None else None
    if rest:
        names.append(f"other ({len(rest)} kernels)")
        lat_rows.append(float(lat[rest].sum()))
        if en_rows is not None:
            en_rows.append(float(en[rest].sum()))
    if overhead_ms > 0:
        names.append("network overhead (fitted)")
        lat_rows.append(overhead_ms)
        if en_rows is not None:
            en_rows.append(np.nan)
    panels = 2 if en_rows is not None else 1
    fig = _figure(5.0 + 3.2 * panels, 0.9 + 0.24 * len(names))
    axes = np.atleast_1d(fig.subplots(1, panels, squeeze=False, sharey=True)).ravel()
    y = np.arange(len(names))
    axes[0].barh(y, lat_rows, color="tab:blue")
    axes[0].set_yticks(y, labels=names, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].set(xlabel="latency (ms)", title="latency per kernel" + (f" ({note})" if note else ""))
    if en_rows is not None:
        axes[1].barh(y, en_rows, color="tab:orange")
        axes[1].set(xlabel="energy (mJ)", title="energy per kernel" + (f" ({energy_note})" if energy_note else ""))
    return fig


def layer_energy_figure(layers: Sequence[dict]) -> Figure:
    """Per layer on an accelerator: energy stacked by memory level and PE utilisation."""
    names = [f"{i}: {kernel_label(layer.get('kernel_key', ''))}" for i, layer in enumerate(layers)]
    y = np.arange(len(layers))
    fig = _figure(11.0, 1.0 + 0.24 * len(layers))
    ax, ax_u = fig.subplots(1, 2, sharey=True, width_ratios=(2.2, 1))
    left = np.zeros(len(layers))
    for level in LEVELS:
        vals = np.array([(layer.get("energy_by_level_mj") or {}).get(level, 0.0) or 0.0 for layer in layers])
        ax.barh(y, vals, left=left, label=level)
        left += vals
    ax.set_yticks(y, labels=names, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="energy (mJ)", title="energy per layer by memory level")
    ax.legend(fontsize="small", ncols=len(LEVELS), loc="lower right")
    ax_u.barh(y, [100 * (layer.get("pe_utilization") or 0.0) for layer in layers], color="tab:green")
    ax_u.set(xlabel="PE utilisation (%)", title="PE utilisation per layer", xlim=(0, 100))
    return fig


def energy_levels_figure(designs: dict[str, dict[str, float]]) -> Figure:
    """Whole-network energy by memory level of each design (e.g. co-search and sequential)."""
    fig = _figure(6.0, 1.2 + 0.5 * len(designs))
    ax = fig.subplots()
    names = list(designs)
    left = np.zeros(len(names))
    for level in LEVELS:
        vals = np.array([designs[n].get(level, 0.0) or 0.0 for n in names])
        ax.barh(names, vals, left=left, label=level)
        left += vals
    ax.invert_yaxis()
    ax.set(xlabel="energy (mJ)", title="network energy by memory level")
    ax.legend(fontsize="small", ncols=len(LEVELS))
    return fig


def designs_figure(designs: dict[str, dict], budgets: dict[str, float]) -> Figure:
    """Designs side by side (co-search against the sequential baseline): test accuracy, latency,
    energy, energy-delay product and area, each in its own panel with its budget."""
    panels = [("test_accuracy", "test accuracy (%)", 100.0), ("latency_ms", "latency (ms)", 1.0),
              ("energy_mj", "energy (mJ)", 1.0), ("edp_mj_ms", "energy-delay product (mJ·ms)", 1.0),
              ("area_mm2", "area (mm²)", 1.0)]
    panels = [p for p in panels if any(d.get(p[0]) is not None for d in designs.values())]
    fig = _figure(2.6 * len(panels) + 0.5, 3.0)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    names = list(designs)
    colors = [f"C{i}" for i in range(len(names))]
    for ax, (key, label, scale) in zip(axes, panels):
        vals = [np.nan if designs[n].get(key) is None else scale * designs[n][key] for n in names]
        bars = ax.bar(range(len(names)), vals, color=colors)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in vals], fontsize=7, padding=2)
        _budget_line(ax, budgets.get(key))
        ax.set_xticks(range(len(names)), labels=names, fontsize=8)
        ax.set(ylabel=label, title=label.split(" (")[0])
    return fig


# --- comparisons --------------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (cost, accuracy) that no other point beats on both (less cost, more accuracy),
    by increasing cost."""
    front, best = [], -math.inf
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def pareto_figure(series: dict[str, dict], metrics: Sequence[str]) -> Figure:
    """Accuracy against each cost metric for every candidate of every strategy, with each
    strategy's Pareto front; final networks are stars.

    Args:
        series: strategy -> ``{"points": [{metric: cost, "accuracy": a, "label": optional}],
            "final": [{...}]}``; accuracies in 0-1.
        metrics: the cost metrics, one panel each.
    """
    fig = _figure(5.2 * len(metrics), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(metrics), squeeze=False)).ravel()
    for ax, m in zip(axes, metrics):
        for k, (name, s) in enumerate(series.items()):
            color = f"C{k}"
            pts = [(p[m], p["accuracy"]) for p in s.get("points", []) if p.get(m) is not None
                   and p.get("accuracy") is not None]
            if pts:
                ax.scatter(*zip(*[(c, 100 * a) for c, a in pts]), s=18, color=color, alpha=0.6, label=name)
                front = pareto_front(pts)
                ax.plot([c for c, _ in front], [100 * a for _, a in front], drawstyle="steps-post", color=color,
                        linewidth=1.2)
            for p in s.get("final", []):
                if p.get(m) is None or p.get("accuracy") is None:
                    continue
                ax.scatter([p[m]], [100 * p["accuracy"]], marker="*", s=160, color=color, edgecolor="black",
                           zorder=3, label=f"{name}: final" if not pts else None)
            for p in s.get("points", []) + s.get("final", []):
                if p.get("label") and p.get(m) is not None and p.get("accuracy") is not None:
                    ax.annotate(p["label"], (p[m], 100 * p["accuracy"]), fontsize=7, xytext=(4, 4),
                                textcoords="offset points")
        ax.set(xlabel=f"predicted {metric_label(m)}", ylabel="accuracy (%)", title=f"accuracy against {m}")
        ax.legend(fontsize="small")
    return fig


def runs_figure(runs: dict[str, Sequence[dict]]) -> Figure:
    """Several runs' searches over the epochs: validation accuracy and expected latency."""
    fig = _figure(10.4, 3.2)
    ax_a, ax_l = fig.subplots(1, 2)
    for k, (name, epochs) in enumerate(runs.items()):
        color = f"C{k}"
        val = [(r["epoch"], 100 * r["val_accuracy"]) for r in epochs if r.get("val_accuracy") is not None]
        if val:
            ax_a.plot(*zip(*val), marker="o", color=color, label=name)
        lat = [(r["epoch"], r["expected"]["latency_ms"]) for r in epochs if "latency_ms" in (r.get("expected") or {})]
        if lat:
            ax_l.plot(*zip(*lat), marker="o", color=color, label=name)
    _epoch_axis(ax_a)
    _epoch_axis(ax_l)
    ax_a.set(xlabel="epoch", ylabel="validation accuracy (%)", title="supernet validation accuracy")
    ax_l.set(xlabel="epoch", ylabel="latency (ms)", title="expected latency")
    for ax in (ax_a, ax_l):
        if ax.lines:
            ax.legend(fontsize="small")
    return fig
