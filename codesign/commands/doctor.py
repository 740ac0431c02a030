"""``codesign doctor``: one screen of what this machine can do for codesign and what is missing."""

from __future__ import annotations

from .common import DB_HELP, print_json

_MARKS = {"ok": "ok", "missing": "!!", "note": "--"}


def register(sub) -> None:
    d = sub.add_parser(
        "doctor", help="what this machine can do, and what is missing (with fixes)",
        description="Check the compiler, OpenMP, the C++ core, TVM and its FFI pin, onnxruntime, Triton and a "
        "GPU, energy counters (RAPL, NVML) or modelled energy, the profile and tuning databases, Ray and "
        "Chromium. Nothing is changed. Marks: ok works, -- works with a limit, !! missing (with its fix).",
    )
    d.add_argument("--db", default=None, help=DB_HELP)
    d.add_argument("--json", action="store_true", help="print the checks as JSON")
    d.set_defaults(func=_doctor)


def _doctor(args) -> int:
    from ..doctor import machine, run_checks

    checks = run_checks(args.db)
    info = machine()
    if args.json:
        print_json({"machine": info, "checks": [c.to_dict() for c in checks]})
        return 0
    print(f"codesign {info['codesign']} on {info['platform']}, {info['cpus']} CPUs, Python {info['python']}")
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"  {_MARKS[c.status]}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != "ok":
            print(f"      {'':<{width}}  fix: {c.fix}")
    missing = sum(c.status == "missing" for c in checks)
    print(f"{missing} missing" if missing else "nothing missing")
    return 0
