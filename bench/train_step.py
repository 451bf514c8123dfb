"""Training-step speed: tokens/s and peak memory per LoRA step (forward, weighted loss, backward, AdamW).

    python bench/train_step.py                         # tiny Llama on CPU (seconds)
    python bench/train_step.py --model-dims llama3-8b  # random-weight Llama-3-8B shape on one GPU, bf16

Prints one JSON object. The model is random (built from LlamaConfig, nothing downloaded); speed and
memory depend only on the shapes. The loss is the trainer's weighted answer-token loss.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from nyxmed.config import LoraSettings
from nyxmed.packing import IGNORE_INDEX, weighted_lm_loss

# Real Llama-3 shapes; "tiny" matches nyxmed.tiny's defaults with a 512-token vocabulary.
DIMS = {
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8),
}


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"kind": "cuda_max_allocated", "bytes": torch.cuda.max_memory_allocated(device)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": "cpu_max_rss", "bytes": rss if sys.platform == "darwin" else rss * 1024}


def build(dims: str, dtype: torch.dtype, device: torch.device, lora: LoraSettings, checkpointing: bool):
    config = LlamaConfig(**DIMS[dims], max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, attn_implementation="sdpa", use_cache=False)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the training dtype: an 8B fp32 copy would not fit beside it
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, peft_config), config


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dims", choices=sorted(DIMS), default="tiny")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 512 tiny, 2560 otherwise)")
    p.add_argument("--answer-tokens", type=int, default=32, help="labelled tokens at the end of each sequence")
    p.add_argument("--batch", type=int, default=1, help="sequences per micro-batch")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="steps not timed")
    p.add_argument("--lora-r", type=int, default=None, help="default: the v17 LoRA rank (64)")
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    seq_len = args.seq_len or (512 if args.model_dims == "tiny" else 2560)
    lora = LoraSettings() if args.lora_r is None else LoraSettings(r=args.lora_r, alpha=2 * args.lora_r)
    model, config = build(args.model_dims, dtype, device, lora, not args.no_gradient_checkpointing)
    model.train()
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
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
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


if __name__ == "__main__":
    main()
