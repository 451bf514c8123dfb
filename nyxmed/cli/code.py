"""`nyxmed code`: code new reports (a file, a PostgreSQL query or --text) with a model and its preprocessor."""

from __future__ import annotations

import argparse

from nyxmed.cli import options
from nyxmed.config import CodeConfig


def register(sub) -> None:
    p = sub.add_parser("code", help="code new reports with a model, its adapter and its preprocessor",
                       description="SOURCE: a .jsonl/.csv/.parquet file of reports (id, report_text, optional "
                                   "exam_description, reason_for_exam, meta; gold codes are ignored), a .sql file "
                                   "or postgresql://... with --query; or --text for one report (docs/coding.md).")
    p.add_argument("source", nargs="?", help="report file, .sql file or postgresql:// connection string")
    options.add_config_arguments(p, CodeConfig)
    p.set_defaults(func=code)


def code(args: argparse.Namespace) -> int:
    from rich.console import Console

    from nyxmed.coder import code_reports, coder_from_config, coding_table
    from nyxmed.config import ConfigError
    from nyxmed.io import check_outputs, jsonl_text, write_json, write_jsonl
    from nyxmed.sources import counts_path_for, parse_mapping, source_from_spec

    cfg = options.load(CodeConfig, args)
    if (args.source is None and cfg.query is None) == (cfg.text is None):
        raise ConfigError("give a SOURCE (or --query), or --text, not both")
    outputs = [cfg.out, cfg.rejects, cfg.rejects and counts_path_for(cfg.rejects)]
    check_outputs([args.config, args.source, cfg.release, cfg.model, cfg.adapter, cfg.preprocessor, cfg.tokenizer,
                   cfg.cpt_table],
                  outputs)
    source = None if cfg.text is not None else source_from_spec(args.source, cfg.query, parse_mapping(cfg.map))
    run = code_reports(coder_from_config(cfg), source, cfg.text)
    if cfg.out:
        write_jsonl(cfg.out, [c.to_dict() for c in run.coded])
    if cfg.rejects:
        write_jsonl(cfg.rejects, run.rejects)
        write_json(counts_path_for(cfg.rejects), run.counts)
    Console(stderr=cfg.out is None).print(coding_table(run))
    if cfg.out is None:
        print(jsonl_text([c.to_dict() for c in run.coded]), end="")
    print(f"read {run.counts['read']} = coded {run.counts['coded']} + rejected {run.counts['rejected']}")
    return 0
