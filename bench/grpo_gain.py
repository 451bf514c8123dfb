"""What the GRPO stage adds to the demo's SFT adapter, on the demo's own benchmark. JSON to stdout.

Starts from what `make demo` left in ``--demo-out`` (``base/``, ``adapter/`` with its resolved
``config.yaml``, ``data/``, ``bench.json``), evaluates the SFT adapter, runs ``--steps`` GRPO steps
that continue it (``train.stage=grpo``, the same launcher as SFT), evaluates the result on the same
benchmark, and prints ``before``/``after`` (metric -> value), ``ci95_difference`` (metric ->
[low, high], paired bootstrap over records), the reward curves and seconds per step.

    python bench/grpo_gain.py --demo-out out/demo --steps 200
    python bench/grpo_gain.py --demo-out out/demo --steps 200 grpo.beta=0.02 train.learning_rate=5e-5

Positional ``key=value`` overrides go to the GRPO recipe (the SFT run's config.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
GOAL_UP = ("icd_exact", "all_three_exact")  # should rise, CI of the difference above 0
GOAL_KEEP = ("cpt_exact", "modifier_exact")  # should not fall beyond their CI


def evaluate(demo: Path, adapter: Path, out_dir: Path, args, **fields) -> Path:
    """One evaluation run on the demo benchmark into ``out_dir``; ``fields`` set further EvalConfig fields."""
    from nyxmed import evaluation
    from nyxmed.config import EvalConfig

    cfg = replace(EvalConfig(), model=str(demo / "base"), adapter=str(adapter), data=str(demo / "data"),
                  benchmark=str(demo / "bench.json"), out_dir=str(out_dir), batch_size=args.eval_batch_size,
                  max_new_tokens=args.max_new_tokens, device=args.device, bootstrap=args.resamples, **fields)
    evaluation.run(cfg)
    return out_dir


def demo_folders(args, bench: str, needs: tuple[str, ...]) -> tuple[Path, Path]:
    """(the `make demo` folder, this bench's work folder); exits naming the first part the demo lacks."""
    demo = Path(args.demo_out).resolve()
    for need in needs:
        if not (demo / need).exists():
            sys.exit(f"{bench}: {demo / need} missing: run `make demo` first (--demo-out {args.demo_out})")
    return demo, (Path(args.out).resolve() if args.out else demo / bench)


def grpo_command(demo: Path, out: Path, args) -> list[str]:
    overrides = ["train.stage=grpo", f"grpo.sft_adapter={demo / 'adapter'}", f"model.base_model={demo / 'base'}",
                 f"train.dataset_dir={demo / 'data' / 'dataset'}", f"train.output_dir={out}",
                 f"train.max_steps={args.steps}", "train.resume=false", f"train.save_steps={max(args.steps, 1)}",
                 "train.logging_steps=1", f"train.learning_rate={args.lr}", "train.lr_scheduler=constant",
                 "train.warmup_ratio=0.0", "train.micro_batch_size=8", "grpo.num_generations=8",
                 f"train.gradient_accumulation_steps={args.prompts_per_step}", *args.overrides]
    script = [str(ROOT / "train.py"), "--config", str(demo / "adapter" / "config.yaml"), *overrides]
    if args.ranks <= 1:
        return [sys.executable, *script, "train.deepspeed=null"]
    launcher = Path(sys.executable).parent / "deepspeed"
    return [str(launcher), "--num_gpus", str(args.ranks), *script]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-out", default="out/demo", help="`make demo` output folder")
    ap.add_argument("--out", default=None, help="work folder (default <demo-out>/grpo_gain)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--prompts-per-step", type=int, default=2,
                    help="prompts per optimizer step, 8 completions each (micro-batch 8 = one group)")
    ap.add_argument("--ranks", type=int, default=1, help="DeepSpeed ZeRO-3 processes; 1 = one process, no DeepSpeed")
    ap.add_argument("--eval-batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()

    from nyxmed import evaluation
    from nyxmed.metrics import AGGREGATE_METRICS

    demo, work = demo_folders(args, "grpo_gain", ("base", "adapter/config.yaml", "data/dataset", "bench.json"))
    work.mkdir(parents=True, exist_ok=True)
    before = evaluate(demo, demo / "adapter", work / "eval_before", args)

    log = work / "grpo.log"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(grpo_command(demo, work / "grpo", args), cwd=ROOT, env=env, stdout=fh,
                            stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"grpo_gain: the GRPO run exited {rc}; log {log}:\n{log.read_text(errors='replace')[-3000:]}")
    tm = json.loads((work / "grpo" / "training_metrics.json").read_text())
    after = evaluate(demo, work / "grpo", work / "eval_after", args)

    table = evaluation.compare_runs(before, after, resamples=args.resamples)["metrics"]
    ci = {m: table[m]["diff_ci95"] for m in AGGREGATE_METRICS}
    result = {
        "demo_out": str(demo), "steps": tm["global_step"], "n": json.loads((demo / "bench.json").read_text())["n"],
        "before": {m: table[m]["a"] for m in AGGREGATE_METRICS},
        "after": {m: table[m]["b"] for m in AGGREGATE_METRICS},
        "ci95_difference": ci,
        "goal_met": (all(ci[m][0] is not None and ci[m][0] > 0 for m in GOAL_UP)
                     and all(ci[m][1] is not None and ci[m][1] >= 0 for m in GOAL_KEEP)),
        "reward_curve": tm["reward_curves"],
        "seconds_per_step": tm["seconds_per_step"],
        "grpo_wall_seconds": round(wall, 1),
        "reward_weights": tm["reward_weights"],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
