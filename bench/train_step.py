"""Training-step speed: tokens/s, peak memory and MFU of LoRA training steps; prints JSON.

    python bench/train_step.py                          # one step, tiny Llama on CPU (seconds)
    python bench/train_step.py --model-dims llama3-8b   # random-weight Llama-3-8B shape, one GPU, bf16
    python bench/train_step.py --compare [--n 64]       # padded micro-batch 1 vs packed rows, same data

The model is random (built from LlamaConfig, nothing downloaded); speed and memory depend only on the
shapes. The loss is the trainer's weighted answer-token loss (nyxmed.training.loss.weighted_lm_loss).

--compare runs both recipes over the SAME examples (lengths from --dataset's train split, else a
log-normal clipped to the cap; weight 3 on every fifth), each in its own subprocess so its peak
memory is its own, with identical weights (same seed): forward + backward of every micro-batch, one
AdamW step at the end. "padded" is V17's baseline (micro-batch 1: one example per forward, so no
pad tokens); "packed" puts several examples in one padding-free row (nyxmed.training.packing.PackingCollator,
rows planned by pack_indices up to --max-tokens). The two weighted losses must agree.

MFU = model FLOPs / wall time / peak FLOP/s (--peak-tflops; default 989 on CUDA, the H100/H200 bf16
dense peak; null on CPU). Model FLOPs per example of length L:
    4*N*L + 6*N_lora*L + layers * 12*d*L*(L+1)/2
N = frozen base parameters that multiply (all but the input embedding; lm_head included): forward
2N + input gradients 2N per token (no weight gradients for a frozen base). N_lora: LoRA parameters
(forward, input and weight gradients, 6 per token). Attention: per token per layer 4*ctx*d forward
(QK^T and AV, d = heads*head_dim = hidden size), doubled for the backward input gradients, so
12*ctx*d, with ctx = causal context (token t sees t tokens of its own example only). Gradient
checkpointing's recomputed forward is not counted, nor the dense cross-example pairs sdpa scores
in a packed row: model FLOPs are the same in both modes, so MFU ratios equal throughput ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from nyxmed.config import LoraSettings
from nyxmed.training.loss import IGNORE_INDEX, weighted_lm_loss
from nyxmed.training.packing import PackingCollator, pack_indices

# Real Llama-3 shapes; "tiny" matches nyxmed.tiny's defaults with a 512-token vocabulary.
DIMS = {
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8),
}
ANSWER_TOKENS = 24  # a code line plus <|eot_id|>
H100_BF16_DENSE_TFLOPS = 989.0  # H100 SXM and H200 alike


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"kind": "cuda_max_allocated", "bytes": torch.cuda.max_memory_allocated(device)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": "cpu_max_rss", "bytes": rss if sys.platform == "darwin" else rss * 1024}


def build(dims: str, dtype: torch.dtype, device: torch.device, lora: LoraSettings, checkpointing: bool,
          attn: str = "sdpa"):
    config = LlamaConfig(**DIMS[dims], max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, attn_implementation=attn, use_cache=False)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the training dtype: an 8B fp32 copy would not fit beside it
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return get_peft_model(model, lora.to_peft()), config


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def example_lengths(args: argparse.Namespace) -> list[int]:
    """Token counts of the compared examples: a built dataset's train split, else log-normal."""
    if args.dataset:
        from datasets import load_from_disk

        return [len(x) for x in load_from_disk(args.dataset)["train"]["input_ids"]][: args.n]
    cap = args.max_length
    rng = np.random.default_rng(args.seed)  # median 0.35 * cap: 896 for V17's 2,560-token prompt cap
    return [int(x) for x in np.clip(rng.lognormal(np.log(0.35 * cap), 0.5, args.n), max(2 * ANSWER_TOKENS, cap // 20), cap)]


def make_features(lengths: list[int], vocab: int, seed: int) -> list[dict]:
    """Random-token examples shaped like the built dataset: only the last ANSWER_TOKENS labelled."""
    rng = np.random.default_rng(seed)
    feats = []
    for k, n in enumerate(lengths):
        ids = rng.integers(20, vocab, n).tolist()
        labels = [IGNORE_INDEX] * (n - ANSWER_TOKENS) + ids[n - ANSWER_TOKENS:]
        feats.append({"input_ids": ids, "labels": labels, "weight": 3.0 if k % 5 == 0 else 1.0})
    return feats


def model_flops(lengths: list[int], config: LlamaConfig, base_matmul_params: int, lora_params: int) -> float:
    """Model FLOPs of forward + backward over ``lengths`` (formula in the module docstring)."""
    d, layers = config.hidden_size, config.num_hidden_layers
    return float(sum((4 * base_matmul_params + 6 * lora_params) * n + layers * 12 * d * n * (n + 1) / 2
                     for n in lengths))


def setup(args: argparse.Namespace):
    """Device, dtype, PEFT model and config from the shared options."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lora = LoraSettings() if args.lora_r is None else LoraSettings(r=args.lora_r, alpha=2 * args.lora_r)
    torch.manual_seed(args.seed)  # both --compare modes get the same base weights
    model, config = build(args.model_dims, dtype, device, lora, not args.no_gradient_checkpointing, args.attn)
    return device, dtype, lora, model.train(), config


def run_mode(args: argparse.Namespace) -> dict:
    """One --compare recipe in this process: tokens/s, peak memory and weighted loss over all examples."""
    device, dtype, _, model, config = setup(args)
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    feats = make_features(example_lengths(args), config.vocab_size, args.seed)
    if args.mode == "padded":
        rows = [[i] for i in range(len(feats))]  # micro-batch 1: one example per forward, no pad tokens
    else:
        rows = pack_indices([len(f["input_ids"]) for f in feats], args.max_tokens)
    collate = PackingCollator(pad_token_id=0)  # one call per row: every row is exactly its examples
    batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in collate([feats[i] for i in r]).items()}
               for r in rows]

    def step(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        s, w = weighted_lm_loss(logits, batch["labels"], batch["token_weights"])
        s.backward()  # summed weighted loss: the step's loss is sum(s) / sum(w), as in the trainer
        return s.detach(), w

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):  # on the widest row: allocator and kernels warm, peak memory reached
        step(max(batches, key=lambda b: b["input_ids"].shape[1]))
    model.zero_grad(set_to_none=True)
    sync()
    start = time.perf_counter()
    total = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    for b in batches:
        s, w = step(b)
        total, count = total + s.float(), count + w
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync()
    wall = time.perf_counter() - start
    tokens = sum(len(f["input_ids"]) for f in feats)
    return {"mode": args.mode, "micro_batches": len(batches), "tokens": tokens, "wall_s": wall,
            "tokens_per_s": tokens / wall, "peak_memory": peak_memory(device),
            "weighted_loss": (total / count).item()}


def compare(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run both recipes (a subprocess each) over the same examples; JSON with ratio, memory and MFU."""
    runs = {}
    for mode in ("padded", "packed"):
        proc = subprocess.run([sys.executable, __file__, *argv, "--mode", mode], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"--mode {mode} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    device = torch.device(args.device)
    peak = args.peak_tflops if args.peak_tflops is not None else (H100_BF16_DENSE_TFLOPS if device.type == "cuda" else None)
    lora = LoraSettings() if args.lora_r is None else LoraSettings(r=args.lora_r, alpha=2 * args.lora_r)
    with torch.device("meta"):  # parameter counts without allocating an 8B model here
        model, config = build(args.model_dims, torch.float32, torch.device("meta"), lora, False, args.attn)
    lora_params = sum(q.numel() for q in model.parameters() if q.requires_grad)
    embed = model.get_input_embeddings().weight.numel()
    base_matmul = sum(q.numel() for q in model.parameters() if not q.requires_grad) - embed
    lengths = example_lengths(args)
    flops = model_flops(lengths, config, base_matmul, lora_params)
    for r in runs.values():
        r["model_tflops_per_s"] = flops / r["wall_s"] / 1e12
        r["mfu"] = None if peak is None else flops / r["wall_s"] / (peak * 1e12)
    rows = pack_indices(lengths, args.max_tokens)
    result = {
        "bench": "train_step_compare", "model_dims": args.model_dims, "device": str(device),
        "device_name": device_name(device), "cpu_threads": args.threads or torch.get_num_threads(),
        "dtype": "bfloat16" if device.type == "cuda" else "float32", "torch": torch.__version__,
        "attn_implementation": args.attn, "gradient_checkpointing": not args.no_gradient_checkpointing,
        "lora_r": lora.r, "examples": len(lengths), "mean_length": float(np.mean(lengths)),
        "max_tokens": args.max_tokens, "packed_rows": len(rows),
        "base_matmul_params": base_matmul, "lora_params": lora_params,
        "model_flops_per_token": flops / sum(lengths), "peak_tflops": peak,
        "padded": runs["padded"], "packed": runs["packed"],
        "tokens_per_s_ratio_packed_over_padded": runs["packed"]["tokens_per_s"] / runs["padded"]["tokens_per_s"],
        # sdpa with a block-diagonal mask still scores every pair in a row; flash-attention varlen does not.
        "dense_attention_pairs_over_varlen": sum(sum(lengths[i] for i in r) ** 2 for r in rows)
        / sum(n * n for n in lengths),
        "loss_abs_diff": abs(runs["packed"]["weighted_loss"] - runs["padded"]["weighted_loss"]),
        "loss_rel_diff": abs(runs["packed"]["weighted_loss"] - runs["padded"]["weighted_loss"])
        / abs(runs["padded"]["weighted_loss"]),
    }
    print(json.dumps(result, indent=2))
    return result


def single_step(args: argparse.Namespace) -> dict:
    """Repeated identical steps on one random micro-batch (forward, loss, backward, AdamW)."""
    device, dtype, lora, model, config = setup(args)
    seq_len = args.seq_len or (512 if args.model_dims == "tiny" else 2560)
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (args.batch, seq_len), generator=gen).to(device)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -args.answer_tokens:] = ids[:, -args.answer_tokens:]
    weights = torch.ones(ids.shape, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        total, count = weighted_lm_loss(model(input_ids=ids).logits, labels, weights)
        (total / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    tokens = args.batch * seq_len
    step_s = statistics.median(times)
    result = {
        "bench": "train_step", "model_dims": args.model_dims, "device": str(device),
        "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(), "dtype": str(dtype).removeprefix("torch."),
        "seq_len": seq_len, "batch": args.batch, "lora_r": lora.r,
        "gradient_checkpointing": not args.no_gradient_checkpointing,
        "trainable_params": sum(q.numel() for q in model.parameters() if q.requires_grad),
        "total_params": sum(q.numel() for q in model.parameters()),
        "steps_timed": len(times), "step_seconds_median": step_s, "step_seconds_min": min(times),
        "tokens_per_second": tokens / step_s, "peak_memory": peak_memory(device),
    }
    print(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dims", choices=sorted(DIMS), default="tiny")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 512 tiny, 2560 otherwise)")
    p.add_argument("--answer-tokens", type=int, default=32, help="labelled tokens at the end of each sequence")
    p.add_argument("--batch", type=int, default=1, help="sequences per micro-batch")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="steps not timed")
    p.add_argument("--lora-r", type=int, default=None, help="default: the v17 LoRA rank (64)")
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager, flash_attention_2, ...)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("--compare: padded micro-batch 1 vs packed rows over the same examples")
    g.add_argument("--compare", action="store_true")
    g.add_argument("--n", type=int, default=64, help="examples (default 64)")
    g.add_argument("--max-length", type=int, default=2560, help="longest example, tokens (V17's prompt cap)")
    g.add_argument("--max-tokens", type=int, default=8192, help="packed row capacity (default 8192)")
    g.add_argument("--dataset", default=None, help="a saved DatasetDict: lengths of its train split")
    g.add_argument("--peak-tflops", type=float, default=None,
                   help=f"device peak for MFU (default {H100_BF16_DENSE_TFLOPS:g} on CUDA; MFU null on CPU)")
    g.add_argument("--mode", choices=["padded", "packed"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:
        result = run_mode(args)
        print(json.dumps(result))
        return result
    if args.compare:
        return compare(args, [a for a in argv if a != "--compare"])
    return single_step(args)


if __name__ == "__main__":
    main()
