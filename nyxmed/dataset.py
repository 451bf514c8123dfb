"""The dataset builder: cases -> composition -> splits -> retrieval -> prompts -> tokens -> DatasetDict.

:func:`build_dataset` is the library entry (``nyxmed build-data`` calls it). The folder it writes
holds ``dataset/`` (splits ``train``, ``validation``, ``heldout``), ``manifest.json``,
``records.jsonl`` (id, split, role, hashes: what the next version filters ``retained`` by),
``preprocessor/`` (what makes a prompt: :mod:`nyxmed.preprocessor`) and ``cases/<split>.jsonl``. See docs/dataset.md.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from nyxmed import prompts
from nyxmed.cases import Case
from nyxmed.codes import cpt as cpt_codes
from nyxmed.codes import icd10cm
from nyxmed.composition import (ROLES, SPLITS, Dedup, assign_role, check_disjoint, load_previous_training,
                                remove_duplicates, role_weight, split_by_group)
from nyxmed.config import Recipe, to_dict
from nyxmed.io import atomic_dir, jsonl_text, sha256_file, sha256_text, utc_now, write_atomic
from nyxmed.preprocessor import Preprocessor
from nyxmed.prompt_tokens import BATCH, TRUNCATION_STAGES, Encoded, PieceEncoder, encode_record
from nyxmed.retrieval import neardup
from nyxmed.retrieval.leakage import LAYERS, Fingerprints
from nyxmed.retrieval.neighbours import Neighbours, retrieval_text

__all__ = ["BuildResult", "PieceEncoder", "build_dataset", "composition_table", "encode_record", "retrieval_text"]

MODALITY_WORDS = (("mammo", "mammography"), ("mri", "mri"), ("mr ", "mri"), ("ct ", "ct"), ("cta", "ct"),
                  ("ultrasound", "ultrasound"), ("us ", "ultrasound"), ("duplex", "ultrasound"),
                  ("nuclear", "nuclear_medicine"), ("pet", "nuclear_medicine"), ("fluoro", "fluoroscopy"),
                  ("x-ray", "radiograph"), ("xr ", "radiograph"), ("radiograph", "radiograph"), ("view", "radiograph"))


@dataclass(frozen=True)
class SourceCases:
    """Cases with the role their source gives them (``reviewed`` or ``retained``), plus bookkeeping."""

    cases: list[Case]
    source_roles: list[str]
    sources: list[dict[str, Any]]
    counts: dict[str, int]


@dataclass
class BuildResult:
    out_dir: Path
    dataset: Any  # datasets.DatasetDict
    manifest: dict[str, Any]


# ----------------------------------------------------------------------------- inputs
def _source_entry(spec: str, role: str, counts: dict[str, Any]) -> dict[str, Any]:
    entry = {"source": spec, "role": role, **{k: counts[k] for k in ("read", "accepted", "rejected") if k in counts}}
    if Path(spec).is_file():
        entry["sha256"] = sha256_file(spec)
    return entry


def collect_cases(recipe: Recipe, cases: Sequence[Case] | None, out_dir: Path) -> SourceCases:
    """Reviewed cases (given, read from ``data.sources``, or synthetic) and the filtered ``retained`` pool."""
    from nyxmed import sources
    from nyxmed.releases.parent import parent_training_records

    cfg = recipe.data
    table = cpt_codes.CptTable.from_csv(cfg.cpt_table) if cfg.cpt_table else None
    found, roles, entries, counts = [], [], [], Counter()

    def add(more: Sequence[Case], role: str) -> None:
        found.extend(more)
        roles.extend([role] * len(more))

    if cases is not None:
        add(list(cases), "reviewed")
        entries.append({"source": "given", "role": "reviewed", "accepted": len(cases)})
    elif cfg.sources:
        for i, spec in enumerate(cfg.sources):
            read = sources.read_cases(spec, cpt_table=table, rejects_path=out_dir / "rejects" / f"source-{i}.jsonl")
            add(read.cases, "reviewed")
            entries.append(_source_entry(spec, "reviewed", read.counts))
    else:
        from nyxmed import synth

        generated = synth.generate_cases(cfg.synth_n, cfg.synth_seed)
        add(generated, "reviewed")
        entries.append({"source": f"synthetic(n={cfg.synth_n}, seed={cfg.synth_seed})", "role": "reviewed",
                              "accepted": len(generated)})
    if cfg.retained:
        previous = cfg.previous_manifest or parent_training_records(recipe.model.base_model)
        ids, hashes = load_previous_training(previous) if previous else (set(), set())
        for i, spec in enumerate(cfg.retained):
            read = sources.read_cases(spec, cpt_table=table, rejects_path=out_dir / "rejects" / f"retained-{i}.jsonl")
            fresh = [c for c in read.cases if c.id not in ids and c.content_hash not in hashes]
            counts["retained_filtered_by_previous_manifest"] += len(read.cases) - len(fresh)
            add(fresh, "retained")
            entries.append(_source_entry(spec, "retained", read.counts))
        if previous:
            entries.append({"source": str(previous), "role": "previous_manifest", "sha256": sha256_file(previous)})
    # one record per id: the first source wins (reviewed before retained)
    seen: set[str] = set()
    keep = []
    for i, c in enumerate(found):
        if c.id not in seen:
            seen.add(c.id)
            keep.append(i)
    if not keep:
        raise ValueError("no cases: every source was empty or rejected (see the rejects files)")
    counts["duplicate_ids_removed"] = len(found) - len(keep)
    return SourceCases([found[i] for i in keep], [roles[i] for i in keep], entries, counts)


def modality_of(case: Case) -> str:
    """``meta['modality']`` when the source gives it, else read from the exam description."""
    if case.meta.get("modality"):
        return str(case.meta["modality"])
    text = f"{case.exam_description.lower()} "
    return next((name for word, name in MODALITY_WORDS if word in text), "unknown")


# ----------------------------------------------------------------------------- assembly
def _list_array(arrays: list[np.ndarray], dtype) -> pa.Array:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), type=pa.list_(pa.from_numpy_dtype(dtype)))


SCHEMA = pa.schema([
    ("id", pa.string()), ("role", pa.string()), ("weight", pa.float64()), ("content_hash", pa.string()),
    ("record_hash", pa.string()), ("system", pa.string()), ("user", pa.string()), ("answer", pa.string()),
    ("input_ids", pa.list_(pa.int32())), ("attention_mask", pa.list_(pa.int8())), ("labels", pa.list_(pa.int32())),
    ("cpt", pa.list_(pa.string())), ("modifiers", pa.list_(pa.string())), ("icd", pa.list_(pa.string())),
    ("modality", pa.string()), ("subsection", pa.string()),
])


def _split_table(rows: list[dict[str, Any]], encoded: list[Encoded]) -> pa.Table:
    cols: dict[str, Any] = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in SCHEMA
                            if f.name not in ("input_ids", "attention_mask", "labels")}
    ids = [e.input_ids for e in encoded]
    labels = []
    for e in encoded:
        lab = e.input_ids.copy()
        lab[:e.prompt_len] = -100  # only the answer and its end-of-turn are learned
        labels.append(lab)
    cols["input_ids"] = _list_array(ids, np.int32)
    cols["attention_mask"] = _list_array([np.ones(len(a), np.int8) for a in ids], np.int8)
    cols["labels"] = _list_array(labels, np.int32)
    return pa.table({f.name: cols[f.name] for f in SCHEMA}, schema=SCHEMA)


def _percentiles(lengths: Sequence[int]) -> dict[str, float]:
    if not len(lengths):
        return {}
    a = np.asarray(lengths)
    return {"min": int(a.min()), **{f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 95, 99)}, "max": int(a.max()),
            "mean": float(a.mean())}


def _save_dataset(tables: dict[str, pa.Table], out_dir: Path):
    """save_to_disk into a temp folder, then swap it in: readers never see half a dataset."""
    from datasets import Dataset, DatasetDict

    dd = DatasetDict({name: Dataset(table) for name, table in tables.items()})
    final = out_dir / "dataset"
    with atomic_dir(final) as tmp:
        dd.save_to_disk(str(tmp))
    return DatasetDict.load_from_disk(str(final))


# ----------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class Deduplicated:
    """The cases kept after duplicate removal, their retrieval texts, MinHash signatures, roles and weights."""

    cases: list[Case]
    texts: list[str]
    signatures: np.ndarray
    roles: list[str]
    weights: list[float]
    removed: Dedup | None  # None when data.dedup is off


def deduplicate(found: SourceCases, recipe: Recipe) -> Deduplicated:
    """Drop exact and near duplicates (before splitting, so no copy straddles train and held-out); assign roles."""
    dcfg = recipe.data
    texts_all = [retrieval_text(c) for c in found.cases]
    sigs_all = neardup.signatures(texts_all)
    dedup = remove_duplicates(found.cases, dcfg.dedup_jaccard, sigs_all) if dcfg.dedup else None
    keep = dedup.keep if dedup else np.arange(len(found.cases))
    roles = [assign_role(found.cases[i], found.source_roles[i], dcfg) for i in keep]
    return Deduplicated([found.cases[i] for i in keep], [texts_all[i] for i in keep], sigs_all[keep], roles,
                        [role_weight(r, dcfg) for r in roles], dedup)


@dataclass(frozen=True)
class Splits:
    """Row numbers (into ``Deduplicated.cases``) of each split."""

    rows: dict[str, np.ndarray]

    @property
    def train(self) -> np.ndarray:
        return self.rows["train"]


def split(kept: Deduplicated, recipe: Recipe) -> Splits:
    """Patient-group splits fixed by ``data.seed``; raises if train shares a group or text with the rest."""
    rows = split_by_group(kept.cases, recipe.data.seed, recipe.data.heldout_size, recipe.data.val_size)
    check_disjoint(kept.cases, rows)
    return Splits(rows)


@dataclass(frozen=True)
class Embeddings:
    """Unit sentence embeddings of every kept case (None when dense retrieval is off)."""

    vectors: np.ndarray | None


def embed(kept: Deduplicated, recipe: Recipe, progress: bool) -> Embeddings:
    if not recipe.retrieval.dense:
        return Embeddings(None)
    from nyxmed.retrieval.dense import load_embedder

    return Embeddings(load_embedder(recipe.retrieval.embedding_model).encode(kept.texts, progress=progress))


@dataclass(frozen=True)
class Retrieved:
    """The preprocessor (the train split as the retrieval pool) and every kept case's few-shot neighbours."""

    preprocessor: Preprocessor
    neighbours: Neighbours
    reused_from: Path | None = None  # the saved preprocessor reused as it is (data.preprocessor)


