"""`nyxmed validate`, `nyxmed synth` and `nyxmed build-data`."""

from __future__ import annotations

import argparse

from nyxmed.cli import options
from nyxmed.cli.show import print_json
from nyxmed.config import SynthConfig, ValidateConfig


def register(sub) -> None:
    p = sub.add_parser("validate", help="read a case source, print counts and reject reasons",
                       description="SOURCE: a .jsonl/.csv/.parquet file, a .sql file (run against $NYXMED_PG_DSN), "
                                   "or postgresql://... with --query; omit SOURCE with --query to use $NYXMED_PG_DSN.")
    p.add_argument("source", nargs="?", help="case file, .sql file or postgresql:// connection string")
    options.add_config_arguments(p, ValidateConfig)
    p.set_defaults(func=validate)

    options.add_command(sub, "synth", SynthConfig, synth, "write synthetic radiology cases (the embedded default data set)")

    p = sub.add_parser("build-data", help="build the tokenized train/validation/heldout dataset and its manifest",
                       description="Retrieval few-shots, candidate codes, leakage defense, splits (docs/dataset.md).")
    p.add_argument("--config", required=True, help="recipe YAML, e.g. configs/v17.yaml (data/retrieval/prompt)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.heldout_size=5950")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=build_data)


def validate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from nyxmed.codes.cpt import load_cpt_table
    from nyxmed.config import ConfigError
    from nyxmed.io import check_outputs
    from nyxmed.sources import counts_path_for, parse_mapping, read_cases, source_from_spec, summary_tables

    cfg = options.load(ValidateConfig, args)
    if args.source is None and cfg.query is None:
        raise ConfigError("give a SOURCE, or --query to read from $NYXMED_PG_DSN")
    if cfg.rejects:
        check_outputs([args.source, cfg.cpt_table, cfg.query and cfg.query.removeprefix("@")],
                      [cfg.rejects, counts_path_for(cfg.rejects)])
    table = load_cpt_table(cfg.cpt_table)
    source = source_from_spec(args.source, cfg.query, parse_mapping(cfg.map), cfg.batch_size)
    result = read_cases(source, table, cfg.rejects)
    console = Console()
    for t in summary_tables(result, cfg.show):
        console.print(t)
    if cfg.rejects:
        console.print(f"rejects: {cfg.rejects}")
    return 0


def synth(args: argparse.Namespace) -> int:
    from nyxmed.io import check_outputs
    from nyxmed.sources import write_cases
    from nyxmed.synth import generate_cases, summary

    cfg = options.load(SynthConfig, args)
    check_outputs([args.config], [cfg.out])
    cases = generate_cases(cfg.n, cfg.seed)
    write_cases(cases, cfg.out)
    print_json({"out": cfg.out, **summary(cases)})
    return 0


def build_data(args: argparse.Namespace) -> int:
    from rich.console import Console
    from transformers import AutoTokenizer

    from nyxmed.releases.parent import tokenizer_source

    from nyxmed.config import load_recipe
    from nyxmed.dataset import build_dataset, composition_table
    from nyxmed.io import check_outputs

    recipe = load_recipe(args.config, args.overrides)
    d = recipe.data
    check_outputs([args.config, *d.sources, *d.retained, d.previous_manifest, d.cpt_table, recipe.prompt.rules_file],
                  [d.out_dir])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(recipe.model))  # a release: its own tokenizer
    result = build_dataset(recipe, tokenizer, progress=not args.no_progress)
    Console(stderr=True).print(composition_table(result.manifest))
    print_json({"out_dir": str(result.out_dir), **result.manifest["counts"]["by_split"],
                "blocked_retrievals": result.manifest["blocked_retrievals"]})
    return 0
