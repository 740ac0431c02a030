"""The report as one self-contained HTML page: figures as inline SVG images, tables, inline CSS, no
script and nothing fetched from the network when opened."""

from __future__ import annotations

import base64
import html
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from . import figures as F
from .rundata import (
    RunData,
    arch_probs,
    cost_rows,
    decision_labels,
    finite,
    is_accelerator,
    kernel_costs,
    open_space,
    pareto_series,
    summary,
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d232b;
       background: #fafbfc; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 1.2rem 1.6rem 3rem; }
h1 { font-size: 1.5rem; margin: 0.4rem 0 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #d5dbe3; padding-bottom: 0.2rem; }
h3 { font-size: 1rem; margin-top: 1.4rem; }
.sub { color: #566170; margin: 0 0 1rem; }
nav a { margin-right: 0.9rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.88rem; background: white; }
th, td { border: 1px solid #d5dbe3; padding: 0.25rem 0.55rem; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #eef1f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.85rem;
            overflow-wrap: anywhere; }
pre { background: #f0f2f5; border: 1px solid #d5dbe3; padding: 0.6rem 0.8rem; overflow-x: auto;
      white-space: pre-wrap; word-break: break-all; }
figure { margin: 1rem 0; background: white; border: 1px solid #e1e5ea; padding: 0.5rem; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #566170; font-size: 0.85rem; margin-top: 0.3rem; }
.note { color: #566170; font-size: 0.9rem; }
.warn { color: #8a3b00; background: #fff4e5; border: 1px solid #f0c48a; padding: 0.4rem 0.6rem; }
.ok { color: #1b6e2d; font-weight: 600; } .bad { color: #a01c1c; font-weight: 600; }
"""


@dataclass
class Page:
    """An HTML page being assembled; ``problems`` lists the sections that could not be drawn."""

    title: str
    subtitle: str = ""  # HTML
    parts: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    figures: int = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def section(self, anchor: str, title: str) -> None:
        self.sections.append((anchor, title))
        self.add(f'<h2 id="{anchor}">{esc(title)}</h2>')

    def figure(self, fig, caption: str) -> None:
        """Embed a matplotlib figure as an SVG image with its caption (also the image's alt text)."""
        data = base64.b64encode(F.svg(fig).encode()).decode()
        self.figures += 1
        self.add(f'<figure><img src="data:image/svg+xml;base64,{data}" alt="{esc(caption)}">'
                 f"<figcaption>{esc(caption)}</figcaption></figure>")

    def guarded(self, what: str, draw: Callable[[], None]) -> None:
        """Draw a part of the page; if it fails, say so on the page instead of losing the report."""
        try:
            draw()
        except Exception as exc:  # a report with one part missing is better than none
            msg = f"{what} could not be drawn: {type(exc).__name__}: {exc}"
            self.problems.append(msg)
            self.add(f'<p class="warn">{esc(msg)}</p>')

    def html(self) -> str:
        nav = " ".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in self.sections)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{esc(self.title)}</title><style>{CSS}</style></head><body><main>"
                f"<h1>{esc(self.title)}</h1><p class=\"sub\">{self.subtitle}</p><nav>{nav}</nav>"
                + "".join(self.parts) + "</main></body></html>\n")


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def fmt(v, digits: int = 4, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}{unit}" if finite(v) else str(v)
    return f"{v}{unit}"


def table(rows: list[list], header: list[str] | None = None) -> str:
    """An HTML table; numbers are right-aligned and formatted to 4 significant digits."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for k, v in enumerate(row):
            tag = "th" if k == 0 and not header else "td"
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<{tag}{cls}>{esc(fmt(v))}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f} %"


# --- one run ---------------------------------------------------------------------------------------


def run_page(run: RunData) -> Page:
    """The report of one run (every section the run has data for)."""
    cfg = run.config
    page = Page(f"codesign run {run.name}")
    space = open_space(run)
    page.guarded("the summary", lambda: _summary_section(page, run))
    page.guarded("the search", lambda: _search_section(page, run, space))
    page.guarded("the network", lambda: _network_section(page, run, space))
    page.guarded("the cost check", lambda: _cost_section(page, run))
    page.guarded("the breakdown", lambda: _breakdown_section(page, run))
    if run.files.get("compare.json"):
        page.guarded("the comparison", lambda: _compare_section(page, run))
    page.guarded("the configuration", lambda: _config_section(page, run))
    dataset = ((run.results or {}).get("dataset") or {}).get("dataset", cfg["data"])
    page.subtitle = (f"{esc(cfg['space'])} space, {esc(cfg['strategy'])} on {esc(dataset)}, target "
                     f"{esc(cfg.get('hw_space') and 'hw-space:' + cfg['hw_space'] or cfg['device'])}; codesign "
                     f"{esc(run.codesign_version)}; run directory <code>{esc(run.path.resolve())}</code>")
    return page


def _summary_section(page: Page, run: RunData) -> None:
    page.section("summary", "Summary")
    r = run.results
    if r is None:
        done = ", ".join(run.phases_done()) or "none"
        page.add(f'<p class="warn">This run has not finished (phases done: {esc(done)}); the report shows what '
                 f"it has. Continue it with <code>codesign search --resume {esc(run.path)}</code>.</p>")
    s = summary(run)
    net = run.network() or {}
    rows = [["genotype", s["genotype"]], ["test accuracy", pct(s["test_accuracy"])]]
    for b in run.budget_specs():
        rows.append([f"budget {b['metric']}", f"<= {b['limit']:.4g} ({b['spec']})"])
    measured_label = "accelerator model (exported ONNX)" if is_accelerator(run) else "measured"
    for metric, unit in (("latency_ms", " ms"), ("energy_mj", " mJ"), ("area_mm2", " mm²")):
        p = (net.get("predicted") or {}).get(metric)
        m = (net.get("measured") or {}).get(metric)
        if p is not None or m is not None:
            rows.append([metric, f"predicted {fmt(p, unit=unit)}" + ("" if metric == "area_mm2" else
                                                                      f", {measured_label} {fmt(m, unit=unit)}")])
    if r:
        by = (r.get("budgets_measured_by") or {}).get("latency_ms")
        rows.append(["budgets met", f"predicted: {fmt(r.get('budgets_met_predicted'))}, measured: "
                                    f"{fmt(r.get('budgets_met_measured'))}"
                                    + (" (latency by its fastest run, as the budget's anchors were timed)"
                                       if by == "min" else "")])
        rows.append(["search", f"{fmt(r.get('search_seconds'), 3)} s, {fmt(r.get('search_passes'), 4)} "
                               "forward/backward passes"])
        if r.get("accelerator"):
            a = r["accelerator"]
            rows.append(["accelerator", f"{a['name']}, {a['area_mm2']:.4g} mm², EDP {fmt(r.get('edp_mj_ms'))} mJ·ms"])
        src = r.get("cost_source") or {}
        rows.append(["cost source", ", ".join(f"{k} {'/'.join(map(str, v)) if isinstance(v, list) else v}"
                                              for k, v in src.items() if v is not None and k != "parameters")])
    page.add(table(rows))


def _search_section(page: Page, run: RunData, space) -> None:
    epochs, cands = run.epochs(), run.candidates()
    if not epochs and not cands:
        return
    page.section("search", "Search")
    budgets = run.budgets()
    if not budgets and run.results is None:
        page.add('<p class="note">Budget lines appear once the run has finished (they are resolved against the '
                 "cost table).</p>")
    if epochs:
        page.figure(F.trajectory_figure(epochs, budgets),
                    f"{run.config['strategy']}: accuracy, expected cost against the budgets, Lagrange multipliers "
                    "and temperature, per epoch. 'derived network' is the cost of each epoch's discrete network.")
        probs = arch_probs(epochs)
        if probs:
            names, options = decision_labels(run, space, len(probs))
            if len(names) == len(probs):
                page.figure(F.arch_probs_figure([r["epoch"] for r in epochs], probs, names, options),
                            "Architecture probabilities of every decision over the epochs (rows: options).")
    if cands:
        page.figure(F.candidates_figure(cands, budgets),
                    f"{run.config['strategy']}: validation accuracy (after {run.config['candidate_epochs']} epochs of "
                    "training) and predicted cost of every candidate.")


def _network_section(page: Page, run: RunData, space) -> None:
    net = run.network()
    if net is None:
        return
    page.section("network", "The network found")
    page.add(f"<p>Genotype: <code>{esc(net['genotype'])}</code></p>")
    if space is not None:
        page.figure(F.network_figure(space.graphs(net["genotype"])),
                    f"The derived network of the {run.config['space']} space, edges labelled by op.")
    else:
        page.add('<p class="note">The space could not be rebuilt here, so the network is not drawn.</p>')
    if net.get("hardware"):
        page.add("<h3>The accelerator found with it</h3>")
        page.add(table([[k, v] for k, v in net["hardware"].items()]))


def _cost_section(page: Page, run: RunData) -> None:
    rows = cost_rows(run)
    if not rows:
        return
    page.section("costs", "Predicted against measured")
    page.figure(F.cost_check_figure(rows, run.budgets()),
                "Predicted cost of each network against its measurement"
                + (" (the accelerator model on the exported ONNX)" if is_accelerator(run) else
                   " (TVM end to end, median with standard deviation; onnxruntime beside it on this host)")
                + "; the red line is the budget.")
    m = run.files.get("measure.json")
    if m and not is_accelerator(run):
        page.add(table([["device", m.get("device")], ["schedule", m.get("schedule")],
                        ["TVM latency (ms)", f"median {fmt(m.get('latency_ms'))}, std {fmt(m.get('latency_std_ms'))}, "
                                             f"min {fmt(m.get('latency_min_ms'))} over {m.get('repeats')} repeats"],
                        ["onnxruntime latency (ms)", m.get("onnxruntime_latency_ms")],
                        ["compile (s)", m.get("compile_s")], ["energy", m.get("energy_note")],
                        ["TVM", f"{m.get('tvm_version')} on {m.get('host')}, target {json.dumps(m.get('target'))}"]]))
    elif not m and run.network():
        page.add('<p class="note">The network was not measured (--no-measure, or nothing can measure this '
                 "target); only predictions are shown.</p>")


def _breakdown_section(page: Page, run: RunData) -> None:
    m = run.files.get("measure.json") or {}
    if is_accelerator(run) and m.get("layers"):
        page.section("breakdown", "Per-layer breakdown on the accelerator")
        page.figure(F.layer_energy_figure(m["layers"]),
                    f"Every layer of the exported network on {m.get('accelerator')}: energy by memory level "
                    "and PE utilisation (the accelerator model).")
        levels = m.get("energy_by_level_mj") or {}
        page.add(table([[lvl, levels.get(lvl)] for lvl in F.LEVELS if lvl in levels] +
                       [["total energy (mJ)", m.get("energy_mj")], ["latency (ms)", m.get("latency_ms")]],
                       ["memory level", "energy (mJ)"]))
        return
    k = kernel_costs(run)
    if k is None:
        return
    page.section("breakdown", "Per-kernel breakdown")
    note = f"{k['model_kind']} cost model"
    page.figure(F.kernel_breakdown_figure(k["keys"], k["latency_ms"], k["energy_mj"], k["overhead_ms"], note,
                                          k["energy_source"] or ""),
                f"Every kernel TVM runs for the exported network, predicted by the run's {k['model_kind']} cost "
                f"model ({k['measured_kernels']} of {len(k['keys'])} kernels are profiled, their measurement is "
                f"used; energy {k['energy_source']}).")


def _compare_section(page: Page, run: RunData) -> None:
    cmp = run.files["compare.json"]
    page.section("compare", "Comparison" + (" with the sequential design" if cmp.get("strategy") == "sequential"
                                            else " with random search at equal compute"))
    series = pareto_series(run)
    metrics = [m for m in ("latency_ms", "energy_mj", "area_mm2")
               if any(p.get(m) is not None for s in series.values() for p in s["points"] + s["final"])]
    if metrics:
        page.figure(F.pareto_figure(series, metrics),
                    "Accuracy against predicted cost of every candidate (random/evolution: validation accuracy "
                    "after short training; gradient strategies: each epoch's derived network with the supernet's "
                    "validation accuracy), the Pareto front of each strategy, and the final networks as stars "
                    "(test accuracy after training from scratch).")
    main = summary(run)
    rows = [["test accuracy", pct(main["test_accuracy"]), pct(cmp.get("test_accuracy"))]]
    for metric in ("latency_ms", "energy_mj", "area_mm2"):
        a = (run.network() or {}).get("predicted", {}).get(metric)
        b = (cmp.get("predicted") or {}).get(metric)
        if a is not None or b is not None:
            rows.append([f"predicted {metric}", a, b])
    rows.append(["search passes", (run.results or {}).get("search_passes"), cmp.get("search_passes")])
    rows.append(["search seconds", (run.results or {}).get("search_seconds"), cmp.get("search_seconds")])
    rows.append(["genotype", (run.network() or {}).get("genotype"), cmp.get("genotype") or
                 (cmp.get("derived") or {}).get("genotype")])
    if cmp.get("strategy") == "sequential":
        if not cmp.get("feasible"):
            page.add(f'<p class="warn">Sequential baseline: {esc(cmp.get("reason"))}</p>')
            return
        r = run.results or {}
        chosen, seq = r.get("accelerator") or {}, cmp.get("accelerator") or {}
        rows.insert(1, ["accelerator", chosen.get("name"), seq.get("name")])
        rows.insert(2, ["EDP (mJ·ms)", r.get("edp_mj_ms"), cmp.get("edp_mj_ms")])
        page.add(table(rows, ["", f"co-search ({run.config['strategy']})", "sequential"]))
        designs = {"co-search": {**(r.get("measured") or r.get("predicted") or {}),
                                 "area_mm2": chosen.get("area_mm2"), "edp_mj_ms": r.get("edp_mj_ms"),
                                 "test_accuracy": r.get("test_accuracy")},
                   "sequential": {**(cmp.get("measured") or cmp.get("predicted") or {}),
                                  "area_mm2": seq.get("area_mm2"), "edp_mj_ms": cmp.get("edp_mj_ms"),
                                  "test_accuracy": cmp.get("test_accuracy")}}
        page.figure(F.designs_figure(designs, run.budgets()),
                    "The co-searched network and accelerator beside the sequential design (network searched on "
                    "the base accelerator, then the best accelerator of the space swept for it); costs from the "
                    "accelerator model on the exported networks.")
        levels = {"co-search": (run.files.get("measure.json") or {}).get("energy_by_level_mj"),
                  "sequential": (run.files.get("sequential-measure.json") or {}).get("energy_by_level_mj")}
        if all(levels.values()):
            page.figure(F.energy_levels_figure(levels), "Where the energy goes: each design's network energy by "
                                                        "memory level.")
        params = sorted(set(chosen.get("parameters", {})) | set(seq.get("parameters", {})))
        page.add("<h3>Accelerator parameters</h3>")
        page.add(table([[p, chosen.get("parameters", {}).get(p), seq.get("parameters", {}).get(p)] for p in params],
                       ["parameter", "co-search", "sequential"]))
    else:
        page.add(table(rows, ["", run.config["strategy"], "random (same compute)"]))


def _config_section(page: Page, run: RunData) -> None:
    page.section("config", "Configuration and commands")
    page.add(table([[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in run.config.items()],
                   ["setting", "value"]))
    d = shlex.quote(str(run.path))
    cmds = []
    if run.command:
        cmds.append(("Repeat the search (in a new run directory under runs/; --run-dir DIR to choose it)",
                     run.command))
    if run.results is None:
        cmds.append(("Continue this run where it stopped", f"codesign search --resume {d}"))
    if run.network():
        cmds.append(("Train the network found from scratch (longer)", f"codesign train {d} --epochs 100"))
        cmds.append(("Export it to ONNX (checked with onnxruntime)", f"codesign export {d} --out model.onnx"))
        if is_accelerator(run):
            cmds.append(("Evaluate it layer by layer on the chosen accelerator",
                         f"codesign hw eval --accel {shlex.quote(str(run.path / 'accelerator.yaml'))} --onnx "
                         f"{shlex.quote(str(run.path / 'model.onnx'))}"))
        elif (run.path / "cost_model.json").is_file():
            cmds.append(("Predict it per kernel with the run's cost model",
                         f"codesign predict {shlex.quote(str(run.path / 'model.onnx'))} --model "
                         f"{shlex.quote(str(run.path / 'cost_model.json'))} --per-kernel"))
    cmds.append(("Rebuild this report", f"codesign report {d}"))
    for what, cmd in cmds:
        page.add(f"<h3>{esc(what)}</h3><pre>{esc(cmd)}</pre>")


# --- several runs -------------------------------------------------------------------------------------


def comparison_page(runs: list[RunData], links: dict[str, str]) -> Page:
    """Several runs on one page: their headline numbers, the Pareto front of their results and their
    searches over the epochs. ``links``: run name -> relative path of its own report."""
    page = Page(f"codesign: {len(runs)} runs compared")
    page.subtitle = "runs: " + ", ".join(f"<code>{esc(r.path)}</code>" for r in runs)

    def results_section():
        page.section("runs", "Results")
        header = ["run", "space", "strategy", "target", "budgets", "test accuracy", "latency_ms predicted",
                  "latency_ms measured", "energy_mj predicted", "area_mm2", "search (s)", "finished"]
        rows = []
        for r in runs:
            s = summary(r)
            rows.append([s["run"], s["space"], s["strategy"], s["device"], s["budgets"], pct(s["test_accuracy"]),
                         s["predicted_latency_ms"], s["measured_latency_ms"], s["predicted_energy_mj"], s["area_mm2"],
                         s["search_seconds"], s["finished"]])
        page.add(table(rows, header))
        if links:
            page.add("<p>Each run's own report: " + " ".join(f'<a href="{esc(href)}">{esc(name)}</a>'
                                                              for name, href in links.items()) + "</p>")

    def pareto_section():
        points = []
        for r in runs:
            s, net = summary(r), r.network() or {}
            if s["test_accuracy"] is not None:
                points.append({**(net.get("predicted") or {}), "accuracy": s["test_accuracy"], "label": r.name})
        metrics = [m for m in ("latency_ms", "energy_mj", "area_mm2") if any(p.get(m) is not None for p in points)]
        if not points or not metrics:
            return
        page.section("pareto", "Pareto front of the runs")
        page.figure(F.pareto_figure({"runs": {"points": points}}, metrics),
                    "Test accuracy against predicted cost of each run's network, with the Pareto front of the runs "
                    "(costs from each run's own cost source: compare runs of one target).")

    def search_section():
        curves = {r.name: r.epochs() for r in runs if r.epochs()}
        if curves:
            page.section("searches", "Searches over the epochs")
            page.figure(F.runs_figure(curves), "Supernet validation accuracy and expected latency per epoch of "
                                               "every gradient run.")

    page.guarded("the results", results_section)
    page.guarded("the Pareto front", pareto_section)
    page.guarded("the searches", search_section)
    return page
