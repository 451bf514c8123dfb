"""Wall-time model of the V17 LoRA run on N GPUs with ZeRO-3: baseline vs packed; prints JSON.

Usage: python bench/cost_model.py [--mean-tokens 1200] [--exposed-comm 1.0] [--link-gbs 450] ...

Per micro-batch and rank: time = compute + exposed ZeRO-3 all-gather + fixed overhead.
  compute   = FLOPs / (peak * MFU); FLOPs per token with a frozen base and gradient checkpointing
              = 6 P (forward, recompute, activation-gradient backward; no base weight gradients)
              + attention (4 passes of 2 * layers * ctx * hidden)
  all-gather = gathers * P * 2 bytes * (N-1)/N / (link bandwidth * efficiency); gathers = 3
              (forward, recompute, backward), as in the 16.95 h reference recipe
  overhead  = the rest: ZeRO-3 module hooks, small collectives, launches, the optimizer step.
The reference run (16.95 h, 3,900 steps of 1 x 8 micro-batches on 4 GPUs) fixes the one unknown:
given MFU it yields the overhead, and with --fit mfu (default) the MFU that leaves no overhead
is reported too. The packed recipe puts a rank's 8 examples of a step into one row (micro-batch
8, grad-accum 1): the same tokens and the same loss, one gather set and one overhead per step.
Every input is an argument; mean tokens per example is the main unknown (see --sweep).
"""

from __future__ import annotations

import argparse
import json

H200_BF16_DENSE_TFLOPS = 989.0
REFERENCE_HOURS = 16.95
REFERENCE_STEPS = 3900


def lora_params(layers: int, hidden: int, inter: int, kv_dim: int, r: int) -> int:
    """LoRA A+B parameter count on q, k, v, o, gate, up, down of every layer."""
    shapes = [(hidden, hidden), (hidden, kv_dim), (hidden, kv_dim), (hidden, hidden),
              (hidden, inter), (hidden, inter), (inter, hidden)]
    return layers * sum(r * (i + o) for i, o in shapes)


def flops_per_token(a: argparse.Namespace) -> float:
    """Forward 2P, recompute 2P on checkpointed layers, activation-gradient backward 2P."""
    attention = 2 * a.layers * a.mean_tokens * a.hidden  # causal QK^T + AV per token, one pass
    return (4 + 2 * a.checkpoint_fraction) * a.params_b * 1e9 + (3 + a.checkpoint_fraction) * attention


def gather_seconds(a: argparse.Namespace) -> float:
    """One micro-batch's ZeRO-3 all-gathers of the 16-bit base, per rank."""
    gathers = a.gathers - (1 - a.checkpoint_fraction)  # layers not re-run are not re-gathered
    volume = gathers * a.params_b * 1e9 * 2 * (a.gpus - 1) / a.gpus
    return volume / (a.link_gbs * 1e9 * a.comm_efficiency)


def compute_seconds(a: argparse.Namespace, tokens: float, mfu: float) -> float:
    return tokens * flops_per_token(a) / (a.peak_tflops * 1e12 * mfu)


def memory_gb(a: argparse.Namespace, row_tokens: int) -> dict:
    """Per-GPU memory: frozen 16-bit base shards (no grads, no optimizer state) + LoRA + activations."""
    lora = lora_params(a.layers, a.hidden, a.intermediate, a.kv_dim, a.lora_r)
    saved = a.checkpoint_fraction * a.hidden * 2 + (1 - a.checkpoint_fraction) * a.act_bytes_per_token_layer
    act = row_tokens * saved * a.layers  # a checkpointed layer keeps only its bf16 input
    layer_work = row_tokens * (6 * a.hidden + 3 * a.intermediate) * 2 * 2  # one layer re-run, fwd + bwd
    logits = row_tokens * a.vocab * (2 + 4 + 4)  # bf16 logits, fp32 upcast, fp32 gradient
    parts = {"base_bf16_shard": a.params_b * 1e9 * 2 / a.gpus, "lora_params_adam_fp32_shard": lora * 16 / a.gpus,
             "gathered_live_params": a.max_live_params * 2, "checkpointed_activations": act,
             "one_layer_recompute": layer_work, "logits_and_grad": logits}
    out = {k: round(v / 1e9, 1) for k, v in parts.items()}
    out["total"] = round(sum(parts.values()) / 1e9, 1)
    out["row_tokens"] = row_tokens
    return out


