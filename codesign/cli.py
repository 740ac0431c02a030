"""The ``codesign`` command. Each subcommand parses its flags, calls one library function, prints.

Subcommands live in ``codesign.commands``: a module listed in ``_COMMAND_MODULES`` defines
``register(subparsers)``, adding its parsers with ``set_defaults(func=...)``; ``func(args)`` returns
an exit code. A :class:`codesign.errors.CodesignError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CodesignError

_COMMAND_MODULES = (
    "codesign.commands.ops",
    "codesign.commands.profile",
    "codesign.commands.predict",
    "codesign.commands.hw",
    "codesign.commands.search",
    "codesign.commands.l2o",
)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="codesign",
        description="Hardware co-design for deep learning: profile, predict, search under budgets.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # that part of codesign is not in this build
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CodesignError as exc:
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line, always
        print(f"codesign {_command(args)}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"codesign {_command(args)}: interrupted", file=sys.stderr)
        return 130


def _command(args) -> str:
    """The subcommand as typed (``l2o train``, ``hw eval``)."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else args.command


if __name__ == "__main__":
    sys.exit(main())
