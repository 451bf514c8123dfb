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

    try:
        table = CptTable.from_csv(args.cpt_table) if args.cpt_table else None
    except (OSError, ValueError) as exc:
        print(f"nyxmed codes check: --cpt-table: {exc}", file=sys.stderr)
        return 2
    _print_json([check_code(c, table) for c in args.codes])
    return 0


# Each entry adds one subcommand; later modules append theirs here.
COMMANDS: list[Callable] = [_add_parse, _add_codes]


# ----------------------------------------------------------------------------- merge
def _add_merge(sub) -> None:
    p = sub.add_parser("merge", help="merge a LoRA adapter into its base, verify, save sharded safetensors")
    p.add_argument("--base", required=True, help="base model folder or Hub id (must be the adapter's base)")
    p.add_argument("--adapter", required=True, help="PEFT adapter folder (e.g. out/train or out/train/frozen/epoch-1)")
    p.add_argument("--out", required=True, help="folder for the merged model (written atomically)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--revision", help="base revision when --base is a Hub id")
    p.add_argument("--max-shard-size", default="5GB")
    p.add_argument("--device-map", help="e.g. auto to merge on GPUs; default: CPU")
    p.add_argument("--probes", help="JSONL of {system, user} probe prompts (default: built-in synthetic ones)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_merge)


def _merge(args) -> int:
    from nyxmed.merge import merge_adapter

    manifest = merge_adapter(args.base, args.adapter, args.out, dtype=args.dtype, revision=args.revision,
                             max_shard_size=args.max_shard_size, device_map=args.device_map, probes=args.probes,
                             max_new_tokens=args.max_new_tokens, overwrite=args.overwrite)
    _print_json({"out": args.out, "verification": manifest["verification"], "files": len(manifest["files"])})
    return 0


COMMANDS += [_add_merge]


# ----------------------------------------------------------------------------- sources
def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="read a case source, print counts and reject reasons",
                       description="SOURCE: a .jsonl/.csv/.parquet file, a .sql file (run against $NYXMED_PG_DSN), "
                                   "or postgresql://... with --query; omit SOURCE with --query to use $NYXMED_PG_DSN.")
    p.add_argument("source", nargs="?", help="case file, .sql file or postgresql:// connection string")
    p.add_argument("--query", help="SQL query for a PostgreSQL source (or @file.sql)")
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD",
                   help="rename a source column to a case field (repeatable)")
    p.add_argument("--batch-size", type=int, default=1000, help="rows per PostgreSQL fetch")
    p.add_argument("--rejects", help="write rejects here (JSONL) and counts beside it (<name>.counts.json)")
    p.add_argument("--cpt-table", help="licensed CPT table (CSV code,description): strict CPT validity")
    p.add_argument("--show", type=int, default=20, help="reject reasons to print (the file has all)")
    p.set_defaults(func=_validate)


def _validate(args) -> int:
    from rich.console import Console

    from nyxmed.codes.cpt import CptTable
    from nyxmed.sources import SourceError, parse_mapping, read_cases, source_from_spec, summary_tables

    if args.source is None and args.query is None:
        print("nyxmed validate: give a SOURCE, or --query to read from $NYXMED_PG_DSN", file=sys.stderr)
        return 2
    try:
        table = CptTable.from_csv(args.cpt_table) if args.cpt_table else None
    except (OSError, ValueError) as exc:
        print(f"nyxmed validate: --cpt-table: {exc}", file=sys.stderr)
        return 2
    try:
        source = source_from_spec(args.source, args.query, parse_mapping(args.map), args.batch_size)
        result = read_cases(source, table, args.rejects)
    except (SourceError, OSError) as exc:
        print(f"nyxmed validate: {exc}", file=sys.stderr)
        return 2
    console = Console()
    for t in summary_tables(result, args.show):
        console.print(t)
    if args.rejects:
        console.print(f"rejects: {args.rejects}")
    return 0


COMMANDS += [_add_validate]


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
