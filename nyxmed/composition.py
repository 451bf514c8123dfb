"""Dataset composition: roles, loss weights, duplicate removal and group-disjoint splits."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nyxmed.cases import Case
from nyxmed.codes import icd10cm
from nyxmed.config import DataConfig
from nyxmed.retrieval import neardup

ROLES = ("reviewed", "specificity", "primary", "hard", "retained")
SPLITS = ("train", "validation", "heldout")


# ----------------------------------------------------------------------------- roles
def _less_specific(original: str, gold: str) -> bool:
    """``original`` is an ancestor of ``gold``, or the 'unspecified' sibling of it."""
    rel = icd10cm.relation(gold, original)
    if rel is icd10cm.Relation.ANCESTOR:
        return True
    return rel is icd10cm.Relation.SIBLING and icd10cm.is_valid(original) and \
        "unspecified" in icd10cm.description(original).lower()


def is_specificity_pair(case: Case) -> bool:
    """The original (pre-review) line differs from gold only by ICD specificity."""
    orig, gold = case.original_codes, case.codes
    if orig is None or orig == gold or orig.cpt != gold.cpt or orig.modifiers != gold.modifiers:
        return False
    if len(orig.icd) != len(gold.icd):
        return False
    unmatched = [g for g in gold.icd if g not in orig.icd]
    extra = [o for o in orig.icd if o not in gold.icd]
    if not extra or len(extra) != len(unmatched):
        return False
    # every changed original code must be a less specific form of a distinct changed gold code
    for o in extra:
        match = next((g for g in unmatched if _less_specific(o, g)), None)
        if match is None:
            return False
        unmatched.remove(match)
    return True


def is_primary_correction(case: Case) -> bool:
    """The reviewer changed the primary (first) ICD code of the original line."""
    orig = case.original_codes
    return orig is not None and bool(orig.icd) and bool(case.codes.icd) and orig.icd[0] != case.codes.icd[0]


def is_hard(case: Case) -> bool:
    """Two or more procedures, three or more diagnoses, or two or more modifiers (``CodeLine.is_hard``)."""
    return case.codes.is_hard


def assign_role(case: Case, source_role: str, cfg: DataConfig) -> str:
    """Precedence: specificity, primary, hard, then the source role (``reviewed`` or ``retained``)."""
    if case.id in cfg.specificity_ids or is_specificity_pair(case):
        return "specificity"
    if case.id in cfg.primary_ids or is_primary_correction(case):
        return "primary"
    if case.id in cfg.hard_ids or is_hard(case):
        return "hard"
    return source_role


def role_weight(role: str, cfg: DataConfig) -> float:
    """Per-example loss weight: ``specificity_weight`` (3) for specificity pairs, ``primary_weight`` for
    primary-ICD corrections, else 1."""
    return float({"specificity": cfg.specificity_weight, "primary": cfg.primary_weight}.get(role, 1))


# ----------------------------------------------------------------------------- previous version
def load_previous_training(path: str | Path) -> tuple[set[str], set[str]]:
    """Ids and content hashes trained on by a previous version.

    Accepts a build's ``manifest.json`` (its ``record_index`` file, ``train`` rows) or a JSONL
    file of ``{"id", "content_hash"}`` rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.previous_manifest: no file at {str(path)!r}")
    split_filter = None
    if path.suffix == ".json":
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if "record_index" not in manifest:
            raise ValueError(f"data.previous_manifest: {str(path)!r} has no 'record_index' entry")
        path, split_filter = path.parent / manifest["record_index"], "train"
    ids, hashes = set(), set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if split_filter and row.get("split") != split_filter:
                continue
            if "id" not in row and "content_hash" not in row:
                raise ValueError(f"{path}:{lineno}: row has neither 'id' nor 'content_hash'")
            if row.get("id") is not None:
                ids.add(str(row["id"]))
            if row.get("content_hash"):
                hashes.add(row["content_hash"])
    return ids, hashes


