"""Reports of run directories: one self-contained HTML file per run (or for several runs).

    from codesign.report import write_report, write_comparison
    path = write_report("runs/20250101-nb201-darts-s0")          # -> runs/.../report.html
    write_comparison(["runs/a", "runs/b"], "compare.html")

A report shows what the run has: the search per epoch (accuracy, expected cost against the
budgets, Lagrange multipliers, temperature), the architecture probabilities, the network found
drawn as a graph, predicted against measured cost, the per-kernel (or, on an accelerator,
per-layer) breakdown, the comparison of ``--compare random|sequential``, and the resolved config
with the commands that repeat, train or export the result. Figures are matplotlib SVGs embedded in
the page; the page has no script and fetches nothing when opened. ``codesign search`` writes
``report.html`` into every run directory; ``codesign report`` rebuilds it. See docs/report.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CodesignError
from ..files import check_output
from .page import comparison_page, run_page
from .rundata import RunData, check_run_dir, load_run

__all__ = ["Report", "RunData", "load_run", "write_comparison", "write_report"]


@dataclass
class Report:
    """A written report: its path, the number of figures, and the parts that could not be drawn."""

    path: Path
    figures: int
    problems: list[str]


def _check_out(out: str | Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise CodesignError(f"--out {out} is a directory; give a file name such as {out / 'report.html'}")
    if not out.parent.is_dir():
        raise CodesignError(f"--out {out}: no directory {out.parent}")
    return check_output(out, "report")


def _write(out: Path, text: str) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


def write_report(run_dir: str | Path, out: str | Path | None = None, settings: dict | None = None) -> Report:
    """Write the HTML report of one run directory (default ``<run_dir>/report.html``).

    Raises:
        CodesignError: not a run directory, a damaged run file, an unusable ``out``.
    """
    run_dir = check_run_dir(run_dir)
    out = _check_out(out if out is not None else run_dir / "report.html")
    page = run_page(load_run(run_dir, settings))
    _write(out, page.html())
    return Report(out, page.figures, page.problems)


def write_comparison(run_dirs: list[str | Path], out: str | Path, settings: list[dict | None] | None = None) -> Report:
    """Write one HTML page comparing several run directories (their results' Pareto front).

    Raises:
        CodesignError: fewer than two runs, the same run twice, a bad run directory or ``out``.
    """
    dirs = [check_run_dir(d) for d in run_dirs]
    if len(dirs) < 2:
        raise CodesignError("--compare needs at least two run directories")
    seen = set()
    for d in dirs:
        if d.resolve() in seen:
            raise CodesignError(f"{d} is given twice")
        seen.add(d.resolve())
    out = _check_out(out)
    runs = [load_run(d, s) for d, s in zip(dirs, settings or [None] * len(dirs), strict=True)]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # label runs by their path where folder names repeat
        for r in runs:
            r.label = os.path.relpath(r.path)
    links = {r.name: os.path.relpath(r.path / "report.html", out.parent) for r in runs
             if (r.path / "report.html").is_file()}
    page = comparison_page(runs, links)
    _write(out, page.html())
    return Report(out, page.figures, page.problems)
