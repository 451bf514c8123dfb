"""Evaluation throughput: records/s and generated tokens/s, batched vs unbatched; scoring speed; prints JSON.

Usage: python bench/eval_throughput.py [--records 32] [--batch-sizes 1,4,8,16] [--max-new-tokens 64] [--threads 1]
       [--model DIR [--adapter DIR]]   (default: a tiny random Llama built locally, on CPU)

On a machine with a GPU and vLLM installed, the vLLM path (adapter via LoRARequest) is timed against
the transformers path on the same prompts; elsewhere that part is reported as skipped. Scoring
(parse + metrics + 1,000-resample bootstrap) is timed on synthetic gold/prediction pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from nyxmed import metrics  # noqa: E402
from nyxmed.codeline import CodeLine, parse  # noqa: E402
from nyxmed.codes import icd10cm  # noqa: E402
from nyxmed.generation import Chat, TransformersGenerator, VllmGenerator  # noqa: E402
from nyxmed.tiny import build_tiny_base  # noqa: E402

REPORT = ("EXAM: CT abdomen and pelvis with contrast. REASON: right lower quadrant pain, fever. "
          "FINDINGS: The appendix is dilated with periappendiceal fat stranding. No free air. "
          "Small bilateral renal cysts. IMPRESSION: Acute appendicitis without perforation. ")
SYSTEM = "You are a certified radiology coder. Answer with one line: CPT, modifiers, ICD-10-CM codes."


def chats(n: int, seed: int) -> list[Chat]:
    """Prompts of realistic, varied length (one to four report paragraphs)."""
    rng = random.Random(seed)
    return [Chat(f"r{i}", SYSTEM, REPORT * rng.randint(1, 4)) for i in range(n)]


def tiny_model_dir(root: str) -> str:
    codes = " ".join(icd10cm.all_billable()[::300])
    corpus = [REPORT, codes, "74177, 26, R10.84, K57.30", "73721, RT 26, M25.561"] * 20
    return str(build_tiny_base(corpus, root, vocab_size=512))


def time_generation(gen, requests: list[Chat]) -> dict:
    start = time.perf_counter()
    out = gen.generate(requests, progress=False)
    seconds = time.perf_counter() - start
    tokens = sum(g.new_tokens for g in out)
    return {"seconds": round(seconds, 3), "records_per_s": round(len(out) / seconds, 2),
            "generated_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def time_scoring(n: int, seed: int) -> dict:
    """Parse + score + summarize (1,000 bootstrap resamples) for ``n`` synthetic records."""
    rng = random.Random(seed)
    codes = icd10cm.all_billable()
    golds, outputs = [], []
    for _ in range(n):
        g = CodeLine.of([rng.choice(["74177", "73721", "93970", "71046"])], rng.choice([[], ["26"]]),
                        rng.sample(codes, rng.randint(1, 4)))
        golds.append(g)
        pred_icd = [c if rng.random() < 0.7 else rng.choice(codes) for c in g.icd]
        outputs.append(CodeLine.of(g.cpt, g.modifiers, pred_icd).render() if rng.random() > 0.05 else "no idea")
    start = time.perf_counter()
    preds = [parse(o).line for o in outputs]
    parsed = time.perf_counter()
    table = metrics.score_records([str(i) for i in range(n)], golds, preds)
    scored = time.perf_counter()
    metrics.summarize(table, {"modality": [None] * n}, resamples=1000, seed=seed)
    done = time.perf_counter()
    return {"records": n, "parse_s": round(parsed - start, 3), "score_s": round(scored - parsed, 3),
            "summarize_with_bootstrap_s": round(done - scored, 3)}


def main() -> None:
    # Libraries loaded on the way (DeepSpeed via transformers) log to stdout: keep stdout pure JSON.
    with contextlib.redirect_stdout(sys.stderr):
        result = run()
    print(json.dumps(result, indent=1))


def run() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model", help="model folder (default: a tiny random Llama built here)")
    parser.add_argument("--adapter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (a tiny model gains nothing from more; shared cores lose a lot)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    requests = chats(args.records, args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or tiny_model_dir(tmp)
        first = TransformersGenerator.from_pretrained(model_dir, args.adapter, device=device,
                                                      max_new_tokens=args.max_new_tokens)
        first.generate(requests[:2], progress=False)  # warm-up
        transformers_runs = {}
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            gen = TransformersGenerator(first.model, first.tokenizer, batch_size=bs, max_new_tokens=args.max_new_tokens)
            transformers_runs[f"batch_{bs}"] = time_generation(gen, requests)
        if device == "cuda" and importlib.util.find_spec("vllm") is not None:
            del first, gen
            torch.cuda.empty_cache()
            vllm_run = time_generation(VllmGenerator(model_dir, args.adapter, args.max_new_tokens), requests)
        else:
            vllm_run = {"skipped": "no GPU" if device != "cuda" else "vLLM not installed"}
    return {
        "benchmark": "eval_throughput",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": device,
                    "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None},
        "model": args.model or "tiny random Llama (hidden 64, 2 layers, vocab 512)",
        "records": args.records, "max_new_tokens": args.max_new_tokens,
        "transformers": transformers_runs, "vllm": vllm_run,
        "scoring": [time_scoring(n, args.seed) for n in (500, 5950)],
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
