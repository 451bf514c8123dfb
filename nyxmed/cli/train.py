"""`nyxmed train`."""

from __future__ import annotations

import argparse
import os

from nyxmed.cli.show import print_json


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a LoRA adapter (Trainer + PEFT, optional DeepSpeed)",
                       description="Runs once per rank under `deepspeed` / `accelerate launch` (docs/training.md).")
    p.add_argument("--config", required=True, help="recipe YAML, e.g. configs/v17.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.learning_rate=2e-5")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    # The deepspeed launcher appends --local_rank=N; the rank is also in $LOCAL_RANK, which is what is used.
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=train)


def train(args: argparse.Namespace) -> int:
    from nyxmed.config import load_recipe
    from nyxmed.io import check_outputs
    from nyxmed.releases.parent import resolve_parent
    from nyxmed.training import train as run_training

    recipe = load_recipe(args.config, list(args.overrides) + (["train.resume=true"] if args.resume else []))
    t = recipe.train
    check_outputs([args.config, t.dataset_dir, recipe.model.base_model, recipe.grpo.sft_adapter], [t.output_dir])
    m = recipe.model
    parent = resolve_parent(m.base_model, m.merge_cache, m.dtype)  # release:...: merged (or reused) on every rank
    result = run_training(recipe, parent)
    if os.environ.get("RANK", "0") != "0":  # one summary per launch, from the main process
        return 0
    print_json({"output_dir": result.output_dir, "stop_reason": result.stop_reason,
                "global_step": result.global_step, "best_step": result.best_step,
                "best_eval_loss": result.best_eval_loss, "frozen": result.frozen})
    return 0
