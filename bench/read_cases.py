"""Case source throughput: write and read (validate) JSONL, CSV, Parquet and a PostgreSQL query; prints JSON.

Usage: python bench/read_cases.py [--records 20000] [--bad-every 50] [--batch-size 1000]
The PostgreSQL part runs when $NYXMED_PG_DSN reaches a server (a table is created and dropped).
Records are the docs/examples cases with unique ids; every ``--bad-every``-th has an invalid ICD code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import replace
from pathlib import Path

from nyxmed.codeline import CodeLine
from nyxmed.sources import PgSource, iter_records, read_cases, write_cases

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples" / "cases.jsonl"


def make_cases(n: int):
    base = read_cases(EXAMPLES, progress=False).cases
    return [replace(base[i % len(base)], id=f"b{i}", report_text=f"{base[i % len(base)].report_text} Case {i}.")
            for i in range(n)]


def timed_read(source) -> dict:
    """read_cases wall time, then the peak memory of streaming the raw records (none kept)."""
    t0 = time.perf_counter()
    result = read_cases(source, progress=False)
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    for _ in iter_records(source):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    c = result.counts
    return {"read": c["read"], "accepted": c["accepted"], "rejected": c["rejected"], "seconds": round(seconds, 3),
            "records_per_s": round(c["read"] / seconds), "stream_peak_traced_mib": round(peak / 2**20, 2)}


def bench_postgres(cases, dsn: str, batch_size: int) -> dict:
    import psycopg
    from psycopg.types.json import Jsonb

    table = f"nyxmed_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (case_id text, body text, cpt text[], modifiers text[], icd text[], meta jsonb)")
        try:
            with conn.cursor().copy(f"COPY {table} FROM STDIN") as cp:
                for c in cases:
                    cp.write_row((c.id, c.report_text, list(c.codes.cpt), list(c.codes.modifiers), list(c.codes.icd),
                                  Jsonb(dict(c.meta))))
            out = timed_read(PgSource(f"SELECT * FROM {table}", dsn=dsn, batch_size=batch_size,
                                      mapping={"case_id": "id", "body": "report_text"}))
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    return {**out, "batch_size": batch_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--bad-every", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=1000)
    args = ap.parse_args()
    cases = make_cases(args.records)
    bad = CodeLine.of(["74177"], ["26"], ["Z99.99"])
    # write_cases validates nothing, so invalid records can be planted through it
    cases = [c.with_codes(bad) if args.bad_every and i % args.bad_every == 0 else c for i, c in enumerate(cases)]
    result: dict = {"records": args.records, "machine": f"{platform.machine()} {os.cpu_count()} CPU", "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for ext in ("jsonl", "csv", "parquet"):
            t0 = time.perf_counter()
            path = write_cases(cases, Path(tmp) / f"cases.{ext}")
            write_s = time.perf_counter() - t0
            result["formats"][ext] = {"write_seconds": round(write_s, 3), "bytes": path.stat().st_size, **timed_read(path)}
    dsn = os.environ.get("NYXMED_PG_DSN")
    if dsn:
        try:
            import psycopg

            psycopg.connect(dsn, connect_timeout=3).close()
        except Exception as exc:  # the bench reports what it could not measure
            result["postgres"] = f"skipped: {exc}"
        else:
            result["postgres"] = bench_postgres(cases, dsn, args.batch_size)
    else:
        result["postgres"] = "skipped: NYXMED_PG_DSN not set"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
