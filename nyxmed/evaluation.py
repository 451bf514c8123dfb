"""Benchmark manifests, evaluation runs (a model, or saved predictions), reports and run comparison.

An evaluation folder holds ``predictions.jsonl`` (one line per record: raw output, parsed line,
parse issues, gold, per-record metrics), ``metrics.json``, ``report.md`` and ``metrics.png``.
Every number comes from :mod:`nyxmed.metrics`.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from nyxmed import metrics
from nyxmed.codeline import CodeLine, parse
from nyxmed.codes import cpt as cpt_codes
from nyxmed.codes import icd10cm
from nyxmed.config import EvalConfig
from nyxmed.constrained import GrammarSettings
from nyxmed.errors import InputError, NotFound, UsageError, VerificationError
from nyxmed.io import markdown_table, sha256_file, utc_now, write_atomic

PREDICTIONS, METRICS, REPORT, CHART = "predictions.jsonl", "metrics.json", "report.md", "metrics.png"
GROUPS = ("modality", "subsection")


class BenchmarkMismatch(InputError):
    """The data does not hold the benchmark's records unchanged; names the missing and changed ids."""


@dataclass(frozen=True)
class GoldRecord:
    """One scored record: its gold line, the hash that pins its content, prompt text and groups."""

    id: str
    record_hash: str
    codes: CodeLine
    system: str | None = None
    user: str | None = None
    modality: str | None = None
    subsection: str | None = None


# ----------------------------------------------------------------------------- gold
def _dataset_dict_dir(path: Path) -> Path | None:
    for candidate in (path / "dataset", path):
        if (candidate / "dataset_dict.json").exists():
            return candidate
    return None


def load_gold(data: str | Path, split: str = "heldout", rejects_path: str | Path | None = None) -> list[GoldRecord]:
    """Gold records of a built dataset folder (one split) or of a case file (all accepted cases).

    Raises ValueError naming the split or a duplicated id; case-file rejects go to ``rejects_path``.
    """
    path = Path(data)
    ds_dir = _dataset_dict_dir(path) if path.is_dir() else None
    if ds_dir is not None:
        return _gold_from_dataset(ds_dir, split)
    if path.is_dir():
        raise NotFound(f"{path} is neither a built dataset folder (no dataset/dataset_dict.json) nor a case file")
    from nyxmed.sources import read_cases

    result = read_cases(path, rejects_path=rejects_path, progress=False)
    if result.rejects:
        print(f"{path}: {len(result.rejects)} record(s) rejected"
              + (f" (see {rejects_path})" if rejects_path else f"; first: {result.rejects[0].to_dict()}"), file=sys.stderr)
    return [GoldRecord(c.id, c.record_hash(), c.codes, modality=c.meta.get("modality"),
                       subsection=cpt_codes.subsection(c.codes.cpt[0])) for c in result.cases]


def _gold_from_dataset(ds_dir: Path, split: str) -> list[GoldRecord]:
    try:
        from datasets import load_from_disk
    except ImportError as exc:  # the core install rescores case files; built datasets come with the train extra
        raise UsageError(f"{ds_dir} is a built dataset: reading it needs the datasets package "
                         "(pip install 'nyxmed[train]'), or give a case file (JSONL/CSV/Parquet)") from exc

    dd = load_from_disk(str(ds_dir))
    if split not in dd:
        raise InputError(f"{ds_dir}: no split {split!r} (splits: {', '.join(dd)})")
    ds = dd[split]
    needed = ["id", "record_hash", "cpt", "modifiers", "icd", "system", "user", "modality", "subsection"]
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise InputError(f"{ds_dir}: split {split!r} lacks column(s) {missing}")
    out, seen = [], set()
    for row in ds.select_columns(needed):
        if row["id"] in seen:
            raise InputError(f"{ds_dir}: split {split!r}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        out.append(GoldRecord(row["id"], row["record_hash"], CodeLine.of(row["cpt"], row["modifiers"], row["icd"]),
                              row["system"], row["user"], row["modality"] or None, row["subsection"] or None))
    return out


