"""The ``nyxmed`` command: subcommands only; each one parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import os
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
    from nyxmed.merge import MergeError, merge_adapter

    try:
        manifest = merge_adapter(args.base, args.adapter, args.out, dtype=args.dtype, revision=args.revision,
                                 max_shard_size=args.max_shard_size, device_map=args.device_map,
                                 probes=args.probes, max_new_tokens=args.max_new_tokens, overwrite=args.overwrite)
    except MergeError as exc:
        print(f"nyxmed merge: {exc}", file=sys.stderr)
        return 1
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


# ----------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a LoRA adapter (Trainer + PEFT, optional DeepSpeed)",
                       description="Runs once per rank under `deepspeed` / `accelerate launch` (docs/training.md).")
    p.add_argument("--config", required=True, help="recipe YAML, e.g. configs/v17.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.learning_rate=2e-5")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    # The deepspeed launcher appends --local_rank=N; the rank is also in $LOCAL_RANK, which is what is used.
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_train)


def _train(args) -> int:
    from nyxmed.config import ConfigError, load_recipe
    from nyxmed.training import train

    overrides = list(args.overrides) + (["train.resume=true"] if args.resume else [])
    try:
        recipe = load_recipe(args.config, overrides)
    except (ConfigError, OSError) as exc:
        print(f"nyxmed train: {exc}", file=sys.stderr)
        return 2
    result = train(recipe)
    if os.environ.get("RANK", "0") != "0":  # one summary per launch, from the main process
        return 0
    _print_json({"output_dir": result.output_dir, "stop_reason": result.stop_reason,
                 "global_step": result.global_step, "best_step": result.best_step,
                 "best_eval_loss": result.best_eval_loss, "frozen": result.frozen})
    return 0


COMMANDS += [_add_train]


# ----------------------------------------------------------------------------- evaluation
_EVAL_FLAGS = {  # flag -> (EvalConfig field, type, help)
    "--model": ("model", str, "base or merged model folder (the served model name for --backend openai)"),
    "--adapter": ("adapter", str, "PEFT adapter folder applied on top of --model"),
    "--data": ("data", str, "built dataset folder (<data>/dataset with system/user prompts and gold)"),
    "--split": ("split", str, "dataset split to evaluate (default heldout)"),
    "--benchmark": ("benchmark", str, "benchmark manifest (nyxmed benchmark create); refuses missing/changed records"),
    "--predictions": ("predictions", str, "rescore saved outputs (JSONL lines {id, output}); no model runs"),
    "--gold": ("gold", str, "gold for --predictions: a case file (JSONL/CSV/Parquet) or a built dataset folder"),
    "--training-metrics": ("training_metrics", str, "training_metrics.json: adds the eval-loss curve to the chart"),
    "--out": ("out_dir", str, "output folder (predictions.jsonl, metrics.json, report.md, metrics.png)"),
    "--backend": ("backend", str, "transformers | vllm | openai"),
    "--endpoint": ("endpoint", str, "OpenAI-compatible base URL for --backend openai (e.g. http://127.0.0.1:8000/v1)"),
    "--batch-size": ("batch_size", int, "prompts per generate call / parallel HTTP requests (default 4)"),
    "--max-new-tokens": ("max_new_tokens", int, "default 64"),
    "--dtype": ("dtype", str, "auto | bfloat16 | float16 | float32"),
    "--device": ("device", str, "auto | cpu | cuda"),
    "--tensor-parallel-size": ("tensor_parallel_size", int, "vLLM tensor parallel GPUs"),
    "--cpt-table": ("cpt_table", str, "licensed CPT table (CSV): strict CPT validity for invalid_code_rate"),
    "--bootstrap": ("bootstrap", int, "bootstrap resamples for the 95%% CIs (default 1000)"),
    "--seed": ("seed", int, "bootstrap seed"),
}


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="run a model on a benchmark, or rescore saved predictions (docs/metrics.md)")
    p.add_argument("--config", help="recipe YAML: its `eval` section (and model.base_model) give the defaults")
    for flag, (_, tp, help_text) in _EVAL_FLAGS.items():
        p.add_argument(flag, type=tp, help=help_text)
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from nyxmed.config import ConfigError, load_recipe
    from nyxmed.evaluation import run
    from nyxmed.generation import BackendUnavailable
    from nyxmed.metrics import AGGREGATE_METRICS

    try:
        recipe = load_recipe(args.config)
        cfg = recipe.eval
        if args.config and cfg.model is None and not args.predictions:
            cfg.model = recipe.model.base_model
        cfg.cpt_table = cfg.cpt_table or recipe.data.cpt_table
        for flag, (name, _, _) in _EVAL_FLAGS.items():
            value = getattr(args, flag[2:].replace("-", "_"))
            if value is not None:
                setattr(cfg, name, value)
        summary = run(cfg)
    except (ConfigError, ValueError, FileNotFoundError, BackendUnavailable) as exc:
        print(f"nyxmed evaluate: {exc}", file=sys.stderr)
        return 2
    table = Table(title=f"{cfg.out_dir} (n={summary['n']})")
    for col in ("metric", "value", "95% CI"):
        table.add_column(col)
    for name in AGGREGATE_METRICS:
        lo, hi = summary["ci95"][name]
        table.add_row(name, f"{summary[name]:.4f}", "–" if lo is None else f"[{lo:.4f}, {hi:.4f}]")
    Console().print(table)
    return 0


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="benchmark manifests")
    bsub = p.add_subparsers(dest="benchmark_cmd", required=True)
    c = bsub.add_parser("create", help="sample records (seeded) and pin their ids and content hashes")
    c.add_argument("--data", required=True, help="built dataset folder or a case file")
    c.add_argument("--pool", default="heldout", help="dataset split to sample from (default heldout)")
    c.add_argument("--n", type=int, default=500)
    c.add_argument("--seed", type=int, default=17)
    c.add_argument("--name", help="benchmark name (default: the file name)")
    c.add_argument("--out", required=True, help="manifest JSON to write")
    c.set_defaults(func=_benchmark_create)


def _benchmark_create(args) -> int:
    from nyxmed.evaluation import create_benchmark

    try:
        manifest = create_benchmark(args.data, args.out, args.pool, args.n, args.seed, args.name)
    except (ValueError, FileNotFoundError) as exc:
        print(f"nyxmed benchmark create: {exc}", file=sys.stderr)
        return 2
    _print_json({k: manifest[k] for k in ("name", "pool", "n", "seed", "source", "manifest_hash")} | {"out": args.out})
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="compare two evaluation folders: differences, paired bootstrap CIs, McNemar")
    p.add_argument("a", help="evaluation folder A (e.g. the current release)")
    p.add_argument("b", help="evaluation folder B (e.g. the candidate)")
    p.add_argument("--out", help="write comparison.json and comparison.md here")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=17)
    p.set_defaults(func=_compare)


def _compare(args) -> int:
    from nyxmed.evaluation import compare_runs, comparison_markdown, write_comparison

    try:
        comparison = compare_runs(args.a, args.b, args.bootstrap, args.seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"nyxmed compare: {exc}", file=sys.stderr)
        return 2
    if args.out:
        write_comparison(comparison, args.out)
    print(comparison_markdown(comparison))
    return 0


COMMANDS += [_add_evaluate, _add_benchmark, _add_compare]


# ----------------------------------------------------------------------------- releases
def _add_publish(sub) -> None:
    p = sub.add_parser("publish", help="push an adapter, merged model or frozen checkpoint to a Hub repo, tagged",
                       description="Token: $HF_TOKEN or `hf auth login`; never printed. An adapter's frozen/epoch-N "
                                   "checkpoints are published first as VERSION-epochN.")
    p.add_argument("path", help="adapter folder, merged model folder or frozen/epoch-N folder")
    p.add_argument("--repo", required=True, help="Hub model repo ORG/NAME (created if needed, private)")
    p.add_argument("--version", required=True, help="tag, e.g. v17")
    p.add_argument("--metrics", help="the evaluator's metrics.json for the card")
    p.add_argument("--compare", help="comparison.json against the previous version for the card")
    p.add_argument("--previous", help="name of the previous version (comparison table header)")
    p.add_argument("--dataset-manifest", help="the dataset builder's manifest.json (composition counts)")
    p.add_argument("--license", default="other")
    p.add_argument("--out", help="staging folder (default: out/publish/<ORG--NAME>)")
    p.add_argument("--dry-run", action="store_true", help="write the exact folders and cards, upload nothing")
    p.set_defaults(func=_publish)


def _publish(args) -> int:
    from pathlib import Path

    from nyxmed.releases import ReleaseError
    from nyxmed.releases.hub import HubRegistry
    from nyxmed.releases.publish import CardInputs, describe, publish

    inputs = CardInputs(args.metrics, args.compare, args.previous, args.dataset_manifest, args.license)
    registry = None if args.dry_run else HubRegistry(args.repo)
    workdir = Path(args.out or Path("out/publish") / args.repo.replace("/", "--"))
    try:
        staged = publish(args.path, args.version, registry, workdir, args.repo, inputs)
    except ReleaseError as exc:
        print(f"nyxmed publish: {exc}", file=sys.stderr)
        return 1
    _print_json(describe(staged, f"hub:{args.repo}", args.dry_run))
    return 0


def _add_releases(sub) -> None:
    p = sub.add_parser("releases", help="versions, production pointer, promote, rollback, history",
                       description="Local registry by default (--registry, $NYXMED_REGISTRY, out/registry); "
                                   "--repo ORG/NAME for the Hub (versions are tags, production a branch).")
    p.add_argument("--registry", help="local registry folder")
    p.add_argument("--repo", help="Hub model repo ORG/NAME instead of a local registry")
    rsub = p.add_subparsers(dest="releases_cmd", required=True)
    rsub.add_parser("list", help="versions, the production one marked")
    pr = rsub.add_parser("promote", help="verify VERSION's checksums, then point production at it")
    pr.add_argument("version")
    rb = rsub.add_parser("rollback", help="point production back at the previous version (or --to VERSION)")
    rb.add_argument("--to", help="e.g. v17-epoch1")
    rsub.add_parser("history", help="every register / promote / rollback")
    rg = rsub.add_parser("register", help="store a folder as VERSION (frozen/epoch-N as VERSION-epochN)")
    rg.add_argument("path")
    rg.add_argument("--version", required=True)
    p.set_defaults(func=_releases)


def _releases(args) -> int:
    from nyxmed.releases import ReleaseError

    try:
        return _releases_command(args)
    except ReleaseError as exc:
        print(f"nyxmed releases {args.releases_cmd}: {exc}", file=sys.stderr)
        return 1


def _releases_command(args) -> int:
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from nyxmed.releases import open_registry
    from nyxmed.releases.publish import describe, publish

    registry = open_registry(args.registry, args.repo)
    cmd = args.releases_cmd
    if cmd == "list":
        prod = registry.production()
        table = Table(title=f"releases in {registry!r}")
        for col in ("version", "kind", "created", "production"):
            table.add_column(col)
        for r in registry.versions():
            table.add_row(r["version"], r.get("kind", ""), r.get("created_at", ""),
                          "<- production" if r["version"] == prod else "")
        Console().print(table)
    elif cmd == "promote":
        _print_json(registry.promote(args.version))
    elif cmd == "rollback":
        _print_json(registry.rollback(args.to))
    elif cmd == "history":
        for entry in registry.history():
            print(json.dumps(entry))
    elif cmd == "register":
        with tempfile.TemporaryDirectory() as work:
            _print_json(describe(publish(args.path, args.version, registry, work), repr(registry), False))
    return 0


COMMANDS += [_add_publish, _add_releases]


# ----------------------------------------------------------------------------- synthetic data
def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic radiology cases (the embedded default data set)")
    p.add_argument("--n", type=int, default=3000, help="number of cases")
    p.add_argument("--seed", type=int, default=17, help="same seed, same cases")
    p.add_argument("--out", required=True, help="case file: .jsonl, .csv or .parquet (written atomically)")
    p.set_defaults(func=_synth)


def _synth(args) -> int:
    from nyxmed.sources import SourceError, write_cases
    from nyxmed.synth import generate_cases, summary

    if args.n < 0:
        print(f"nyxmed synth: --n must be >= 0, got {args.n}", file=sys.stderr)
        return 2
    cases = generate_cases(args.n, args.seed)
    try:
        write_cases(cases, args.out)
    except SourceError as exc:
        print(f"nyxmed synth: --out: {exc}", file=sys.stderr)
        return 2
    _print_json({"out": args.out, **summary(cases)})
    return 0


COMMANDS += [_add_synth]


# ----------------------------------------------------------------------------- dataset
def _add_build_data(sub) -> None:
    p = sub.add_parser("build-data", help="build the tokenized train/validation/heldout dataset and its manifest",
                       description="Retrieval few-shots, candidate codes, leakage defense, splits (docs/dataset.md).")
    p.add_argument("--config", required=True, help="recipe YAML, e.g. configs/v17.yaml (data/retrieval/prompt)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.heldout_size=5950")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_build_data)


def _build_data(args) -> int:
    from rich.console import Console
    from transformers import AutoTokenizer

    from nyxmed.config import ConfigError, load_recipe
    from nyxmed.dataset import build_dataset, composition_table

    try:
        recipe = load_recipe(args.config, args.overrides)
    except (ConfigError, OSError) as exc:
        print(f"nyxmed build-data: {exc}", file=sys.stderr)
        return 2
    tokenizer = AutoTokenizer.from_pretrained(recipe.model.tokenizer or recipe.model.base_model)
    result = build_dataset(recipe, tokenizer, progress=not args.no_progress)
    Console(stderr=True).print(composition_table(result.manifest))
    _print_json({"out_dir": str(result.out_dir), **result.manifest["counts"]["by_split"],
                 "blocked_retrievals": result.manifest["blocked_retrievals"]})
    return 0


COMMANDS += [_add_build_data]


# ----------------------------------------------------------------------------- demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job end to end on the embedded synthetic data (docs/quickstart.md)")
    p.add_argument("--config", help="YAML of DemoConfig fields (defaults: nyxmed.config.DemoConfig)")
    p.add_argument("--out", help="output folder (demo out_dir)")
    p.add_argument("overrides", nargs="*",
                   help="key=value DemoConfig overrides (cases=1000 ranks=0); dotted keys go to the recipe (train.epochs=2)")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from nyxmed.demo import load_demo_config, run_demo

    cfg = load_demo_config(args.config, args.overrides + ([f"out_dir={args.out}"] if args.out else []))
    summary = run_demo(cfg)
    if not summary["floors_met"]:
        print("the trained adapter did not reach the demo's floors (see demo_summary.json and "
              "docs/performance.md); every step ran", file=sys.stderr)
    return 0


COMMANDS += [_add_demo]


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
