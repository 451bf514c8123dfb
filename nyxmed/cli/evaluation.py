"""`nyxmed evaluate`, `nyxmed benchmark create` and `nyxmed compare`."""

from __future__ import annotations

import argparse

from nyxmed.cli import options
from nyxmed.cli.show import print_json
from nyxmed.config import BenchmarkConfig, CompareConfig, EvalConfig


def register(sub) -> None:
    options.add_command(sub, "evaluate", EvalConfig, evaluate,
                        "run a model on a benchmark, or rescore saved predictions (docs/metrics.md)",
                        config_help="recipe YAML: its `eval` section (and model.base_model) give the defaults",
                        overrides_help="dotted recipe overrides, e.g. eval.backend=vllm eval.batch_size=16")

    options.add_command(sub, "compare-parent", EvalConfig, compare_parent,
                        "evaluate the parent release and the child trained on it on the same records, paired CIs",
                        config_help="the child's recipe: model.base_model release:REGISTRY[:VERSION], train.output_dir "
                                    "the child adapter (or --adapter), its eval section (data, benchmark)",
                        overrides_help="dotted recipe overrides, e.g. eval.benchmark=bench.json")

    p = sub.add_parser("benchmark", help="benchmark manifests")
    bsub = p.add_subparsers(dest="benchmark_cmd", required=True)
    options.add_command(bsub, "create", BenchmarkConfig, benchmark_create,
                        "sample records (seeded) and pin their ids and content hashes")

    p = sub.add_parser("compare", help="compare two evaluation folders: differences, paired bootstrap CIs, McNemar")
    p.add_argument("a", help="evaluation folder A (e.g. the current release)")
    p.add_argument("b", help="evaluation folder B (e.g. the candidate)")
    options.add_config_arguments(p, CompareConfig)
    p.set_defaults(func=compare)


def evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from nyxmed.config import eval_config_of, load_recipe
    from nyxmed.evaluation import eval_inputs, run, summary_table
    from nyxmed.io import check_outputs
    from nyxmed.releases.parent import resolve_eval_model

    recipe = load_recipe(args.config, args.overrides)
    cfg = eval_config_of(recipe, options.flags(args), from_file=args.config is not None)
    check_outputs([args.config, *eval_inputs(cfg)], [cfg.out_dir])
    cfg, _ = resolve_eval_model(cfg, recipe.model)  # release:...: merged model
    Console().print(summary_table(run(cfg), cfg.out_dir))
    return 0


def compare_parent(args: argparse.Namespace) -> int:
    from nyxmed.config import eval_config_of, is_release_spec, load_recipe
    from nyxmed.errors import UsageError
    from nyxmed.evaluation import comparison_markdown, eval_inputs
    from nyxmed.io import check_outputs
    from nyxmed.releases.parent import compare_with_parent, resolve_parent

    if not args.config:
        raise UsageError("compare-parent: --config (the child's recipe) is required")
    recipe = load_recipe(args.config, args.overrides)
    cfg = eval_config_of(recipe, options.flags(args))
    child = cfg.adapter or recipe.train.output_dir
    m = recipe.model
    if not is_release_spec(m.base_model):
        raise UsageError(f"compare-parent: model.base_model {m.base_model!r} is not release:REGISTRY[:VERSION]")
    check_outputs([args.config, *eval_inputs(cfg), child], [cfg.out_dir])
    parent = resolve_parent(m.base_model, m.merge_cache, m.dtype)
    comparison = compare_with_parent(parent, child, cfg, cfg.out_dir)
    print(comparison_markdown(comparison, (parent.version, "child")))
    return 0


def benchmark_create(args: argparse.Namespace) -> int:
    from nyxmed.evaluation import create_benchmark
    from nyxmed.io import check_outputs

    cfg = options.load(BenchmarkConfig, args)
    check_outputs([args.config, cfg.data], [cfg.out])
    manifest = create_benchmark(cfg.data, cfg.out, cfg.pool, cfg.n, cfg.seed, cfg.name)
    print_json({k: manifest[k] for k in ("name", "pool", "n", "seed", "source", "manifest_hash")} | {"out": cfg.out})
    return 0


def compare(args: argparse.Namespace) -> int:
    from nyxmed.evaluation import compare_runs, comparison_markdown, write_comparison
    from nyxmed.io import check_outputs

    cfg = options.load(CompareConfig, args)
    check_outputs([args.config, args.a, args.b], [cfg.out])
    comparison = compare_runs(args.a, args.b, cfg.bootstrap, cfg.seed)
    if cfg.out:
        write_comparison(comparison, cfg.out)
    print(comparison_markdown(comparison))
    return 0