# ----------------------------------------------------------------------------- benchmarks
def create_benchmark(data: str | Path, out: str | Path, pool: str = "heldout", n: int = 500, seed: int = 17,
                     name: str | None = None) -> dict:
    """Sample ``n`` records of ``pool`` (seeded) and write their ids and content hashes to ``out``."""
    out = Path(out)
    gold = load_gold(data, pool, rejects_path=out.with_suffix(".rejects.jsonl"))
    if not gold:
        raise InputError(f"{data}: pool {pool!r} holds no records")
    if n > len(gold):
        print(f"benchmark: pool {pool!r} holds only {len(gold)} records; taking all of them (asked for {n})",
              file=sys.stderr)
    ids = sorted(g.id for g in gold)
    chosen = set(random.Random(seed).sample(ids, min(n, len(ids))))
    records = [{"id": g.id, "record_hash": g.record_hash} for g in sorted(gold, key=lambda g: g.id) if g.id in chosen]
    manifest = {
        "name": name or out.stem, "pool": pool, "seed": seed, "requested_n": n, "n": len(records),
        "source": str(data), "icd10cm_release": icd10cm.release_name(), "created_at": utc_now(),
        "records": records,
    }
    manifest["manifest_hash"] = manifest_hash(records)
    write_atomic(out, json.dumps(manifest, indent=1) + "\n")
    return manifest


def manifest_hash(records: Sequence[Mapping[str, str]]) -> str:
    """SHA-256 over (id, record_hash) pairs: two runs on equal hashes scored the same records."""
    return hashlib.sha256(json.dumps([[r["id"], r["record_hash"]] for r in records]).encode()).hexdigest()


def load_benchmark(path: str | Path) -> dict:
    manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("records"), list):
        raise InputError(f"{path}: not a benchmark manifest (no 'records' list)")
    if manifest.get("manifest_hash") not in (None, manifest_hash(manifest["records"])):
        raise InputError(f"{path}: field 'manifest_hash' does not match its records: the file was edited")
    return manifest


def select_benchmark(manifest: Mapping[str, Any], gold: Sequence[GoldRecord]) -> list[GoldRecord]:
    """The benchmark's records in manifest order; raises :class:`BenchmarkMismatch` if any is missing or changed."""
    by_id = {g.id: g for g in gold}
    missing = [r["id"] for r in manifest["records"] if r["id"] not in by_id]
    changed = [r["id"] for r in manifest["records"] if r["id"] in by_id and by_id[r["id"]].record_hash != r["record_hash"]]
    if missing or changed:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (ids {missing[:20]})")
        if changed:
            parts.append(f"{len(changed)} changed since the benchmark was made (field 'record_hash', ids {changed[:20]})")
        raise BenchmarkMismatch(f"benchmark {manifest.get('name')!r}: of its {len(manifest['records'])} records, "
                                + "; ".join(parts) + ". Refusing to evaluate: rebuild the benchmark or use its data.")
    return [by_id[r["id"]] for r in manifest["records"]]


# ----------------------------------------------------------------------------- runs
def score(gold: Sequence[GoldRecord], outputs: Mapping[str, str], cpt_table: cpt_codes.CptTable | None = None,
          new_tokens: Mapping[str, int] | None = None) -> tuple[list[dict], metrics.ScoreTable]:
    """Parse each record's output and score it; returns predictions.jsonl rows and the score table."""
    parsed = [parse(outputs[g.id]) for g in tqdm(gold, desc="parsing", unit="rec", disable=len(gold) < 2000)]
    table = metrics.score_records([g.id for g in gold], [g.codes for g in gold], [p.line for p in parsed], cpt_table)
    rows = []
    for g, p, rec in zip(gold, parsed, table.records):
        row = {"id": g.id, "output": outputs[g.id], "parsed": p.line.to_dict(), "parsed_line": p.line.render(),
               "parse_issues": list(p.issues), "gold": g.codes.to_dict(), "gold_line": g.codes.render(),
               "record_hash": g.record_hash, "modality": g.modality, "subsection": g.subsection, "metrics": rec}
        if new_tokens is not None:
            row["generated_tokens"] = new_tokens[g.id]
        rows.append(row)
    return rows, table


