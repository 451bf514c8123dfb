"""Training-token throughput, padded micro-batch 1 vs padding-free packed rows; prints JSON.

Usage: python bench/packing_speed.py [--n 64] [--max-tokens 8192] [--hidden 128] [--layers 4]
                                     [--dataset out/v17/data/dataset] [--seed 0]

Both recipes run forward + backward (gradient checkpointing on, as in V17) of the tiny Llama over
the same examples; each runs in its own subprocess so its peak RSS is its own. The weighted
losses of the two are compared as a correctness check. Lengths come from a built dataset's train
split when given, else from a log-normal clipped to [128, 2560] (V17's prompt length cap).
On a CPU the ratio measures per-micro-batch fixed cost (dispatch, kernel launches) against a
tiny per-token cost; on 4x H200 the fixed cost is the ZeRO-3 all-gather: see bench/cost_model.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from nyxmed.packing import PackingCollator, pack_indices, weighted_lm_loss
from nyxmed.tiny import BOS, build_tiny_model, build_tokenizer

ANSWER_TOKENS = 24  # a code line plus <|eot_id|>


def example_lengths(args: argparse.Namespace) -> list[int]:
    if args.dataset:
        from datasets import load_from_disk

        lengths = [len(x) for x in load_from_disk(args.dataset)["train"]["input_ids"]]
        return lengths[: args.n]
    rng = np.random.default_rng(args.seed)
    return [int(x) for x in np.clip(rng.lognormal(np.log(900), 0.5, args.n), 128, 2560)]


def make_features(lengths: list[int], vocab: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    feats = []
    for k, n in enumerate(lengths):
        ids = rng.integers(20, vocab, n).tolist()
        labels = [-100] * (n - ANSWER_TOKENS) + ids[n - ANSWER_TOKENS:]
        feats.append({"input_ids": ids, "labels": labels, "weight": 3.0 if k % 5 == 0 else 1.0})
    return feats


def run_mode(args: argparse.Namespace) -> dict:
    """One recipe in this process: returns tokens/s, peak RSS growth and the weighted loss."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    tok = build_tokenizer([f"{BOS} radiology report CT abdomen pelvis 74177 R10.84"] * 10, vocab_size=300)
    model = build_tiny_model(tok, seed=args.seed, hidden_size=args.hidden, layers=args.layers,
                             heads=4, kv_heads=2, intermediate_size=args.hidden * 11 // 4).train()
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    feats = make_features(example_lengths(args), len(tok), args.seed)
    if args.mode == "padded":
        batches = [[f] for f in feats]  # micro-batch 1: no padding at all, one forward per example
        collate = PackingCollator(pad_token_id=tok.pad_token_id)  # one example = one plain row
    else:
        batches = [[feats[i] for i in row] for row in pack_indices([len(f["input_ids"]) for f in feats], args.max_tokens)]
        collate = PackingCollator(pad_token_id=tok.pad_token_id)
    batches = [collate(b) for b in batches]

    def step(batch):
        batch = dict(batch)
        weights = batch.pop("token_weights")
        out = model(**batch)
        s, w = weighted_lm_loss(out.logits, batch["labels"], weights)
        s.backward()
        return s.detach(), w

    step(batches[-1])  # warm-up (peak RSS is the whole process's: model, data and the largest step)
    model.zero_grad()
    start = time.perf_counter()
    total, count = torch.zeros(()), torch.zeros(())
    for b in batches:
        s, w = step(b)
        total, count = total + s, count + w
    wall = time.perf_counter() - start
    tokens = sum(len(f["input_ids"]) for f in feats)
    return {"mode": args.mode, "micro_batches": len(batches), "tokens": tokens, "wall_s": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "weighted_loss": (total / count).item()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64, help="examples (default 64)")
    p.add_argument("--max-tokens", type=int, default=8192, help="packed row capacity (default 8192)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dataset", default=None, help="a saved DatasetDict: lengths of its train split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=["padded", "packed"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:
        result = run_mode(args)
        print(json.dumps(result))
        return result
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    runs = {}
    for mode in ("padded", "packed"):
        proc = subprocess.run([sys.executable, __file__, *base, "--mode", mode], capture_output=True, text=True,
                              check=True)
        runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    lengths = example_lengths(args)
    rows = pack_indices(lengths, args.max_tokens)
    result = {
        "bench": "packing_speed", "machine": f"{platform.machine()} {torch.get_num_threads()}-thread CPU, "
                                             f"torch {torch.__version__}",
        "examples": len(lengths), "mean_length": round(float(np.mean(lengths)), 1), "max_tokens": args.max_tokens,
        "model": {"hidden": args.hidden, "layers": args.layers},
        "padded_mb1": runs["padded"], "packed": runs["packed"],
        "throughput_ratio_packed_over_padded": round(runs["packed"]["tokens_per_s"] / runs["padded"]["tokens_per_s"], 2),
        # sdpa with a block-diagonal mask still scores every pair in a row; flash-attention varlen does not.
        "dense_attention_pairs_over_varlen": round(sum(sum(lengths[i] for i in r) ** 2 for r in rows)
                                                   / sum(n * n for n in lengths), 2),
        "loss_rel_diff": abs(runs["packed"]["weighted_loss"] - runs["padded"]["weighted_loss"])
        / abs(runs["padded"]["weighted_loss"]),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