def reused_preprocessor(recipe: Recipe) -> Path | None:
    """The saved preprocessor ``data.preprocessor`` names for this build's prompts, or None for a new one."""
    choice = recipe.data.preprocessor
    if choice == "new":
        return None
    if choice != "auto":
        return Path(choice)
    from nyxmed.releases.parent import release_of

    parent = release_of(recipe.model.base_model)
    return parent.preprocessor if parent else None


def retrieve(kept: Deduplicated, splits: Splits, emb: Embeddings, recipe: Recipe, tokenizer,
             progress: bool) -> Retrieved:
    """Every case queries the train split only (or a reused preprocessor's pool), through the leakage defense."""
    train_rows, vectors = splits.train, emb.vectors
    reused = reused_preprocessor(recipe)
    if reused is not None:
        pre = Preprocessor.load(reused, tokenizer)
        fp, vectors = pre.query_fingerprints(kept.cases, kept.texts, progress)
        pool_row = {c.id: r for r, c in enumerate(pre.pool)}  # a case in the pool never retrieves itself
        self_rows = np.array([pool_row.get(c.id, -1) for c in kept.cases], np.int64)
        return Retrieved(pre, pre.search.search(kept.texts, fp, self_rows, dense_queries=vectors, progress=progress),
                         reused)
    fp = Fingerprints.of(kept.cases, vectors if vectors is not None else kept.signatures)
    pre = Preprocessor([kept.cases[i] for i in train_rows], fp.take(train_rows), recipe.retrieval, recipe.prompt,
                       prompts.load_rules(recipe.prompt.rules_file), tokenizer)
    self_rows = np.full(len(kept.cases), -1, np.int64)
    self_rows[train_rows] = np.arange(len(train_rows))
    neigh = pre.search.search(kept.texts, fp, self_rows, dense_queries=vectors, progress=progress)
    return Retrieved(pre, neigh)


