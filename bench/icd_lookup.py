"""Time ICD-10-CM look-ups (normalize + is_valid + chapter + relation) over synthetic records; prints JSON.

Usage: python bench/icd_lookup.py [--n 100000] [--seed 0]

Records mimic model output: billable codes, some written without the dot or in lower case, some
less specific (a parent), some invalid. Each record is compared with a reference code, as the
evaluator does. A cold pass (empty caches) and a warm pass are timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time

from nyxmed.codes import icd10cm


def synthetic_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """(reference, predicted) pairs drawn from the loaded release, with realistic noise."""
    rng = random.Random(seed)
    codes = icd10cm.all_billable()
    pairs = []
    for _ in range(n):
        ref = rng.choice(codes)
        roll = rng.random()
        if roll < 0.5:
            pred = ref
        elif roll < 0.6:
            pred = (icd10cm.ancestors(ref) or (ref,))[0]  # less specific than the reference
        elif roll < 0.65:
            ref, pred = (icd10cm.ancestors(ref) or (ref,))[0], ref  # more specific than the reference
        elif roll < 0.85:
            pred = rng.choice(codes)
        else:
            pred = ref[:-1] + "9" if ref[-1] != "9" else ref[:-1] + "8"  # often invalid
        if rng.random() < 0.3:
            pred = pred.replace(".", "").lower()
        pairs.append((ref, pred))
    return pairs


def run_pass(pairs: list[tuple[str, str]]) -> tuple[float, dict[str, int]]:
    counts: dict[str, int] = {}
    start = time.perf_counter()
    for ref, pred in pairs:
        code = icd10cm.normalize(pred)
        if icd10cm.is_valid(code):
            icd10cm.chapter(code)
        rel = icd10cm.relation(ref, code).value
        counts[rel] = counts.get(rel, 0) + 1
    return time.perf_counter() - start, counts


def _clear_caches() -> None:
    for fn in (icd10cm.normalize, icd10cm._is_valid, icd10cm._is_billable, icd10cm._category_ancestors,
               icd10cm._ancestors):
        fn.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = synthetic_pairs(args.n, args.seed)
    _clear_caches()
    cold, counts = run_pass(pairs)
    warm, _ = run_pass(pairs)
    print(json.dumps({
        "benchmark": "icd_lookup",
        "records": args.n,
        "release": icd10cm.release_name(),
        "cold_seconds": round(cold, 3),
        "warm_seconds": round(warm, 3),
        "cold_records_per_second": round(args.n / cold),
        "warm_records_per_second": round(args.n / warm),
        "relations": counts,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }, indent=2))


if __name__ == "__main__":
    main()
