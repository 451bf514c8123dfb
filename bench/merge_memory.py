"""Peak memory of `nyxmed merge` relative to the model's bytes, on models built here (JSON to stdout).

Each merge runs in a fresh subprocess after a warm-up merge of the tiny model (model code, tokenizer,
generation paths loaded); the peak RSS is then reset (Linux ``/proc/self/clear_refs``), and the
merge's peak (``VmHWM``) minus the RSS before it is the merge's own memory, divided by the merged
model's bytes on disk. Shards are 5GB as in production (one shard here).
Target: <= 1.3 (no second copy of the weights).

    python bench/merge_memory.py [--sizes tiny,medium] [--dtype bfloat16] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.3
# name -> tiny_llama_config sizes; "medium" is a random Llama of a few hundred MB in bf16
SIZES = {
    "tiny": dict(hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=176),
    "medium": dict(hidden_size=1024, layers=12, heads=16, kv_heads=4, intermediate_size=2816),
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CHILD = r"""
import json, sys, time, torch
from nyxmed.merge import merge_adapter
base, adapter, out, dtype, threads, warm_base, warm_adapter = sys.argv[1:8]
torch.set_num_threads(int(threads))


def status_bytes(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


# Warm-up merge of the tiny model: imports the model code, tokenizer and generation paths, so the
# baseline below holds every fixed cost and the difference is what the merge needs for this model.
merge_adapter(warm_base, warm_adapter, out + ".warmup", dtype=dtype, max_new_tokens=2, overwrite=True)
peak_warmup = status_bytes("VmHWM")
# Reset this process's peak RSS to its current RSS (Linux clear_refs 5): VmHWM then holds the
# merge's own peak. (ru_maxrss cannot: it keeps the warm-up's peak and, across fork+exec, the
# parent's RSS at fork.)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status_bytes("VmRSS")
t0 = time.time()
merge_adapter(base, adapter, out, dtype=dtype, max_shard_size="5GB", overwrite=True)
peak = status_bytes("VmHWM")
print(json.dumps({"rss_after_warmup": before, "peak_rss_during_warmup": peak_warmup, "peak_rss": peak,
                  "seconds": round(time.time() - t0, 2)}))
"""


def build(name: str, workdir: Path, dtype: str) -> tuple[Path, Path]:
    """A random Llama of size ``name`` saved in ``dtype``, and a random LoRA r=8 adapter for it."""
    import torch
    from peft import get_peft_model

    from nyxmed.config import LoraSettings
    from nyxmed.tiny import build_tiny_model, build_tokenizer, save_base

    base, adapter = workdir / f"{name}-base", workdir / f"{name}-adapter"
    if (adapter / "adapter_config.json").is_file():
        return base, adapter
    words = "CT MRI abdomen pelvis contrast knee chest fracture pain R10.84 74177 26 RT M25.561".split()
    tok = build_tokenizer([" ".join(words)] * 50, vocab_size=512)
    model = build_tiny_model(tok, seed=0, **SIZES[name]).to(getattr(torch, dtype))
    save_base(model, tok, base)
    peft_model = get_peft_model(model, LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=LORA_TARGETS)
                                .to_peft(init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    peft_model.save_pretrained(adapter)
    tok.save_pretrained(adapter)
    return base, adapter


def measure(name: str, workdir: Path, dtype: str, threads: int) -> dict:
    base, adapter = build(name, workdir, dtype)
    out = workdir / f"{name}-merged"
    warm_base, warm_adapter = build("tiny", workdir, dtype)
    run = subprocess.run([sys.executable, "-c", CHILD, str(base), str(adapter), str(out), dtype, str(threads),
                          str(warm_base), str(warm_adapter)],
                         capture_output=True, text=True, check=True)
    child = json.loads(run.stdout.strip().splitlines()[-1])
    model_bytes = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    merge_bytes = child["peak_rss"] - child["rss_after_warmup"]
    return {"model": name, "dtype": dtype, "threads": threads, "model_bytes": model_bytes, **child, "merge_rss_bytes": merge_bytes,
            "merge_rss_over_model_bytes": round(merge_bytes / model_bytes, 3),
            "peak_rss_over_model_bytes": round(child["peak_rss"] / model_bytes, 3), "target": TARGET,
            "meets_target": merge_bytes / model_bytes <= TARGET}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="medium", help="comma-separated: tiny, medium")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--workdir", help="keep the built models here (default: a temp folder)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the merge (1: shared CPU)")
    args = ap.parse_args()
    # stdout is the JSON alone: libraries' log lines (DeepSpeed's, imported through peft) go to stderr
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        results = [measure(n, workdir, args.dtype, args.threads) for n in args.sizes.split(",")]
    print(json.dumps({"bench": "merge_memory", "seconds": round(time.time() - t0, 1), "results": results}, indent=2))


if __name__ == "__main__":
    main()