# ----------------------------------------------------------------------------- duplicates
@dataclass(frozen=True)
class Dedup:
    keep: np.ndarray  # row numbers kept, input order
    exact: int  # removed: same content hash as an earlier row
    near: int  # removed: near duplicate (MinHash Jaccard >= threshold) of an earlier row
    removed: dict[str, str]  # removed id -> id of the row kept in its place


def remove_duplicates(cases: Sequence[Case], jaccard: float, signatures: np.ndarray | None = None) -> Dedup:
    """Keep the first of every exact (content hash) and near-duplicate group, in input order."""
    first: dict[str, int] = {}
    exact_of = np.arange(len(cases))
    for i, c in enumerate(cases):
        exact_of[i] = first.setdefault(c.content_hash, i)
    unique = np.nonzero(exact_of == np.arange(len(cases)))[0]
    sigs = signatures if signatures is not None else neardup.signatures(
        [" ".join((c.exam_description, c.reason_for_exam, c.report_text)) for c in cases])
    labels = neardup.near_duplicate_components(sigs[unique], jaccard)
    near_of = unique[labels]
    keep = np.unique(near_of)
    removed = {cases[i].id: cases[exact_of[i]].id for i in np.nonzero(exact_of != np.arange(len(cases)))[0]}
    removed.update({cases[u].id: cases[r].id for u, r in zip(unique, near_of) if u != r})
    return Dedup(keep, exact=int(len(cases) - len(unique)), near=int(len(unique) - len(keep)), removed=removed)


# ----------------------------------------------------------------------------- splits
def group_key(case: Case) -> str:
    """Records of one patient stay together; a record without a patient key is its own group."""
    return f"patient:{case.patient_key}" if case.patient_key else f"id:{case.id}"


def _order(keys: Sequence[str], seed: int, salt: str) -> list[str]:
    return sorted(keys, key=lambda k: hashlib.sha256(f"{seed}\x1f{salt}\x1f{k}".encode()).digest())


def _fill(groups: list[str], sizes: Counter, target: int) -> set[str]:
    """Take groups in order while they fit; stops when ``target`` records are reached."""
    taken, total = set(), 0
    for g in groups:
        if total >= target:
            break
        if total + sizes[g] <= target:
            taken.add(g)
            total += sizes[g]
    return taken


def split_by_group(cases: Sequence[Case], seed: int, heldout_size: float, val_size: int) -> dict[str, np.ndarray]:
    """Row numbers per split: a held-out pool (count or fraction) by patient group, a validation
    slice drawn from that pool, train = the rest. Deterministic from seed and ids."""
    n = len(cases)
    target = int(heldout_size) if heldout_size >= 1 else int(round(heldout_size * n))
    if target + 1 > n:
        raise ValueError(f"data.heldout_size={heldout_size}: held-out pool of {target} leaves no training data "
                         f"out of {n} cases")
    if val_size > target:
        raise ValueError(f"data.val_size={val_size} is larger than the held-out pool ({target})")
    keys = [group_key(c) for c in cases]
    sizes = Counter(keys)
    pool = _fill(_order(sizes, seed, "heldout"), sizes, target)
    validation = _fill(_order(sorted(pool), seed, "validation"), sizes, val_size)
    split_of = np.array(["validation" if k in validation else "heldout" if k in pool else "train" for k in keys])
    return {s: np.nonzero(split_of == s)[0] for s in SPLITS}


def check_disjoint(cases: Sequence[Case], splits: dict[str, np.ndarray]) -> None:
    """Raise if any content hash or patient group of train also appears in validation/held-out."""
    train_hashes = {cases[i].content_hash for i in splits["train"]}
    train_groups = {group_key(cases[i]) for i in splits["train"]}
    for name in ("validation", "heldout"):
        for i in splits[name]:
            if cases[i].content_hash in train_hashes:
                raise AssertionError(f"record {cases[i].id!r} ({name}): content hash also in train")
            if group_key(cases[i]) in train_groups:
                raise AssertionError(f"record {cases[i].id!r} ({name}): group {group_key(cases[i])!r} also in train")