def model(a: argparse.Namespace) -> dict:
    ref_step = a.reference_hours * 3600 / a.reference_steps
    ref_mb = ref_step / a.grad_accum
    tokens_mb = a.micro_batch * a.mean_tokens
    comm = gather_seconds(a)
    exposed = a.exposed_comm * comm
    # Fit: the MFU at which compute + exposed all-gather explains the reference exactly.
    fit_mfu = compute_seconds(a, tokens_mb, 1.0) / max(ref_mb - exposed, 1e-9)
    mfu = fit_mfu if a.mfu is None else a.mfu
    compute_mb = compute_seconds(a, tokens_mb, mfu)
    overhead = ref_mb - compute_mb - exposed  # 0 when fitted; negative = the inputs cannot explain the reference
    base_step = a.grad_accum * (compute_mb + exposed + overhead)
    # Packed: one row of grad_accum * micro_batch examples per rank and step.
    packed_compute = compute_seconds(a, a.grad_accum * tokens_mb, mfu * a.packed_mfu_gain)
    packed_exposed = max(0.0, comm - a.packed_overlap * packed_compute) if a.packed_overlap else exposed
    packed_step = packed_compute + packed_exposed + overhead
    hours = lambda step: round(step * a.steps / 3600, 2)
    # MFU at which the packed step, all-gathers hidden and no overhead, meets the target.
    target_step = a.target_hours * 3600 / a.steps
    break_even = compute_seconds(a, a.grad_accum * tokens_mb, 1.0) / target_step
    tokens_step = a.gpus * a.grad_accum * tokens_mb
    return {
        "inputs": vars(a),
        "reference": {"hours": a.reference_hours, "steps": a.reference_steps, "step_s": round(ref_step, 3),
                      "micro_batch_s": round(ref_mb, 3)},
        "per_micro_batch_baseline": {"tokens": tokens_mb, "compute_s": round(compute_mb, 3),
                                     "all_gather_s": round(comm, 3), "exposed_all_gather_s": round(exposed, 3),
                                     "overhead_s": round(overhead, 3)},
        "implied_mfu": round(fit_mfu, 3), "mfu_used": round(mfu, 3),
        "implied_mfu_if_comm_fully_hidden": round(compute_seconds(a, tokens_mb, 1.0) / ref_mb, 3),
        "baseline": {"step_s": round(base_step, 3), "hours": hours(base_step),
                     "tokens_per_s_per_gpu": round(tokens_step / a.gpus / base_step, 1),
                     "memory_gb_per_gpu": memory_gb(a, int(tokens_mb))},
        "packed": {"step_s": round(packed_step, 3), "hours": hours(packed_step),
                   "tokens_per_s_per_gpu": round(tokens_step / a.gpus / packed_step, 1),
                   "speedup": round(base_step / packed_step, 2),
                   "memory_gb_per_gpu_mean_row": memory_gb(a, int(a.grad_accum * tokens_mb)),
                   "memory_gb_per_gpu_longest_row": memory_gb(a, a.grad_accum * a.micro_batch * a.max_length)},
        "target_hours": a.target_hours,
        "mfu_needed_for_target_packed_comm_hidden": round(break_even, 3),
        "gpu_rows": "not yet measured: no GPU was lent in the session that wrote this model",
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params-b", type=float, default=70.6, help="base parameters, billions (Llama-3-70B: 70.6)")
    p.add_argument("--layers", type=int, default=80)
    p.add_argument("--hidden", type=int, default=8192)
    p.add_argument("--intermediate", type=int, default=28672)
    p.add_argument("--kv-dim", type=int, default=1024, help="k/v projection width (8 KV heads x 128)")
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--gpus", type=int, default=4)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--steps", type=int, default=REFERENCE_STEPS, help="optimizer steps to predict")
    p.add_argument("--mean-tokens", type=float, default=1200.0,
                   help="mean tokens per training example (V17 caps prompts at 2,560; default 1200: an assumption)")
    p.add_argument("--dataset", default=None, help="a saved DatasetDict: take --mean-tokens from its train split")
    p.add_argument("--max-length", type=int, default=2560)
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS, help="H200 dense bf16 peak")
    p.add_argument("--mfu", type=float, default=None, help="fix the MFU instead of fitting it to the reference")
    p.add_argument("--packed-mfu-gain", type=float, default=1.0,
                   help="MFU multiplier for 8x longer rows (bigger GEMMs); 1.0 = no credit taken")
    p.add_argument("--link-gbs", type=float, default=450.0, help="H200 NVLink per-direction GB/s per GPU (900 bidirectional)")
    p.add_argument("--comm-efficiency", type=float, default=0.8, help="achieved fraction of link bandwidth")
    p.add_argument("--gathers", type=int, default=3, help="full-model all-gathers per micro-batch")
    p.add_argument("--checkpoint-fraction", type=float, default=1.0,
                   help="share of layers under gradient checkpointing (V17: 1.0)")
    p.add_argument("--act-bytes-per-token-layer", type=float, default=524e3,
                   help="bytes one un-checkpointed layer keeps per token (bf16, LoRA dropout copies included)")
    p.add_argument("--target-hours", type=float, default=8.0)
    p.add_argument("--exposed-comm", type=float, default=1.0,
                   help="fraction of the baseline all-gather not hidden behind compute (1 = none hidden)")
    p.add_argument("--packed-overlap", type=float, default=0.0,
                   help="packed: share of compute that can hide all-gathers (0 = same exposure as baseline)")
    p.add_argument("--max-live-params", type=float, default=1e9, help="stage3_max_live_parameters")
    p.add_argument("--reference-hours", type=float, default=REFERENCE_HOURS)
    p.add_argument("--reference-steps", type=int, default=REFERENCE_STEPS)
    p.add_argument("--sweep", action="store_true", help="also tabulate mean tokens x exposed comm")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    if a.dataset:
        from datasets import load_from_disk

        lengths = [len(x) for x in load_from_disk(a.dataset)["train"]["input_ids"]]
        a.mean_tokens = sum(lengths) / len(lengths)
    result = model(a)
    if a.sweep:
        rows = []
        for mean in (800, 1200, 1600, 2000):
            for exposed in (0.0, 0.5, 1.0):
                b = argparse.Namespace(**{**vars(a), "mean_tokens": float(mean), "exposed_comm": exposed, "sweep": False})
                r = model(b)
                rows.append({"mean_tokens": mean, "exposed_comm": exposed, "implied_mfu": r["implied_mfu"],
                             "packed_hours": r["packed"]["hours"], "speedup": r["packed"]["speedup"]})
        result["sweep"] = rows
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
