"""Dataset builder throughput: cases/second for retrieval + leakage + prompt assembly + tokenization.

    python bench/build_data.py --n 100000            # BM25 only
    python bench/build_data.py --n 100000 --dense    # BM25 + MiniLM/faiss (embedding timed apart)

Synthetic cases (nyxmed.synth) and a byte-level BPE tokenizer trained here with the Llama-3
special tokens and chat template stand in for the real export and the Llama-3 tokenizer.
Prints one JSON object; record the figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100000, help="synthetic cases")
    ap.add_argument("--dense", action="store_true", help="add dense retrieval (MiniLM embeddings + faiss)")
    ap.add_argument("--vocab", type=int, default=32000, help="BPE vocabulary of the stand-in tokenizer")
    ap.add_argument("--heldout", type=float, default=0.05, help="held-out pool (fraction or count)")
    ap.add_argument("--out", default=None, help="output folder (default: a temp folder)")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()

    from nyxmed.config import Recipe
    from nyxmed.dataset import build_dataset
    from nyxmed.synth import generate_cases
    from nyxmed.tiny import build_tokenizer

    t0 = time.time()
    cases = generate_cases(args.n, args.seed)
    synth_s = time.time() - t0
    t0 = time.time()
    tokenizer = build_tokenizer([c.report_text for c in cases[:5000]], vocab_size=args.vocab)
    tokenizer_s = time.time() - t0

    recipe = Recipe(name="bench")
    recipe.data.out_dir = args.out or tempfile.mkdtemp(prefix="nyxmed-bench-data-")
    recipe.data.heldout_size = args.heldout
    recipe.data.val_size = min(250, max(1, int(args.n * 0.01)))
    recipe.data.write_cases = False
    recipe.retrieval.dense = args.dense
    load_before = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    result = build_dataset(recipe, tokenizer, cases, progress=True)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    sec = result.manifest["seconds"]
    n = sum(result.manifest["counts"]["by_split"].values())
    core = sec["retrieval_leakage"] + sec["candidates_prompts_tokenization"]
    total = result.manifest["build_seconds"]
    print(json.dumps({
        "bench": "build_data", "n_input": args.n, "n_built": n, "dense": args.dense, "cpus": os.cpu_count(),
        "cases_per_second": {
            "retrieval_leakage_prompts_tokens": round(n / core, 1),
            "including_embedding": round(n / (core + sec.get("embedding", 0.0)), 1) if args.dense else None,
            "whole_build": round(n / total, 1),
        },
        "seconds": {**sec, "whole_build": total, "synth_excluded": round(synth_s, 1),
                    "tokenizer_training_excluded": round(tokenizer_s, 1)},
        "projected_113k_minutes": round(113000 / (n / total) / 60, 1),
        # the wall clock depends on what else runs on the machine; CPU seconds do not
        "cpu_seconds_whole_build": round(cpu_s, 1),
        "cases_per_cpu_second": round(n / cpu_s, 1),
        # conservative: the Python loop is single-threaded, so an idle machine gives >= 1 CPU-second per second
        "projected_113k_minutes_idle_machine": round(113000 / (n / cpu_s) / 60, 1),
        "load_average_at_start": round(load_before, 2),
        "token_lengths_train": result.manifest["token_lengths"]["train"],
        "truncation": {k: v for k, v in result.manifest["truncation"].items() if k != "too_long_ids"},
        "blocked_retrievals": result.manifest["blocked_retrievals"],
        "duplicates_removed": result.manifest["counts"]["duplicates_removed"],
        "candidate_recall": result.manifest["candidate_recall"],
    }, indent=2))


if __name__ == "__main__":
    main()
