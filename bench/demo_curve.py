"""How far the demo's tiny model is from the demo floors: a learning curve past the 10-minute budget.

Builds what `nyxmed demo` builds (synthetic cases, the local tokenizer, the base pre-trained on coded
reports of another synthetic set, the dataset of `configs/demo.yaml`), then trains the recipe's LoRA
(or, with `--full`, every weight, as a diagnostic) in one process with the trainer's weighted
answer-only loss, and every `--eval-every` steps greedily decodes the first `--eval-n` held-out
records with the production generator and scores them with the production metrics. JSON to stdout.

    python bench/demo_curve.py --steps 600 --eval-every 100
    python bench/demo_curve.py --device cuda pretrain_steps=1000 train.learning_rate=0.01   # explore on a GPU

Positional ``key=value`` overrides change the demo as `nyxmed demo` takes them (DemoConfig fields;
dotted keys go to the recipe). The learning curve of a setting does not depend on where it runs, so
a GPU explores settings quickly; the demo's 10-minute budget is timed on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

    import torch
    from peft import get_peft_model

    from nyxmed import evaluation
    from nyxmed.dataset import build_dataset
    from nyxmed.demo import Demo, build_base, load_demo_config
    from nyxmed.generation import Chat, TransformersGenerator
    from nyxmed.training.loss import answer_logits_to_keep, weighted_lm_loss
    from nyxmed.prompts import load_rules
    from nyxmed.synth import generate_cases
    from nyxmed.training.batching import PaddedCollator

    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nyxmed-demo-curve-"))
    demo = replace(load_demo_config(args.config, args.overrides), out_dir=str(work))
    recipe = Demo(demo).recipe  # the demo's recipe, folders under work/ and rules file resolved
    lr = args.lr or recipe.train.learning_rate
    t0 = time.time()
    cases = generate_cases(demo.cases, demo.seed)
    t_pre = time.time()
    model, tok, pre_losses = build_base(demo, cases, load_rules(recipe.prompt.rules_file), progress=False,
                                        device=args.device)
    pretrain_s = time.time() - t_pre  # tokenizer + pre-training, as the demo's step 2
    data = build_dataset(recipe, tok, cases=cases, progress=False)
    from datasets import load_from_disk

    ds = load_from_disk(str(work / "data" / "dataset"))
    train = ds["train"]
    gold = evaluation.load_gold(work / "data")[: args.eval_n]
    if args.full:
        trainable = list(model.parameters())
    else:
        model = get_peft_model(model, recipe.lora.to_peft())
        trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=args.steps,
                                                pct_start=recipe.train.warmup_ratio, anneal_strategy="cos")
    order = list(range(len(train)))
    random.Random(demo.seed).shuffle(order)
    tok.padding_side = "left"
    generator = TransformersGenerator(model, tok, batch_size=args.eval_batch, max_new_tokens=demo.eval_max_new_tokens)

    def evaluate() -> dict:
        model.eval()
        outs = generator.generate([Chat(g.id, g.system, g.user) for g in gold], progress=False)
        model.train()
        _, table = evaluation.score(gold, {g.id: o.text for g, o in zip(gold, outs)})
        point = table.point()
        return {k: round(point[k], 3) for k in FLOOR_METRICS}

    curve = [{"step": 0, "train_seconds": 0.0, **evaluate()}]
    print(json.dumps(curve[-1]), flush=True, file=sys.stderr)
    model.train()
    collate = PaddedCollator(tok.pad_token_id)  # the trainer's batches without packing
    t_train, eval_s, tokens, window = time.time(), 0.0, 0, []
    for step in range(1, args.steps + 1):
        batch = collate(train.select([order[(step * args.batch + j) % len(order)] for j in range(args.batch)]))
        batch = {k: v.to(args.device) for k, v in batch.items()}
        labels, weights = batch.pop("labels"), batch.pop("token_weights")
        tokens += int(batch["attention_mask"].sum())
        logits = model(**batch, logits_to_keep=answer_logits_to_keep(labels)).logits
        total, count = weighted_lm_loss(logits, labels, weights)
        loss = total / count
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        window.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            te = time.time()
            point = evaluate()
            eval_s += time.time() - te
            curve.append({"step": step, "train_seconds": round(time.time() - t_train - eval_s, 1),
                          "answer_loss": round(sum(window) / len(window), 3), **point})
            window = []
            print(json.dumps(curve[-1]), flush=True, file=sys.stderr)
    train_s = time.time() - t_train - eval_s
    print(json.dumps({
        "bench": "demo_curve", "device": args.device, "overrides": args.overrides,
        "mode": "full" if args.full else f"lora r={recipe.lora.r}", "lr": lr,
        "threads": args.threads, "batch": args.batch, "train_examples": len(train),
        "prompt_tokens_mean": data.manifest["token_lengths"]["train"]["mean"],
        "pretrain": {"steps": demo.pretrain_steps, "seconds": round(pretrain_s, 1),
                     "loss_first": round(pre_losses[0], 3), "loss_last20": round(sum(pre_losses[-20:]) / len(pre_losses[-20:]), 3)},
        "train_tokens_per_second": round(tokens / train_s, 1), "eval_records": len(gold),
        "floors": {"cpt_exact": 0.6, "icd_root_overlap": 0.5}, "curve": curve,
        "seconds": round(time.time() - t0, 1), "load_average_at_end": round(os.getloadavg()[0], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
