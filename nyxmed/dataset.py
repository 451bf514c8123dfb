"""The dataset builder: cases -> composition -> splits -> retrieval -> prompts -> tokens -> DatasetDict.

:func:`build_dataset` is the library entry (``nyxmed build-data`` calls it). The folder it writes
holds ``dataset/`` (splits ``train``, ``validation``, ``heldout``), ``manifest.json``,
``records.jsonl`` (id, split, role, hashes: what the next version filters ``retained`` by) and
``cases/<split>.jsonl``. See docs/dataset.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from nyxmed import prompts
from nyxmed.cases import Case
from nyxmed.codes import cpt as cpt_codes
from nyxmed.composition import (ROLES, SPLITS, assign_role, check_disjoint, load_previous_training,
                                remove_duplicates, role_weight, split_by_group)
from nyxmed.config import Recipe, to_dict
from nyxmed.io import atomic_dir, sha256_file, utc_now, write_atomic
from nyxmed.retrieval import neardup
from nyxmed.retrieval.candidates import CodeIncidence, widen
from nyxmed.retrieval.leakage import LAYERS, Fingerprints
from nyxmed.retrieval.neighbours import Neighbours, NeighbourSearch

log = logging.getLogger(__name__)

MODALITY_WORDS = (("mammo", "mammography"), ("mri", "mri"), ("mr ", "mri"), ("ct ", "ct"), ("cta", "ct"),
                  ("ultrasound", "ultrasound"), ("us ", "ultrasound"), ("duplex", "ultrasound"),
                  ("nuclear", "nuclear_medicine"), ("pet", "nuclear_medicine"), ("fluoro", "fluoroscopy"),
                  ("x-ray", "radiograph"), ("xr ", "radiograph"), ("radiograph", "radiograph"), ("view", "radiograph"))
TRUNCATION_STAGES = ("shots", "candidates", "body")


@dataclass
class SourceCases:
    """Cases with the role their source gives them (``reviewed`` or ``retained``), plus bookkeeping."""

    cases: list[Case] = field(default_factory=list)
    source_roles: list[str] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=Counter)

    def add(self, cases: Sequence[Case], role: str) -> None:
        self.cases.extend(cases)
        self.source_roles.extend([role] * len(cases))


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

    cfg = recipe.data
    table = cpt_codes.CptTable.from_csv(cfg.cpt_table) if cfg.cpt_table else None
    found = SourceCases()
    if cases is not None:
        found.add(list(cases), "reviewed")
        found.sources.append({"source": "given", "role": "reviewed", "accepted": len(cases)})
    elif cfg.sources:
        for i, spec in enumerate(cfg.sources):
            read = sources.read_cases(spec, cpt_table=table, rejects_path=out_dir / "rejects" / f"source-{i}.jsonl")
            found.add(read.cases, "reviewed")
            found.sources.append(_source_entry(spec, "reviewed", read.counts))
    else:
        from nyxmed import synth

        generated = synth.generate_cases(cfg.synth_n, cfg.synth_seed)
        found.add(generated, "reviewed")
        found.sources.append({"source": f"synthetic(n={cfg.synth_n}, seed={cfg.synth_seed})", "role": "reviewed",
                              "accepted": len(generated)})
    if cfg.retained:
        ids, hashes = load_previous_training(cfg.previous_manifest) if cfg.previous_manifest else (set(), set())
        for i, spec in enumerate(cfg.retained):
            read = sources.read_cases(spec, cpt_table=table, rejects_path=out_dir / "rejects" / f"retained-{i}.jsonl")
            kept = [c for c in read.cases if c.id not in ids and c.content_hash not in hashes]
            found.counts["retained_filtered_by_previous_manifest"] += len(read.cases) - len(kept)
            found.add(kept, "retained")
            found.sources.append(_source_entry(spec, "retained", read.counts))
        if cfg.previous_manifest:
            found.sources.append({"source": cfg.previous_manifest, "role": "previous_manifest",
                                  "sha256": sha256_file(cfg.previous_manifest)})
    # one record per id: the first source wins (reviewed before retained)
    seen: set[str] = set()
    keep = []
    for i, c in enumerate(found.cases):
        if c.id not in seen:
            seen.add(c.id)
            keep.append(i)
    found.counts["duplicate_ids_removed"] = len(found.cases) - len(keep)
    found.cases = [found.cases[i] for i in keep]
    found.source_roles = [found.source_roles[i] for i in keep]
    return found


def retrieval_text(case: Case) -> str:
    """What retrieval and the near-duplicate checks see: exam, reason and body."""
    return "\n".join((case.exam_description, case.reason_for_exam, case.report_text))


def modality_of(case: Case) -> str:
    """``meta['modality']`` when the source gives it, else read from the exam description."""
    if case.meta.get("modality"):
        return str(case.meta["modality"])
    text = f"{case.exam_description.lower()} "
    return next((name for word, name in MODALITY_WORDS if word in text), "unknown")


# ----------------------------------------------------------------------------- tokenization
@dataclass
class Encoded:
    user: str
    input_ids: np.ndarray
    prompt_len: int
    stages: tuple[str, ...]


def _body_cut(tokenizer, body: str, keep: int, min_head: int) -> str:
    """``body`` with its middle replaced by ``CUT_MARK`` so about ``keep`` tokens remain."""
    enc = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if keep >= len(offsets):
        return body
    head = max(min_head, (2 * keep) // 3)
    tail = max(0, keep - head)
    head_end = offsets[min(head, len(offsets)) - 1][1] if head else 0
    tail_start = offsets[len(offsets) - tail][0] if tail else len(body)
    return body[:head_end] + prompts.CUT_MARK + body[tail_start:]


def encode_record(tokenizer, system: str, parts: prompts.PromptParts, answer_ids: list[int], max_length: int,
                  min_body_tokens: int, first: tuple[str, list[int]] | None = None) -> Encoded | None:
    """Tokens of prompt + answer within ``max_length``; shortens few-shots, then candidate tails,
    then the middle of the report body. The answer and the report head are never cut; None when
    even that does not fit."""
    stages: list[str] = []

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokens(p: prompts.PromptParts) -> tuple[str, list[int]]:
        user = prompts.build_user(p)
        return user, tokenizer(prompts.render_prompt(tokenizer, system, user), add_special_tokens=False)["input_ids"]

    user, ids = first if first is not None else tokens(parts)  # `first`: this prompt already tokenized
    budget = max_length - len(answer_ids)
    # each round drops as many pieces as their own token counts say are needed, then re-measures
    # the whole prompt (pieces do not add up exactly); every round removes at least one piece
    while len(ids) > budget and (parts.shots or parts.with_shorter_candidates() is not None):
        over = len(ids) - budget
        while over > 0 and parts.shots:
            over -= count(f"### Example {len(parts.shots)}\n{parts.shots[-1].report}\nCodes: {parts.shots[-1].answer}\n\n")
            parts = parts.without_last_shot()
            stages.append("shots")
        while over > 0 and not parts.shots:
            shorter = parts.with_shorter_candidates()
            if shorter is None:
                break
            dropped = parts.icd[-1] if shorter.icd != parts.icd else parts.cpt[-1]
            over -= count(prompts.icd_candidate_line(dropped) + "\n" if shorter.icd != parts.icd else f"{dropped}, ")
            parts = shorter
            stages.append("candidates")
        user, ids = tokens(parts)
    body = parts.body
    for _ in range(8):
        if len(ids) <= budget:
            break
        keep = count(body) - (len(ids) - budget) - 8  # 8: room for the cut mark's own tokens
        if keep < min_body_tokens:
            return None
        body = _body_cut(tokenizer, parts.body, keep, min_body_tokens)
        user, ids = tokens(prompts.PromptParts(parts.shots, parts.cpt, parts.icd, parts.rules, parts.head, body))
        stages.append("body")
    if len(ids) > budget:
        return None
    return Encoded(user, np.concatenate([np.asarray(ids, np.int32), np.asarray(answer_ids, np.int32)]), len(ids),
                   tuple(dict.fromkeys(stages)))


class PieceEncoder:
    """Token ids of rendered prompts, built from separately tokenized pieces of the user message;
    recurring pieces (rules, headings, few-shot examples) are tokenized once.

    Exact, not approximate: pieces are only cut where a newline is followed by a non-space
    character (other joins are re-glued), and under the byte-level pre-tokenizers in use (Llama-3
    and GPT-2 regexes, optionally with ``Digits``) no pre-token spans such a join, so BPE merges
    cannot cross a cut. A piece is tokenized with the character that follows it in the prompt
    appended and that character's tokens dropped (checked), so the regexes' look-ahead sees what it
    sees in the whole prompt. The template's special tokens split the rest. ``verify`` compares
    with whole-prompt tokenization; the builder runs it on its first records and falls back to
    whole prompts if any differ."""

    SENTINEL = "\x00user\x00"

    def __init__(self, tokenizer, system: str):
        self.tokenizer = tokenizer
        self.system = system
        rendered = prompts.render_prompt(tokenizer, system, self.SENTINEL)
        self.prefix, self.suffix = rendered.split(self.SENTINEL)
        self.trims = prompts.render_prompt(tokenizer, system, " x ").startswith(self.prefix + "x")
        self.cache: dict[tuple[str, str], np.ndarray] = {}  # (recurring piece, next character) -> ids
        self.char_ids: dict[str, np.ndarray] = {}
        self.suffix_ids = self._encode([self.suffix])[0]

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        out = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [np.asarray(ids, dtype=np.int32) for ids in out]

    def _encode_followed(self, keys: list[tuple[str, str]]) -> list[np.ndarray]:
        """Ids of each text as it tokenizes when the given character follows it."""
        chars = sorted({c for _, c in keys} - self.char_ids.keys())
        self.char_ids.update(zip(chars, self._encode(chars)))
        out = []
        for (text, nxt), ids in zip(keys, self._encode([t + c for t, c in keys])):
            tail = self.char_ids[nxt]
            if len(ids) < len(tail) or not np.array_equal(ids[len(ids) - len(tail):], tail):
                raise ValueError(f"tokenizer merges {nxt!r} into the preceding text {text[-40:]!r}: pieces are not exact")
            out.append(ids[:len(ids) - len(tail)])
        return out

    def _joined(self, pieces: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
        """The pieces of one message (template trim applied), re-glued wherever a cut is not
        a newline followed by a non-space character."""
        out: list[tuple[str, bool]] = []
        for text, recurs in [(self.prefix, True), *pieces]:
            if out and not (out[-1][0].endswith("\n") and text[:1].strip()):
                out[-1] = (out[-1][0] + text, out[-1][1] and recurs)
            else:
                out.append((text, recurs))
        return out

    def encode(self, users_pieces: list[list[tuple[str, bool]]]) -> list[np.ndarray]:
        """Prompt ids (``render_prompt`` then tokenize) for each user message given as pieces."""
        if self.trims:  # the template trims the message; the outer pieces carry its ends
            users_pieces = [[(t.lstrip() if j == 0 else t, r) for j, (t, r) in enumerate(p)] for p in users_pieces]
            users_pieces = [p[:-1] + [(p[-1][0].rstrip(), p[-1][1])] for p in users_pieces]
        joined = [self._joined(p) for p in users_pieces]
        plan, followed, last = [], {}, {}
        for pieces in joined:
            keys = []
            for j, (text, recurs) in enumerate(pieces):
                if j == len(pieces) - 1:
                    key = (text, "")
                    last[key] = None
                else:
                    key = (text, pieces[j + 1][0][0])
                    if not (recurs and key in self.cache):
                        followed[key] = None
                keys.append((key, recurs))
            plan.append(keys)
        new = dict(zip(followed, self._encode_followed(list(followed))))
        new.update(zip(last, self._encode([t for t, _ in last])))
        out = []
        for keys in plan:
            arrays = []
            for key, recurs in keys:
                ids = self.cache.get(key) if recurs else None
                if ids is None:
                    ids = new[key]
                    if recurs and key[1]:
                        self.cache[key] = ids
                arrays.append(ids)
            arrays.append(self.suffix_ids)
            out.append(np.concatenate(arrays))
        return out

    def verify(self, users_pieces: list[list[tuple[str, bool]]]) -> bool:
        """Whether ``encode`` equals tokenizing the whole rendered prompt for these messages."""
        users = ["".join(t for t, _ in p) for p in users_pieces]
        whole = self._encode([prompts.render_prompt(self.tokenizer, self.system, u) for u in users])
        return all(np.array_equal(a, b) for a, b in zip(self.encode(users_pieces), whole))


# ----------------------------------------------------------------------------- assembly
def _candidates(recipe: Recipe, train: Sequence[Case], neigh: Neighbours) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Ordered CPT and ICD-10-CM candidate lists per query, from unblocked neighbours' gold codes."""
    cfg = recipe.retrieval
    rows, scores = neigh.rows[:, :cfg.candidate_neighbours], neigh.scores[:, :cfg.candidate_neighbours]
    cpt_ranked = CodeIncidence([c.codes.cpt for c in train]).rank(rows, scores)
    icd_ranked = CodeIncidence([c.codes.icd for c in train]).rank(rows, scores)
    cpt = [tuple(code for code, _ in r[:cfg.cpt_candidates]) for r in cpt_ranked]
    icd = []
    for r in icd_ranked:
        ranked = widen(r[:cfg.icd_candidates], cfg.widen_per_code, cfg.widen_discount) if cfg.widen_icd else r
        icd.append(tuple(code for code, _ in ranked[:cfg.icd_candidates]))
    return cpt, icd


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

    dcfg, rcfg, pcfg = recipe.data, recipe.retrieval, recipe.prompt
    out_dir = Path(dcfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = collect_cases(recipe, cases, out_dir)
    if not found.cases:
        raise ValueError("no cases: every source was empty or rejected (see the rejects files)")
    clock("read")

    # duplicates go before splitting so no copy can straddle train and held-out
    texts_all = [retrieval_text(c) for c in found.cases]
    sigs_all = neardup.signatures(texts_all)
    dedup = remove_duplicates(found.cases, dcfg.dedup_jaccard, sigs_all) if dcfg.dedup else None
    keep = dedup.keep if dedup else np.arange(len(found.cases))
    all_cases = [found.cases[i] for i in keep]
    texts = [texts_all[i] for i in keep]
    roles = [assign_role(found.cases[i], found.source_roles[i], dcfg) for i in keep]
    weights = [role_weight(r, dcfg) for r in roles]

    splits = split_by_group(all_cases, dcfg.seed, dcfg.heldout_size, dcfg.val_size)
    check_disjoint(all_cases, splits)
    train_rows = splits["train"]
    train = [all_cases[i] for i in train_rows]
    clock("dedup_roles_splits")

    # retrieval: every record queries the train split only
    vectors = None
    if rcfg.dense:
        from nyxmed.retrieval.dense import load_embedder

        vectors = load_embedder(rcfg.embedding_model).encode(texts, progress=progress)
        clock("embedding")
    fp = Fingerprints.of(all_cases, vectors if vectors is not None else sigs_all[keep])
    reranker = None
    if rcfg.reranker:
        from nyxmed.retrieval.rerank import Reranker

        reranker = Reranker(rcfg.reranker)
    search = NeighbourSearch([texts[i] for i in train_rows], fp.take(train_rows), rcfg,
                             pool_vectors=vectors[train_rows] if vectors is not None else None, reranker=reranker)
    self_rows = np.full(len(all_cases), -1, np.int64)
    self_rows[train_rows] = np.arange(len(train_rows))
    neigh = search.search(texts, fp, self_rows, dense_queries=vectors, progress=progress)
    cpt_cands, icd_cands = _candidates(recipe, train, neigh)
    clock("retrieval_leakage_candidates")

    # prompts and tokens
    rules = prompts.load_rules(pcfg.rules_file)
    system = prompts.SYSTEM_PROMPT
    eot = [tokenizer.convert_tokens_to_ids(prompts.END_OF_TURN)]
    shot_cache: dict[int, prompts.Shot] = {}
    tables, lengths, manifest_rows = {}, {}, []
    truncated = Counter()
    too_long: list[str] = []
    candidate_hits = Counter()
    chunk = 512
    piece_encoder, piece_mode = PieceEncoder(tokenizer, system), None
    bar = tqdm(total=len(all_cases), desc="prompts+tokens", unit="case", disable=not progress)
    for split in SPLITS:
        rows_out, encoded = [], []
        idx = splits[split]
        for lo in range(0, len(idx), chunk):
            batch = idx[lo:lo + chunk]
            parts_list, answers = [], []
            for i in batch:
                c = all_cases[i]
                shots = []
                for r in neigh.shots[i]:
                    if r >= 0:
                        if r not in shot_cache:
                            shot_cache[r] = prompts.shot_for(train[r], pcfg.seed, pcfg.explicit_share)
                        shots.append(shot_cache[r])
                explicit = prompts.is_explicit(c.id, pcfg.seed, pcfg.explicit_share)
                parts_list.append(prompts.PromptParts(tuple(shots), cpt_cands[i], icd_cands[i], rules,
                                                      prompts.report_head(c, explicit), c.report_text))
                answers.append(prompts.answer_text(c))
            pieces = [prompts.user_pieces(p) for p in parts_list]
            users = ["".join(t for t, _ in p) for p in pieces]
            if piece_mode is None:  # prove the piecewise path on these first records, else whole prompts
                try:
                    piece_mode = "pieces" if piece_encoder.verify(pieces[:64]) else "whole"
                except ValueError:
                    piece_mode = "whole"
                if piece_mode == "whole":
                    log.warning("piecewise tokenization differs from whole prompts for this tokenizer; "
                                "tokenizing whole prompts (slower)")
            prompt_ids = None
            if piece_mode == "pieces":
                try:
                    prompt_ids = piece_encoder.encode(pieces)
                except ValueError as err:  # a piece whose end merges with the next '#': this batch whole
                    log.warning("%s; tokenizing this batch as whole prompts", err)
            if prompt_ids is None:
                prompt_ids = tokenizer([prompts.render_prompt(tokenizer, system, u) for u in users],
                                       add_special_tokens=False)["input_ids"]
            answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
            for i, parts, user, p_ids, a_ids, answer in zip(batch, parts_list, users, prompt_ids, answer_ids, answers):
                c = all_cases[i]
                enc = encode_record(tokenizer, system, parts, a_ids + eot, pcfg.max_length, pcfg.min_body_tokens,
                                    first=(user, p_ids))
                if enc is None:
                    too_long.append(c.id)
                    continue
                for stage in enc.stages:
                    truncated[stage] += 1
                truncated["records"] += bool(enc.stages)
                candidate_hits["cpt"] += c.codes.cpt[0] in cpt_cands[i]
                candidate_hits["icd"] += sum(code in icd_cands[i] for code in c.codes.icd) / len(c.codes.icd)
                candidate_hits["n"] += 1
                encoded.append(enc)
                content, record = c.content_hash, c.record_hash()  # each normalizes the whole text: once
                rows_out.append({
                    "id": c.id, "role": roles[i], "weight": weights[i], "content_hash": content,
                    "record_hash": record, "system": system, "user": enc.user, "answer": answer,
                    **c.codes.to_dict(), "modality": modality_of(c), "subsection": cpt_codes.subsection(c.codes.cpt[0]) or "other",
                })
                manifest_rows.append({"id": c.id, "split": split, "role": roles[i], "content_hash": content,
                                      "record_hash": record})
            bar.update(len(batch))
        tables[split] = _split_table(rows_out, encoded)
        lengths[split] = [len(e.input_ids) for e in encoded]
    bar.close()

    clock("prompts_tokenization")
    for split, table in tables.items():
        if table.num_rows == 0:
            raise ValueError(f"split {split!r} is empty after tokenization: {len(too_long)} record(s) do not fit "
                             f"prompt.max_length={pcfg.max_length} (e.g. {too_long[:3]})")
    dataset = _save_dataset(tables, out_dir)
    clock("save_dataset")
    write_atomic(out_dir / "records.jsonl", "".join(json.dumps(r) + "\n" for r in manifest_rows))
    if dcfg.write_cases:
        from nyxmed.sources import write_cases

        by_id = {c.id: c for c in all_cases}
        for split in SPLITS:
            write_cases([by_id[i] for i in dataset[split]["id"]], out_dir / "cases" / f"{split}.jsonl")

    by_role_split = {r: {s: 0 for s in SPLITS} for r in ROLES}
    weight_sum = {s: 0.0 for s in SPLITS}
    for split in SPLITS:
        for role, w in zip(dataset[split]["role"], dataset[split]["weight"]):
            by_role_split[role][split] += 1
            weight_sum[split] += w
    clock("write_cases_manifest")
    n_hits = max(candidate_hits["n"], 1)
    manifest = {
        "name": recipe.name,
        "created": utc_now(),
        "build_seconds": round(time.time() - started, 2),
        "sources": found.sources,
        "config": {"data": to_dict(dcfg), "retrieval": to_dict(rcfg), "prompt": to_dict(pcfg)},
        "tokenizer": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
        "tokenization": piece_mode or "whole",  # "pieces": recurring prompt pieces tokenized once
        "rules_sha256": hashlib.sha256(rules.encode()).hexdigest(),
        "counts": {
            "input": len(found.cases) + found.counts["duplicate_ids_removed"],
            "duplicate_ids_removed": found.counts["duplicate_ids_removed"],
            "retained_filtered_by_previous_manifest": found.counts["retained_filtered_by_previous_manifest"],
            "duplicates_removed": {"exact": dedup.exact if dedup else 0, "near": dedup.near if dedup else 0},
            "after_dedup": len(all_cases),
            "too_long_dropped": len(too_long),
            "by_split": {s: len(dataset[s]) for s in SPLITS},
            "by_role": {r: sum(by_role_split[r].values()) for r in ROLES},
            "by_role_split": by_role_split,
        },
        "weights": {"specificity": float(dcfg.specificity_weight), "other": 1.0, "sum_by_split": weight_sum},
        "blocked_retrievals": neigh.blocked,
        "leakage_measure": search.guard.measure, "leakage_threshold": search.guard.threshold,
        "truncation": {"max_length": pcfg.max_length, "shortened_records": truncated["records"],
                       **{f"by_{s}": truncated[s] for s in TRUNCATION_STAGES}, "too_long_ids": too_long},
        "token_lengths": {s: _percentiles(lengths[s]) for s in SPLITS},
        "candidate_recall": {"cpt_primary": candidate_hits["cpt"] / n_hits, "icd": candidate_hits["icd"] / n_hits},
        "seconds": seconds,
        "record_index": "records.jsonl",
        "duplicates": dedup.removed if dedup else {},
    }
    write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return BuildResult(out_dir, dataset, manifest)


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
        row = counts["by_role_split"][role]
        w = manifest["weights"]["specificity"] if role == "specificity" else manifest["weights"]["other"]
        table.add_row(role, *(str(row[s]) for s in SPLITS), str(sum(row.values())), f"{w:g}")
    table.add_row("all", *(str(counts["by_split"][s]) for s in SPLITS), str(sum(counts["by_split"].values())), "",
                  style="bold")
    dup = counts["duplicates_removed"]
    table.caption = (f"duplicates removed: {dup['exact']} exact, {dup['near']} near; "
                     f"blocked retrievals: " + ", ".join(f"{k} {manifest['blocked_retrievals'][k]}" for k in LAYERS)
                     + f"; shortened: {manifest['truncation']['shortened_records']}")
    return table
