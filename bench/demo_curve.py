"""How far the demo's tiny model is from the demo floors: a learning curve past the 10-minute budget.

Builds what `nyxmed demo` builds (synthetic cases, the local tokenizer, the base pre-trained on coded
reports of another synthetic set, the dataset of `configs/demo.yaml`), then trains the recipe's LoRA
(or, with `--full`, every weight, as a diagnostic) in one process through the Trainer path of
`nyxmed train` (its TrainingArguments, collator and weighted answer-only loss), and every
`--eval-every` steps (`LearningCurveCallback`) greedily decodes the first `--eval-n` held-out records
with the production generator and scores them with the production metrics; each point also has the
eval loss on the first `--eval-n` validation rows. JSON to stdout.

    python bench/demo_curve.py --steps 600 --eval-every 100
    python bench/demo_curve.py --device cuda pretrain_steps=1000 train.learning_rate=0.01   # explore on a GPU

Positional ``key=value`` overrides change the demo as `nyxmed demo` takes them (DemoConfig fields;
dotted keys go to the recipe). The learning curve of a setting does not depend on where it runs, so
a GPU explores settings quickly; the demo's 10-minute budget is timed on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FLOOR_METRICS = ("cpt_exact", "icd_root_overlap", "parse_failure_rate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8, help="examples per optimizer step")
    ap.add_argument("--lr", type=float, default=None, help="default: the recipe's train.learning_rate")
    ap.add_argument("--full", action="store_true", help="train every weight instead of LoRA (diagnostic)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-n", type=int, default=100)
    ap.add_argument("--eval-batch", type=int, default=16, help="records decoded together")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--device", default="cpu", help="where the base is pre-trained and the LoRA trained (cpu, cuda)")
    ap.add_argument("--config", default=None, help="YAML of DemoConfig fields")
    ap.add_argument("overrides", nargs="*", help="key=value DemoConfig overrides; dotted keys go to the recipe")
    args = ap.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's logger (imported by the Trainer) prints to stdout
        result = run(args)
    print(json.dumps(result, indent=2))


def run(args: argparse.Namespace) -> dict:
    """Build the demo's base and data, train with the curve callback; the bench's JSON result."""
    import torch
    from peft import get_peft_model

    from nyxmed import evaluation
    from nyxmed.dataset import build_dataset
    from nyxmed.demo import Demo, build_base, load_demo_config
    from nyxmed.generation import Chat, TransformersGenerator
    from nyxmed.prompts import load_rules
    from nyxmed.synth import generate_cases
    from nyxmed.training.batching import load_training_splits
    from nyxmed.training.callbacks import LearningCurveCallback
    from nyxmed.training.loss import WeightedLossTrainer
    from nyxmed.training.run import make_collator, training_arguments

    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nyxmed-demo-curve-"))
    demo = replace(load_demo_config(args.config, args.overrides), out_dir=str(work))
    recipe = Demo(demo).recipe  # the demo's recipe, folders under work/ and rules file resolved
    lr = args.lr or recipe.train.learning_rate
    # The recipe's train section with the bench's steps and batch: one micro-batch of --batch per
    # optimizer step, an evaluation (and checkpoint, for load-best) every --eval-every steps.
    recipe = replace(recipe, train=replace(
        recipe.train, max_steps=args.steps, micro_batch_size=args.batch, gradient_accumulation_steps=1,
        learning_rate=lr, eval_steps=args.eval_every, save_steps=args.eval_every, logging_steps=1,
        deepspeed=None, output_dir=str(work / "curve"), report_to=[],
        trainer_args={**recipe.train.trainer_args, "use_cpu": args.device == "cpu"}))
    t0 = time.time()
    cases = generate_cases(demo.cases, demo.seed)
    t_pre = time.time()
    model, tok, pre_losses = build_base(demo, cases, load_rules(recipe.prompt.rules_file), progress=False,
                                        device=args.device)
    pretrain_s = time.time() - t_pre  # tokenizer + pre-training, as the demo's step 2
    data = build_dataset(recipe, tok, cases=cases, progress=False)
    train, validation = load_training_splits(recipe.train.dataset_dir, recipe.prompt.max_length)
    validation = validation.select(range(min(len(validation), args.eval_n)))  # eval_loss: a cheap side-note
    gold = evaluation.load_gold(work / "data")[: args.eval_n]
    if args.full:
        model.config.use_cache = False
    else:
        model = get_peft_model(model, recipe.lora.to_peft())
    generator = TransformersGenerator(model, tok, batch_size=args.eval_batch, max_new_tokens=demo.eval_max_new_tokens)

    def measure() -> dict:
        model.eval()
        outs = generator.generate([Chat(g.id, g.system, g.user) for g in gold], progress=False)
        model.train()
        _, table = evaluation.score(gold, {g.id: o.text for g, o in zip(gold, outs)})
        point = table.point()
        return {k: round(point[k], 3) for k in FLOOR_METRICS}

    curve = LearningCurveCallback(args.eval_every, measure,
                                  on_point=lambda p: print(json.dumps(p), flush=True, file=sys.stderr))
    trainer = WeightedLossTrainer(model=model, args=training_arguments(recipe, work / "curve" / "checkpoints"),
                                  train_dataset=train, eval_dataset=validation,
                                  data_collator=make_collator(recipe.train, tok.pad_token_id),
                                  processing_class=tok, callbacks=[curve])
    trainer.train()
    train_s = curve.curve[-1]["train_seconds"]
    tokens = trainer.state.num_input_tokens_seen
    return {
        "bench": "demo_curve", "device": args.device, "overrides": args.overrides,
        "mode": "full" if args.full else f"lora r={recipe.lora.r}", "lr": lr,
        "threads": args.threads, "batch": args.batch, "train_examples": len(train),
        "prompt_tokens_mean": data.manifest["token_lengths"]["train"]["mean"],
        "pretrain": {"steps": demo.pretrain_steps, "seconds": round(pretrain_s, 1),
                     "loss_first": round(pre_losses[0], 3), "loss_last20": round(sum(pre_losses[-20:]) / len(pre_losses[-20:]), 3)},
        "train_tokens_per_second": round(tokens / train_s, 1) if train_s else None, "eval_records": len(gold),
        "floors": {"cpt_exact": 0.6, "icd_root_overlap": 0.5}, "curve": curve.curve,
        "seconds": round(time.time() - t0, 1), "load_average_at_end": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
