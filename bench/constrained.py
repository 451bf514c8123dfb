"""Constrained vs unconstrained decoding on the demo's adapter and benchmark, in one run. JSON to stdout.

Starts from what `make demo` left in ``--demo-out`` (``base/``, ``adapter/``, ``data/``, ``bench.json``),
evaluates the adapter unconstrained and then under the code-line grammar (``eval.constrained``), and
prints every metric for both with the paired bootstrap CI of the difference (constrained - unconstrained),
``invalid_code_rate`` of both, seconds per record of both and their ratio, and the grammar compile time.

    python bench/constrained.py --demo-out out/demo
    python bench/constrained.py --demo-out out/demo --icd valid
"""

from __future__ import annotations

import argparse
import json
import os

from grpo_gain import demo_folders, evaluate  # bench/ is on sys.path when a bench script runs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOAL_RATIO = 1.1  # the goal: constrained costs at most 10 % more time per record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-out", default="out/demo", help="`make demo` output folder")
    ap.add_argument("--out", default=None, help="work folder (default <demo-out>/constrained)")
    ap.add_argument("--icd", default="billable", choices=("billable", "valid"), help="eval.constrained_icd")
    ap.add_argument("--eval-batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()

    from nyxmed import evaluation
    from nyxmed.metrics import AGGREGATE_METRICS

    demo, work = demo_folders(args, "constrained", ("base", "adapter", "data/dataset", "bench.json"))
    runs = {}
    for name, constrained in (("unconstrained", False), ("constrained", True)):
        out = evaluate(demo, demo / "adapter", work / name, args, constrained=constrained, constrained_icd=args.icd)
        runs[name] = {"run": json.loads((out / "metrics.json").read_text())["run"]}
    table = evaluation.compare_runs(work / "unconstrained", work / "constrained", resamples=args.resamples)["metrics"]
    n = json.loads((demo / "bench.json").read_text())["n"]
    per_record = {k: v["run"]["generation_seconds"] / n for k, v in runs.items()}
    ratio = per_record["constrained"] / per_record["unconstrained"] if per_record["unconstrained"] else None
    ci = {m: table[m]["diff_ci95"] for m in AGGREGATE_METRICS}
    grammar = runs["constrained"]["run"]["constrained"]
    result = {
        "demo_out": str(demo), "n": n, "icd": args.icd,
        "unconstrained": {m: table[m]["a"] for m in AGGREGATE_METRICS},
        "constrained": {m: table[m]["b"] for m in AGGREGATE_METRICS},
        "ci95_difference": ci,  # constrained - unconstrained, paired bootstrap over records
        "invalid_code_rate": {"unconstrained": table["invalid_code_rate"]["a"],
                              "constrained": table["invalid_code_rate"]["b"]},
        "seconds_per_record": {k: round(v, 5) for k, v in per_record.items()},
        "time_ratio": round(ratio, 3) if ratio else None,
        "grammar_compile_seconds": grammar["compile_seconds"],
        "grammar_memory_bytes": grammar["memory_bytes"],
        "goal_met": (table["invalid_code_rate"]["b"] == 0 and ratio is not None and ratio <= GOAL_RATIO
                     and all(ci[m][1] is None or ci[m][1] >= 0 for m in AGGREGATE_METRICS
                             if m not in ("invalid_code_rate", "parse_failure_rate"))),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