def write_run(out_dir: str | Path, gold: Sequence[GoldRecord], outputs: Mapping[str, str], run_info: dict,
              cfg: EvalConfig, new_tokens: Mapping[str, int] | None = None) -> dict:
    """Score ``outputs`` against ``gold`` and write predictions.jsonl, metrics.json, report.md and the chart."""
    out = Path(out_dir)
    table_cpt = cpt_codes.CptTable.from_csv(cfg.cpt_table) if cfg.cpt_table else None
    rows, table = score(gold, outputs, table_cpt, new_tokens)
    summary = metrics.summarize(table, {k: [getattr(g, k) for g in gold] for k in GROUPS}, cfg.bootstrap, cfg.seed)
    # the code tables that validity was judged against, so a later re-score (compare) judges the same way
    cpt_table = ({"path": str(Path(cfg.cpt_table).resolve()), "sha256": sha256_file(cfg.cpt_table)}
                 if cfg.cpt_table else None)
    summary["run"] = {**run_info, "cpt_table": cpt_table, "icd10cm_release": icd10cm.release_name(),
                      "scored_records_hash": manifest_hash([{"id": g.id, "record_hash": g.record_hash} for g in gold])}
    write_atomic(out / PREDICTIONS, "".join(json.dumps(r) + "\n" for r in rows))
    write_atomic(out / METRICS, json.dumps(summary, indent=1) + "\n")
    loss = read_eval_loss(cfg.training_metrics) if cfg.training_metrics else None
    write_atomic(out / CHART, metrics_chart(summary, loss))
    write_atomic(out / REPORT, report_markdown(summary, rows))
    return summary


def _selected_gold(cfg: EvalConfig, data: str, rejects_dir: Path) -> tuple[list[GoldRecord], dict]:
    gold = load_gold(data, cfg.split, rejects_path=rejects_dir / "gold.rejects.jsonl")
    info: dict[str, Any] = {"data": str(data), "split": cfg.split}
    if cfg.benchmark:
        manifest = load_benchmark(cfg.benchmark)
        gold = select_benchmark(manifest, gold)
        info["benchmark"] = {"path": str(cfg.benchmark), "name": manifest.get("name"),
                             "manifest_hash": manifest_hash(manifest["records"])}
    return gold, info


def evaluate_model(cfg: EvalConfig, generator=None) -> dict:
    """Generate for every (benchmark) record of ``cfg.data`` with ``cfg.model`` and score; returns metrics.json."""
    from nyxmed.generation import Chat, build_generator

    if not cfg.data:
        raise UsageError("evaluate: 'data' (a built dataset folder with system/user prompts) is required")
    gold, info = _selected_gold(cfg, cfg.data, Path(cfg.out_dir))
    no_prompt = [g.id for g in gold if g.system is None or g.user is None]
    if no_prompt:
        raise InputError(f"{cfg.data}: records {no_prompt[:10]} have no 'system'/'user' prompt: pass a built "
                         "dataset folder (nyxmed build-data), or rescore saved outputs with --predictions/--gold")
    if generator is None:
        if not cfg.model:
            raise UsageError("evaluate: 'model' is required (or --predictions to rescore)")
        generator = build_generator(cfg.backend, cfg.model, cfg.adapter, cfg.batch_size, cfg.max_new_tokens,
                                    cfg.dtype, cfg.device, cfg.endpoint, cfg.api_key_env, cfg.tensor_parallel_size,
                                    grammar=GrammarSettings.of(cfg) if cfg.constrained else None,
                                    cpt_table=cpt_codes.CptTable.from_csv(cfg.cpt_table) if cfg.cpt_table else None)
    start = time.perf_counter()
    gens = generator.generate([Chat(g.id, g.system, g.user) for g in gold])
    seconds = time.perf_counter() - start
    tokens = sum(x.new_tokens for x in gens)
    info.update({"model": cfg.model, "adapter": cfg.adapter, "backend": cfg.backend,
                 "endpoint": cfg.endpoint if cfg.backend == "openai" else None, "batch_size": cfg.batch_size,
                 "max_new_tokens": cfg.max_new_tokens, "generation_seconds": round(seconds, 3),
                 "constrained": constrained_info(cfg, generator),
                 "records_per_s": len(gold) / seconds if seconds else None,
                 "generated_tokens": tokens, "tokens_per_s": tokens / seconds if seconds else None,
                 "created_at": utc_now()})
    return write_run(cfg.out_dir, gold, {g.id: x.text for g, x in zip(gold, gens)}, info, cfg,
                     {g.id: x.new_tokens for g, x in zip(gold, gens)})


