"""Coding throughput: reports/s of the coder, split into retrieval + prompt and generation; prints JSON.

Usage: python bench/code_throughput.py [--reports 64] [--pool 600] [--batch-size 8] [--max-new-tokens 32]
       [--device cpu|cuda] [--dense] [--model DIR --preprocessor DIR [--adapter DIR]]

Default: synthetic cases, a tiny Llama built locally and a BM25 preprocessor built from them; the
coded reports come from another seed, so none of them is in the retrieval pool. With --model and
--preprocessor it times a real release's parts on the same synthetic reports.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from nyxmed.coder import Coder  # noqa: E402
from nyxmed.config import load_recipe  # noqa: E402
from nyxmed.dataset import build_dataset  # noqa: E402
from nyxmed.generation import TransformersGenerator  # noqa: E402
from nyxmed.preprocessor import Preprocessor  # noqa: E402
from nyxmed.synth import generate_cases  # noqa: E402
from nyxmed.tiny import build_tiny_model, build_tokenizer, save_base  # noqa: E402


def tiny_parts(root: Path, pool: int, dense: bool) -> tuple[str, Path]:
    """A tiny base trained on nothing and a preprocessor built from ``pool`` synthetic cases."""
    cases = generate_cases(pool, 17)
    tokenizer = build_tokenizer([c.report_text for c in cases[:300]] + [c.codes.render() for c in cases], 1024)
    base = save_base(build_tiny_model(tokenizer, seed=0), tokenizer, root / "base")
    recipe = load_recipe(None, [f"data.out_dir={root / 'data'}", "data.heldout_size=20", "data.val_size=10",
                                f"retrieval.dense={str(dense).lower()}", "prompt.max_length=3900"])
    build_dataset(recipe, tokenizer, cases, progress=False)
    return str(base), root / "data" / "preprocessor"


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, time the coder, print one JSON object on stdout (everything else goes to stderr)."""
    with contextlib.redirect_stdout(sys.stderr):  # libraries (DeepSpeed's accelerator probe) print to stdout
        result = measure(argv)
    print(json.dumps(result, indent=2))
    return result


def measure(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reports", type=int, default=64)
    p.add_argument("--pool", type=int, default=600, help="synthetic cases the tiny preprocessor is built from")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dense", action="store_true", help="tiny preprocessor with dense retrieval too")
    p.add_argument("--model")
    p.add_argument("--adapter")
    p.add_argument("--preprocessor")
    args = p.parse_args(argv)
    reports = [dataclasses.replace(c, id=f"new-{i}") for i, c in enumerate(generate_cases(args.reports, 99))]
    with tempfile.TemporaryDirectory() as tmp:
        if args.model and args.preprocessor:
            model, pre_dir = args.model, Path(args.preprocessor)
        else:
            model, pre_dir = tiny_parts(Path(tmp), args.pool, args.dense)
        tokenizer = AutoTokenizer.from_pretrained(args.adapter or model)
        preprocessor = Preprocessor.load(pre_dir, tokenizer)
        generator = TransformersGenerator.from_pretrained(model, args.adapter, "auto", args.device,
                                                          batch_size=args.batch_size,
                                                          max_new_tokens=args.max_new_tokens)
        coder = Coder(preprocessor, generator)
        coder.code(reports[:2])  # warm-up: index loading, first forward
        t0 = time.perf_counter()
        prompts = preprocessor.prompts(reports)
        t_prompt = time.perf_counter() - t0
        t0 = time.perf_counter()
        coded, uncoded = coder.code(reports)
        t_total = time.perf_counter() - t0
    t_gen = max(t_total - t_prompt, 1e-9)  # code() makes the same prompts again, then generates
    result = {
        "reports": len(reports), "coded": len(coded), "uncoded": len(uncoded),
        "prompt_tokens_mean": round(sum(len(p.input_ids) for p in prompts if p) / max(len(coded), 1), 1),
        "retrieval_prompt": {"seconds": round(t_prompt, 3), "reports_per_s": round(len(reports) / t_prompt, 2)},
        "generation": {"seconds": round(t_gen, 3), "reports_per_s": round(len(reports) / t_gen, 2)},
        "total": {"seconds": round(t_total, 3), "reports_per_s": round(len(reports) / t_total, 2)},
        "settings": {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "device": args.device,
                     "model": args.model or "tiny (local)", "dense": bool(args.dense or preprocessor.retrieval.dense),
                     "pool_size": len(preprocessor.pool)},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