@dataclass(frozen=True)
class Prompts:
    """Every kept case's user-message pieces and answer text, by row."""

    parts: list[prompts.PromptParts]
    answers: list[str]


def prompt(kept: Deduplicated, retrieved: Retrieved) -> Prompts:
    """Few-shot examples, candidate lists, rules and report of each case (the preprocessor's path)."""
    return Prompts(retrieved.preprocessor.parts(kept.cases, retrieved.neighbours),
                   [prompts.answer_text(c) for c in kept.cases])


@dataclass(frozen=True)
class Tokenized:
    """Per split, the rows kept and their tokens; the rows that do not fit and the truncation counts."""

    rows: dict[str, list[int]]
    encoded: dict[str, list[Encoded]]
    too_long: list[str]
    truncated: dict[str, int]
    mode: str  # "pieces" or "whole" (see prompt_tokens.PromptEncoder)


def tokenize(kept: Deduplicated, splits: Splits, built: Prompts, retrieved: Retrieved, recipe: Recipe,
             progress: bool) -> Tokenized:
    """Prompt + answer ids of every case within ``prompt.max_length``, in batches (the preprocessor's encoder)."""
    encoder, tokenizer = retrieved.preprocessor.encoder, retrieved.preprocessor.tokenizer
    rows, encoded, too_long, truncated = {}, {}, [], Counter()
    bar = tqdm(total=len(kept.cases), desc="prompts+tokens", unit="case", disable=not progress)
    for name in SPLITS:
        rows[name], encoded[name] = [], []
        idx = splits.rows[name]
        for lo in range(0, len(idx), BATCH):
            batch = idx[lo:lo + BATCH]
            answer_ids = tokenizer([built.answers[i] for i in batch], add_special_tokens=False)["input_ids"]
            for i, enc in zip(batch, encoder.encode([built.parts[i] for i in batch], answer_ids)):
                if enc is None:
                    too_long.append(kept.cases[i].id)
                    continue
                for stage in enc.stages:
                    truncated[stage] += 1
                truncated["records"] += bool(enc.stages)
                rows[name].append(int(i))
                encoded[name].append(enc)
            bar.update(len(batch))
    bar.close()
    for name in SPLITS:
        if not rows[name]:
            raise ValueError(f"split {name!r} is empty after tokenization: {len(too_long)} record(s) do not fit "
                             f"prompt.max_length={recipe.prompt.max_length} (e.g. {too_long[:3]})")
    return Tokenized(rows, encoded, too_long, dict(truncated), encoder.mode or "whole")


