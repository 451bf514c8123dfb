"""The ``nyxmed`` command: subcommands only; each one parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

Handler = Callable[[argparse.Namespace], int]


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ----------------------------------------------------------------------------- codes
def _add_parse(sub) -> None:
    p = sub.add_parser("parse", help="parse a model output into a code line (JSON)")
    p.add_argument("text")
    p.set_defaults(func=_parse)


def _parse(args) -> int:
    from nyxmed.codeline import parse

    _print_json(parse(args.text).to_dict())
    return 0


def _add_codes(sub) -> None:
    p = sub.add_parser("codes", help="code-system look-ups")
    csub = p.add_subparsers(dest="codes_cmd", required=True)
    c = csub.add_parser("check", help="system, validity, billable flag, chapter, category of codes")
    c.add_argument("codes", nargs="+")
    c.add_argument("--cpt-table", help="licensed CPT table (CSV code,description): strict CPT validity")
    c.set_defaults(func=_codes_check)


def _codes_check(args) -> int:
    from nyxmed.codes import check_code
    from nyxmed.codes.cpt import CptTable

    table = CptTable.from_csv(args.cpt_table) if args.cpt_table else None
    _print_json([check_code(c, table) for c in args.codes])
    return 0


# Each entry adds one subcommand; later modules append theirs here.
COMMANDS: list[Callable] = [_add_parse, _add_codes]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nyxmed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
