"""Time the synthetic case generator (and writing the cases as JSONL); prints JSON.

Usage: python bench/synth_speed.py [--n 100000] [--seed 17]
Targets: 5,000 cases in a few seconds, 100,000 in well under a minute. ``generate_cpu_s`` is the
process CPU time: on a shared machine (see ``load_avg_1m``) wall time overstates the cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from nyxmed.sources import write_cases
from nyxmed.synth import generate_cases, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    t0 = time.perf_counter()
    small = generate_cases(5000, args.seed)
    t_small = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    cases = generate_cases(args.n, args.seed)
    t_gen, cpu_gen = time.perf_counter() - t0, time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_cases(cases, os.path.join(tmp, "cases.jsonl"))
        t_write = time.perf_counter() - t0
    print(json.dumps({"bench": "synth_speed", "machine": platform.machine(), "cpus": os.cpu_count(),
                      "load_avg_1m": os.getloadavg()[0], "generate_5000_s": round(t_small, 2),
                      "n": args.n, "generate_s": round(t_gen, 2), "generate_cpu_s": round(cpu_gen, 2), "cases_per_s": round(args.n / t_gen),
                      "write_jsonl_s": round(t_write, 2), "summary_5000": summary(small)}, indent=2))


if __name__ == "__main__":
    main()
