"""The ``nyxmed`` command: one module per command group; each handler parses and calls the library.

Errors: a :class:`~nyxmed.errors.NyxmedError` ends as one line ``nyxmed <command>: <message>`` on
stderr and its ``exit_code`` (docs/exit-codes.md); ``NYXMED_DEBUG=1`` also prints the traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

from nyxmed.cli import codes, code, data, demo, evaluation, releases, serve, train
from nyxmed.errors import NyxmedError

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
GROUPS = (codes, data, train, evaluation, releases, demo, code, serve)  # each has register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nyxmed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """``releases promote``, ``codes check``, ``train``: the command as typed, for error lines."""
    subs = [getattr(args, k) for k in ("codes_cmd", "benchmark_cmd", "releases_cmd") if getattr(args, k, None)]
    return " ".join([args.command, *subs])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # KEY=VALUE overrides may come after flags that follow a positional (`code FILE --out X k=v`),
    # which argparse leaves unparsed; they join the command's overrides, anything else is an error.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    source = getattr(args, "source", None)  # an optional SOURCE takes the first KEY=VALUE when SOURCE is left out
    if source and OVERRIDE.match(source) and not os.path.exists(source):
        args.source, args.overrides = None, [source, *args.overrides]
    try:
        return int(args.func(args) or 0)
    except NyxmedError as exc:
        if os.environ.get("NYXMED_DEBUG") == "1":
            traceback.print_exc()
        message = " ".join(str(exc).split("\n")) or type(exc).__name__
        print(f"nyxmed {command_name(args)}: {message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
