"""`nyxmed parse` and `nyxmed codes check`."""

from __future__ import annotations

from nyxmed.cli.show import print_json


def register(sub) -> None:
    p = sub.add_parser("parse", help="parse a model output into a code line (JSON)")
    p.add_argument("text")
    p.set_defaults(func=parse)
    p = sub.add_parser("codes", help="code-system look-ups")
    csub = p.add_subparsers(dest="codes_cmd", required=True)
    c = csub.add_parser("check", help="system, validity, billable flag, chapter, category of codes")
    c.add_argument("codes", nargs="+")
    c.add_argument("--cpt-table", help="licensed CPT table (CSV code,description): strict CPT validity")
    c.set_defaults(func=check)


def parse(args) -> int:
    from nyxmed.codeline import parse as parse_line

    print_json(parse_line(args.text).to_dict())
    return 0


def check(args) -> int:
    from nyxmed.codes import check_code
    from nyxmed.codes.cpt import load_cpt_table

    print_json([check_code(c, load_cpt_table(args.cpt_table)) for c in args.codes])
    return 0