@dataclass(frozen=True)
class Saved:
    """The saved ``DatasetDict`` (reloaded from disk) and the rows of ``records.jsonl``."""

    dataset: Any  # datasets.DatasetDict
    records: list[dict[str, Any]]
    preprocessor_id: str


def save(kept: Deduplicated, tokens: Tokenized, built: Prompts, retrieved: Retrieved, out_dir: Path,
         recipe: Recipe) -> Saved:
    """``dataset/`` (swapped in atomically), ``records.jsonl``, ``preprocessor/`` and, with
    ``data.write_cases``, ``cases/``."""
    system = retrieved.preprocessor.system
    tables, records = {}, []
    for name in SPLITS:
        rows_out = []
        for i, enc in zip(tokens.rows[name], tokens.encoded[name]):
            c = kept.cases[i]
            content, record = c.content_hash, c.record_hash()  # each normalizes the whole text: once
            rows_out.append({
                "id": c.id, "role": kept.roles[i], "weight": kept.weights[i], "content_hash": content,
                "record_hash": record, "system": system, "user": enc.user, "answer": built.answers[i],
                **c.codes.to_dict(), "modality": modality_of(c),
                "subsection": cpt_codes.subsection(c.codes.cpt[0]) or "other",
            })
            records.append({"id": c.id, "split": name, "role": kept.roles[i], "content_hash": content,
                            "record_hash": record})
        tables[name] = _split_table(rows_out, tokens.encoded[name])
    dataset = _save_dataset(tables, out_dir)
    write_atomic(out_dir / "records.jsonl", jsonl_text(records))
    if retrieved.reused_from is not None:  # the same files, so the same preprocessor_id as the parent's
        with atomic_dir(out_dir / "preprocessor", replace=True) as tmp:
            shutil.copytree(retrieved.reused_from, tmp, dirs_exist_ok=True, copy_function=shutil.copyfile)
        preprocessor_id = retrieved.preprocessor.id
    else:
        preprocessor_id = retrieved.preprocessor.save(out_dir / "preprocessor")
    if recipe.data.write_cases:
        from nyxmed.sources import write_cases

        for name in SPLITS:
            write_cases([kept.cases[i] for i in tokens.rows[name]], out_dir / "cases" / f"{name}.jsonl")
    return Saved(dataset, records, preprocessor_id)