def constrained_info(cfg: EvalConfig, generator) -> dict | None:
    """The grammar a run decoded under (settings; compile time and size where nyxmed compiled it), or None."""
    if not cfg.constrained:
        return None
    compiled = getattr(generator, "compiled", None)  # transformers; vLLM and servers compile their own
    return {**dataclasses.asdict(GrammarSettings.of(cfg)),
            "compile_seconds": round(compiled.compile_seconds, 3) if compiled else None,
            "memory_bytes": compiled.memory_bytes if compiled else None}


def read_predictions(path: str | Path) -> dict[str, str]:
    """``{id: output}`` from JSONL lines ``{"id", "output"}``; raises ValueError naming the line."""
    outputs: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not JSON: {exc}") from exc
            if not isinstance(rec, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            rid, text = rec.get("id"), rec.get("output")
            if rid is None or str(rid).strip() == "":
                raise InputError(f"{path}:{lineno}: field 'id' missing")
            if text is not None and not isinstance(text, str):
                raise InputError(f"{path}:{lineno}: record {rid!r}: field 'output' is not text: {text!r:.80}")
            if str(rid) in outputs:
                raise InputError(f"{path}:{lineno}: duplicate id {rid!r}")
            outputs[str(rid)] = text or ""
    return outputs


def rescore(cfg: EvalConfig) -> dict:
    """Score saved outputs (``cfg.predictions``) against ``cfg.gold``; no model runs."""
    if not (cfg.predictions and cfg.gold):
        raise UsageError("rescoring needs both 'predictions' (JSONL id/output) and 'gold' (case file or dataset folder)")
    outputs = read_predictions(cfg.predictions)
    gold, info = _selected_gold(cfg, cfg.gold, Path(cfg.out_dir))
    if cfg.benchmark:
        missing = [g.id for g in gold if g.id not in outputs]
        if missing:
            raise InputError(f"{cfg.predictions}: no output for {len(missing)} benchmark record(s): {missing[:20]}")
    else:
        known = {g.id for g in gold}
        unknown = [rid for rid in outputs if rid not in known]
        if unknown:
            raise InputError(f"{cfg.predictions}: {len(unknown)} id(s) not in the gold {cfg.gold}: {unknown[:20]}")
        gold = [g for g in gold if g.id in outputs]
    info.update({"predictions": str(cfg.predictions),
                 "created_at": utc_now()})
    return write_run(cfg.out_dir, gold, outputs, info, cfg)


def run(cfg: EvalConfig) -> dict:
    """The ``nyxmed evaluate`` entry point: rescore when predictions are given, else run the model."""
    return rescore(cfg) if cfg.predictions else evaluate_model(cfg)


# ----------------------------------------------------------------------------- reports
def read_eval_loss(path: str | Path) -> list[tuple[int, float]]:
    """(step, eval_loss) pairs from a training_metrics.json ``log_history``."""
    history = json.loads(Path(path).read_text(encoding="utf-8")).get("log_history")
    if not isinstance(history, list):
        raise InputError(f"{path}: field 'log_history' is missing or not a list")
    return [(int(h["step"]), float(h["eval_loss"])) for h in history if isinstance(h, dict) and "eval_loss" in h]


def metrics_chart(summary: Mapping[str, Any], eval_loss: Sequence[tuple[int, float]] | None = None) -> bytes:
    """PNG: every aggregate with its 95% CI bar, and the eval-loss curve when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics.AGGREGATE_METRICS)
    values = [summary[n] for n in names]
    ci = [summary["ci95"][n] for n in names]
    lo = [max(v - c[0], 0) if c[0] is not None else 0 for v, c in zip(values, ci)]
    hi = [max(c[1] - v, 0) if c[1] is not None else 0 for v, c in zip(values, ci)]
    panels = 2 if eval_loss else 1
    fig, axes = plt.subplots(1, panels, figsize=(9 + 5 * (panels - 1), 6), squeeze=False)
    ax = axes[0][0]
    ax.barh(range(len(names)), values, xerr=[lo, hi], color="#4477aa", ecolor="black", capsize=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"value (95% bootstrap CI), n={summary['n']}")
    ax.set_title("Evaluation metrics")
    if eval_loss:
        steps, losses = zip(*eval_loss)
        axes[0][1].plot(steps, losses, marker="o")
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel("eval loss")
        axes[0][1].set_title("Eval loss during training")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return markdown_table(header, ([_fmt(c) for c in row] for row in rows)) + "\n"


def report_markdown(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], examples: int = 5) -> str:
    """report.md: run facts, metric/value/CI table, error taxonomy, breakdowns, worst examples."""
    run_info = summary.get("run", {})
    out = ["# Evaluation report\n\n"]
    facts = [(k, run_info[k]) for k in ("model", "adapter", "backend", "endpoint", "data", "split", "predictions",
                                        "records_per_s", "tokens_per_s", "icd10cm_release", "created_at")
             if run_info.get(k) is not None]
    if run_info.get("benchmark"):
        facts.append(("benchmark", f"{run_info['benchmark']['name']} ({run_info['benchmark']['path']})"))
    if run_info.get("cpt_table"):
        facts.append(("cpt_table", f"{run_info['cpt_table']['path']} (sha256 {run_info['cpt_table']['sha256'][:12]})"))
    out.append(_table(["run", ""], [("records", summary["n"]), *facts]))
    b = summary["bootstrap"]
    out.append(f"\n## Metrics\n\n95% CI: percentile bootstrap over records, {b['resamples']} resamples, seed {b['seed']}.\n\n")
    out.append(_table(["metric", "value", "95% CI"],
                      [(n, summary[n], "–" if summary["ci95"][n][0] is None else
                        f"[{summary['ci95'][n][0]:.4f}, {summary['ci95'][n][1]:.4f}]") for n in metrics.AGGREGATE_METRICS]))
    out.append(f"\n![metrics]({CHART})\n")
    err = summary["icd_errors"]
    out.append(f"\n## Missed gold ICD codes ({err['missed']})\n\n")
    out.append(_table(["kind", "count", "share"], [(k, err["counts"][k], err["shares"][k]) for k in metrics.ERROR_KINDS]))
    shown = ("cpt_exact", "modifier_exact", "icd_exact", "all_three_exact", "icd_micro_f1")
    for group, by_value in summary["breakdowns"].items():
        if group == "icd_chapter":
            out.append("\n## By ICD-10-CM chapter (code-level, gold support)\n\n")
            out.append(_table(["chapter", "support", "predicted", "precision", "recall", "F1"],
                              [(ch, v["support"], v["predicted"], v["precision"], v["recall"], v["f1"])
                               for ch, v in by_value.items()]))
        else:
            out.append(f"\n## By {group}\n\n")
            out.append(_table([group, "n", *shown], [(k, v["n"], *(v[m] for m in shown)) for k, v in by_value.items()]))
    wrong = [r for r in rows if not r["metrics"]["all_three_exact"]][:examples]
    if wrong:
        out.append(f"\n## First {len(wrong)} records not exactly right\n\n")
        out.append(_table(["id", "gold", "predicted", "issues"],
                          [(r["id"], r["gold_line"], r["parsed_line"] or "(nothing parsed)",
                            "; ".join(r["parse_issues"]).replace("|", "/")) for r in wrong]))
    return "".join(out)


# ----------------------------------------------------------------------------- comparison
def run_cpt_table(run_dir: str | Path) -> cpt_codes.CptTable | None:
    """The CPT table a run was scored with (from its metrics.json), or None for shape-only validity.

    Raises NotFound if the recorded table is gone and VerificationError if its sha256 changed, and
    VerificationError if the run was scored under another ICD-10-CM release than the one loaded.
    """
    path = Path(run_dir) / METRICS
    info = json.loads(path.read_text(encoding="utf-8")).get("run", {}) if path.exists() else {}
    release = info.get("icd10cm_release")
    if release is not None and release != icd10cm.release_name():
        raise VerificationError(f"{run_dir}: scored under ICD-10-CM release {release!r}, but "
                                f"{icd10cm.release_name()!r} is loaded: load that release to re-score it")
    recorded = info.get("cpt_table")
    if not recorded:
        return None
    table = Path(recorded["path"])
    if not table.is_file():
        raise NotFound(f"{run_dir}: the run was scored with the CPT table {str(table)!r}, which is gone: "
                       "restore it to re-score the run")
    digest = sha256_file(table)
    if digest != recorded["sha256"]:
        raise VerificationError(f"{run_dir}: the CPT table {str(table)!r} changed since the run was scored "
                                f"(sha256 {digest}, recorded {recorded['sha256']}): evaluate again or restore it")
    return cpt_codes.CptTable.from_csv(table)


def load_run(run_dir: str | Path, order: Sequence[str] | None = None) -> metrics.ScoreTable:
    """Re-score a run folder's predictions.jsonl (gold and parsed lines) with the run's own CPT table
    (:func:`run_cpt_table`), optionally in the id ``order`` given."""
    path = Path(run_dir) / PREDICTIONS
    if not path.exists():
        raise NotFound(f"{run_dir}: no {PREDICTIONS}: not an evaluation folder")
    cpt_table = run_cpt_table(run_dir)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if order is not None and sorted(order) == sorted(r["id"] for r in rows):
        by_id = {r["id"]: r for r in rows}
        rows = [by_id[rid] for rid in order]
    line = lambda d: CodeLine.of(d["cpt"], d["modifiers"], d["icd"])  # noqa: E731
    return metrics.score_records([r["id"] for r in rows], [line(r["gold"]) for r in rows],
                                 [line(r["parsed"]) for r in rows], cpt_table)


def compare_runs(a_dir: str | Path, b_dir: str | Path, resamples: int = 1000, seed: int = 17) -> dict:
    """Both runs' metrics, B - A with a paired bootstrap CI, and McNemar p-values; refuses different records."""
    a = load_run(a_dir)
    b = load_run(b_dir, order=a.ids)
    try:
        table = metrics.compare_tables(a, b, resamples, seed)
    except ValueError as exc:
        raise InputError(f"cannot compare {a_dir} with {b_dir}: {exc}") from exc
    return {"a": str(a_dir), "b": str(b_dir), "n": a.n, "bootstrap": {"resamples": resamples, "seed": seed},
            "metrics": table}


def comparison_markdown(comparison: Mapping[str, Any], labels: tuple[str, str] = ("A", "B")) -> str:
    """A before/after table: metric, both values, difference with its 95% CI, McNemar p."""
    a, b = labels
    rows = []
    for name, r in comparison["metrics"].items():
        lo, hi = r["diff_ci95"]
        ci = "–" if lo is None else f"[{lo:+.4f}, {hi:+.4f}]"
        p = r.get("mcnemar", {}).get("p_value")
        rows.append((name, r["a"], r["b"], f"{r['diff']:+.4f}", ci, "–" if p is None else f"{p:.4g}"))
    head = (f"{a}: `{comparison['a']}`  \n{b}: `{comparison['b']}`  \nrecords: {comparison['n']}; paired bootstrap "
            f"{comparison['bootstrap']['resamples']} resamples; McNemar exact test for per-record exact-match metrics.\n\n")
    return head + _table(["metric", a, b, f"{b} − {a}", "95% CI of difference", "McNemar p"], rows)


def write_comparison(comparison: Mapping[str, Any], out_dir: str | Path, labels: tuple[str, str] = ("A", "B")) -> Path:
    """Write comparison.json and comparison.md into ``out_dir``."""
    out = Path(out_dir)
    write_atomic(out / "comparison.json", json.dumps(comparison, indent=1) + "\n")
    write_atomic(out / "comparison.md", "# Comparison\n\n" + comparison_markdown(comparison, labels))
    return out


def eval_inputs(cfg: EvalConfig) -> list[str | None]:
    """Every path an evaluation reads (the output folder must be none of them)."""
    return [cfg.model, cfg.adapter, cfg.data, cfg.benchmark, cfg.predictions, cfg.gold, cfg.training_metrics,
            cfg.cpt_table]


def summary_table(summary: Mapping[str, Any], title: str | Path):
    """A rich table of the headline metrics with their 95% CIs."""
    from rich.table import Table

    table = Table(title=f"{title} (n={summary['n']})")
    for col in ("metric", "value", "95% CI"):
        table.add_column(col)
    for name in metrics.AGGREGATE_METRICS:
        lo, hi = summary["ci95"][name]
        table.add_row(name, f"{summary[name]:.4f}", "–" if lo is None else f"[{lo:.4f}, {hi:.4f}]")
    return table
