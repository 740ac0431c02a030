"""What several subcommands share: JSON output, the flags naming a space, a device and a profile
database, and their parsing into the library's objects (bad values are one CodesignError line)."""

from __future__ import annotations

import json

from ..errors import CodesignError

DB_HELP = "profile database (default: user cache dir, or $CODESIGN_DB)"
SCHEDULE_HELP = ("schedule policy: tuned (MetaSchedule, a trial budget spread by each kernel's share of "
                 "the cost; see --tune-trials), untuned (quick: TVM's default loops, 10-30x slower than tuned "
                 "for dense convs; CPU only), dlight (rule-based schedules) or metaschedule:<trials> (the same "
                 "trials for every kernel). Default: tuned on CPUs, dlight on GPUs")
TUNE_TRIALS_HELP = ("mean MetaSchedule trials per kernel under --schedule tuned (default {n}); records are kept "
                    "in the tuning database beside the profile database, so a kernel is tuned once")


def print_json(obj) -> None:
    """Print obj as indented JSON (the --json output of every subcommand)."""
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def add_space_flags(parser, space_default: str | None = None, space_help: str | None = None,
                    input_shape_help: str | None = None, default=None) -> None:
    """``--space``, ``--space-arg KEY=VALUE`` (repeatable) and, with ``input_shape_help``, ``--input-shape``.

    ``default`` is the argparse default of every flag (``argparse.SUPPRESS`` lets a caller tell
    given flags from defaults)."""
    parser.add_argument("--space", default=space_default if default is None else default,
                        help=space_help or "search space (see `codesign spaces`)")
    parser.add_argument("--space-arg", action="append", default=[] if default is None else default,
                        metavar="KEY=VALUE",
                        help="a constructor argument of the space, e.g. c=16, cells=2, config=fbnet (repeatable)")
    if input_shape_help:
        parser.add_argument("--input-shape", default=None if default is None else default, help=input_shape_help)


def add_device_flags(parser, device_default: str | None = "cpu-local", device_help: str | None = None,
                     schedule_help: str = SCHEDULE_HELP, db: bool = True) -> None:
    """``--device``, ``--schedule`` and (with ``db``) ``--db``."""
    parser.add_argument("--device", default=device_default,
                        help=device_help or f"device name or YAML file (default {device_default}; `codesign devices`)")
    parser.add_argument("--schedule", default=None, help=schedule_help)
    if db:
        parser.add_argument("--db", default=None, help=DB_HELP)


def add_tune_trials_flag(parser) -> None:
    """``--tune-trials``: the trial budget of the tuned policy (mean trials per kernel)."""
    from ..profile.schedules import DEFAULT_TUNE_TRIALS

    parser.add_argument("--tune-trials", type=int, default=DEFAULT_TUNE_TRIALS,
                        help=TUNE_TRIALS_HELP.format(n=DEFAULT_TUNE_TRIALS))


def add_statistic_flag(parser) -> None:
    """``--statistic``: how timed repeats become one latency (recorded with every number)."""
    parser.add_argument("--statistic", default="median", choices=["median", "min"],
                        help="how the timed repeats become the latency: median (default; robust to the odd "
                             "repeat other jobs disturb) or min (the least disturbed repeat)")


def add_ray_flags(parser, what: str) -> None:
    """``--workers N`` / ``--ray auto|ADDRESS``: run ``what`` as Ray tasks (docs/distributed.md)."""
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help=f"{what} as Ray tasks on a local Ray of N CPUs, started for this run (needs "
                             "pip install 'codesign[ray]')")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help=f"{what} on a running Ray cluster: auto (the one this machine belongs to) or "
                             "HOST:PORT of its head; --workers then caps the tasks in flight")


def key_values(items: list[str], flag: str = "--space-arg") -> dict:
    """``["c=16", "config=fbnet"]`` -> ``{"c": 16, "config": "fbnet"}`` (ints, then floats, else strings)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CodesignError(f"{flag} takes KEY=VALUE, got {item!r}")
        for cast in (int, float):
            try:
                out[key.strip()] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = value
    return out


def parse_shape(text: str, flag: str = "--input-shape") -> tuple[int, ...]:
    """``"1,3,32,32"`` -> ``(1, 3, 32, 32)``; anything else is one CodesignError line."""
    try:
        shape = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise CodesignError(f"{flag} takes N,C,H,W integers, got {text!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise CodesignError(f"{flag} takes four positive integers N,C,H,W, got {text!r}")
    return shape