def _candidate_recall(kept: Deduplicated, tokens: Tokenized, built: Prompts) -> dict[str, float]:
    """How often the gold primary CPT and the gold ICD codes are in the (untruncated) candidate lists."""
    rows = [i for name in SPLITS for i in tokens.rows[name]]
    cpt = sum(kept.cases[i].codes.cpt[0] in built.parts[i].cpt for i in rows)
    icd = sum(sum(code in built.parts[i].icd for code in kept.cases[i].codes.icd) / len(kept.cases[i].codes.icd)
              for i in rows)
    n = max(len(rows), 1)
    return {"cpt_primary": cpt / n, "icd": icd / n}


def manifest(recipe: Recipe, tokenizer, found: SourceCases, kept: Deduplicated, retrieved: Retrieved,
             built: Prompts, tokens: Tokenized, saved: Saved, seconds: dict[str, float], started: float,
             ) -> dict[str, Any]:
    """What was built and how: sources, config, counts that reconcile, leakage, truncation, lengths."""
    dcfg, dataset, dedup, guard = recipe.data, saved.dataset, kept.removed, retrieved.preprocessor.search.guard
    by_role_split = {r: {s: 0 for s in SPLITS} for r in ROLES}
    weight_sum = {s: 0.0 for s in SPLITS}
    for name in SPLITS:
        for i in tokens.rows[name]:
            by_role_split[kept.roles[i]][name] += 1
            weight_sum[name] += kept.weights[i]
    return {
        "name": recipe.name,
        "created": utc_now(),
        "build_seconds": round(time.time() - started, 2),
        "sources": found.sources,
        "config": {"data": to_dict(dcfg), "retrieval": to_dict(recipe.retrieval), "prompt": to_dict(recipe.prompt)},
        "tokenizer": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
        "tokenization": tokens.mode,  # "pieces": recurring prompt pieces tokenized once
        "rules_sha256": sha256_text(retrieved.preprocessor.rules),
        "icd10cm_release": icd10cm.release_name(),
        "preprocessor": "preprocessor", "preprocessor_id": saved.preprocessor_id,
        "counts": {
            "input": len(found.cases) + found.counts["duplicate_ids_removed"],
            "duplicate_ids_removed": found.counts["duplicate_ids_removed"],
            "retained_filtered_by_previous_manifest": found.counts["retained_filtered_by_previous_manifest"],
            "duplicates_removed": {"exact": dedup.exact if dedup else 0, "near": dedup.near if dedup else 0},
            "after_dedup": len(kept.cases),
            "too_long_dropped": len(tokens.too_long),
            "by_split": {s: len(dataset[s]) for s in SPLITS},
            "by_role": {r: sum(by_role_split[r].values()) for r in ROLES},
            "by_role_split": by_role_split,
        },
        "weights": {**{r: role_weight(r, dcfg) for r in ("specificity", "primary")}, "other": 1.0,
                    "sum_by_split": weight_sum},
        "blocked_retrievals": retrieved.neighbours.blocked,
        "leakage_measure": guard.measure, "leakage_threshold": guard.threshold,
        "truncation": {"max_length": recipe.prompt.max_length, "shortened_records": tokens.truncated.get("records", 0),
                       **{f"by_{s}": tokens.truncated.get(s, 0) for s in TRUNCATION_STAGES},
                       "too_long_ids": tokens.too_long},
        "token_lengths": {s: _percentiles([len(e.input_ids) for e in tokens.encoded[s]]) for s in SPLITS},
        "candidate_recall": _candidate_recall(kept, tokens, built),
        "seconds": seconds,
        "record_index": "records.jsonl",
        "duplicates": dedup.removed if dedup else {},
    }


