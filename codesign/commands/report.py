"""``codesign report``: the HTML report of a run directory, or of several runs on one page."""

from __future__ import annotations

from .common import print_json


def register(sub) -> None:
    r = sub.add_parser(
        "report", help="write the HTML report of a run (or compare several runs on one page)",
        description="Write one self-contained HTML file (figures inline, no network access when opened) of a "
        "run directory: the search per epoch against the budgets, the architecture probabilities, the network "
        "found, predicted against measured cost, the per-kernel or per-layer breakdown, the --compare results and "
        "the commands that repeat, train or export the result. `codesign search` writes it into every run "
        "directory as report.html. With --compare, several runs on one page with the Pareto front of their "
        "results.",
    )
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run directory (several with --compare)")
    r.add_argument("--compare", action="store_true", help="compare several run directories on one page")
    r.add_argument("--out", default=None,
                   help="output file (default RUN_DIR/report.html; with --compare, compare-report.html here)")
    r.add_argument("--json", action="store_true", help="print the written path, figure count and problems as JSON")
    r.set_defaults(func=_report)


def _report(args) -> int:
    from pathlib import Path

    from ..errors import CodesignError
    from ..pipeline.rundir import read_run_config
    from ..report import write_comparison, write_report

    # A config of another format or version, or with damaged settings, is refused here; the report
    # reads the checked settings (those a run of an earlier codesign lacks at their defaults).
    settings = [read_run_config(run).to_dict() if (Path(run) / "config.json").is_file() else None
                for run in args.runs]
    if args.compare:
        report = write_comparison(args.runs, args.out or "compare-report.html", settings)
    elif len(args.runs) > 1:
        raise CodesignError(f"{len(args.runs)} run directories given: add --compare to put them on one page")
    else:
        report = write_report(args.runs[0], args.out, settings[0])
    if args.json:
        print_json({"report": str(report.path), "figures": report.figures, "problems": report.problems})
        return 0
    for problem in report.problems:
        print(f"warning: {problem}")
    print(f"wrote {report.path} ({report.figures} figures)")
    return 0