def build_dataset(recipe: Recipe, tokenizer, cases: Sequence[Case] | None = None, progress: bool = True) -> BuildResult:
    """Build, save and describe the training dataset of ``recipe``; returns the folder, data and manifest.

    ``cases`` replaces ``data.sources`` (all ``reviewed``); ``data.retained`` is still read.
    """
    started = time.time()
    seconds: dict[str, float] = {}
    lap = [started]

    def clock(stage: str) -> None:
        now = time.time()
        seconds[stage] = round(seconds.get(stage, 0.0) + now - lap[0], 3)
        lap[0] = now

    out_dir = Path(recipe.data.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = collect_cases(recipe, cases, out_dir)
    clock("read")
    kept = deduplicate(found, recipe)
    splits = split(kept, recipe)
    clock("dedup_roles_splits")
    emb = embed(kept, recipe, progress)
    if emb.vectors is not None:
        clock("embedding")
    retrieved = retrieve(kept, splits, emb, recipe, tokenizer, progress)
    clock("retrieval_leakage")
    built = prompt(kept, retrieved)
    tokens = tokenize(kept, splits, built, retrieved, recipe, progress)
    clock("candidates_prompts_tokenization")
    saved = save(kept, tokens, built, retrieved, out_dir, recipe)
    clock("save_dataset_records_cases")
    result = manifest(recipe, tokenizer, found, kept, retrieved, built, tokens, saved, seconds, started)
    write_atomic(out_dir / "manifest.json", json.dumps(result, indent=2) + "\n")
    return BuildResult(out_dir, saved.dataset, result)


def composition_table(manifest: dict[str, Any]):
    """A rich table: records per role and split, with loss weights and the totals."""
    from rich.table import Table

    counts = manifest["counts"]
    table = Table(title=f"dataset {manifest['name']}: composition")
    table.add_column("role")
    for s in SPLITS:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    table.add_column("weight", justify="right")
    for role in ROLES:
        row = counts["by_role_split"].get(role, {s: 0 for s in SPLITS})  # manifests from before a role existed
        w = manifest["weights"].get(role, manifest["weights"]["other"])
        table.add_row(role, *(str(row[s]) for s in SPLITS), str(sum(row.values())), f"{w:g}")
    table.add_row("all", *(str(counts["by_split"][s]) for s in SPLITS), str(sum(counts["by_split"].values())), "",
                  style="bold")
    dup = counts["duplicates_removed"]
    table.caption = (f"duplicates removed: {dup['exact']} exact, {dup['near']} near; "
                     f"blocked retrievals: " + ", ".join(f"{k} {manifest['blocked_retrievals'][k]}" for k in LAYERS)
                     + f"; shortened: {manifest['truncation']['shortened_records']}")
    return table
