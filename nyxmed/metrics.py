"""Every evaluation metric, its bootstrap CI, and paired comparisons (definitions: docs/metrics.md).

Per record, :func:`score_record` compares a gold and a predicted :class:`CodeLine`. A
:class:`ScoreTable` holds those scores for a set of records as count arrays, so that every
aggregate is a function of per-record weights: weights of one give the point estimate, bootstrap
multiplicities give the resampled estimates (one vectorized code path for both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import optimize, sparse, stats

from nyxmed.codeline import CodeLine
from nyxmed.codes import cpt as cpt_codes
from nyxmed.codes import icd10cm
from nyxmed.codes.icd10cm import Relation

# Per-record metric -> name of its mean in metrics.json.
MEAN_METRICS: dict[str, str] = {
    "cpt_exact": "cpt_exact",
    "cpt_primary": "cpt_primary",
    "modifier_exact": "modifier_exact",
    "icd_exact": "icd_exact",
    "icd_any_overlap": "icd_any_overlap",
    "icd_root_overlap": "icd_root_overlap",
    "icd_recall": "icd_recall_mean",
    "icd_precision": "icd_precision_mean",
    "all_three_exact": "all_three_exact",
}
# Per-record 0/1 metrics: McNemar's exact test applies to these.
EXACT_MATCH_METRICS = ("cpt_exact", "cpt_primary", "modifier_exact", "icd_exact", "icd_any_overlap",
                       "icd_root_overlap", "all_three_exact")
RATE_METRICS = ("invalid_code_rate", "parse_failure_rate")
MICRO_METRICS = ("icd_micro_precision", "icd_micro_recall", "icd_micro_f1", "cpt_micro_f1")
MACRO_LEVELS = ("chapter", "category", "code")
MACRO_METRICS = tuple(f"icd_macro_f1_{level}" for level in MACRO_LEVELS)
# Every aggregate that gets a bootstrap CI, in report order.
AGGREGATE_METRICS = (*MEAN_METRICS.values(), *MICRO_METRICS, *MACRO_METRICS, *RATE_METRICS)
ERROR_KINDS = ("specificity", "same_chapter", "unrelated", "missing")
INVALID_CHAPTER = "invalid"

_SPECIFICITY = (Relation.ANCESTOR, Relation.DESCENDANT, Relation.SIBLING)


def icd_label(code: str, level: str) -> str:
    """The label of an ICD code at ``level``: chapter (``invalid`` when the category does not exist), category, code."""
    if level == "chapter":
        return icd10cm.chapter(code) or INVALID_CHAPTER
    if level == "category":
        return icd10cm.category(code)
    if level == "code":
        return icd10cm.normalize(code)
    raise ValueError(f"unknown ICD label level {level!r} (known: {', '.join(MACRO_LEVELS)})")


def icd_error_kind(missed: str, predicted: Sequence[str]) -> str:
    """Why gold code ``missed`` was not predicted: specificity, same_chapter, unrelated or missing."""
    if not predicted:
        return "missing"
    relations = {icd10cm.relation(missed, p) for p in predicted}
    if relations & set(_SPECIFICITY):
        return "specificity"
    if Relation.SAME_CHAPTER in relations:
        return "same_chapter"
    return "unrelated"


def score_record(gold: CodeLine, pred: CodeLine, cpt_table: cpt_codes.CptTable | None = None) -> dict:
    """Per-record metrics plus the counts the aggregates need; both lines must be normalized (CodeLine.of)."""
    gc, gm, gi = set(gold.cpt), set(gold.modifiers), set(gold.icd)
    pc, pm, pi = set(pred.cpt), set(pred.modifiers), set(pred.icd)
    if not gc or not gi:
        raise ValueError(f"gold line {gold.render()!r} needs at least one CPT and one ICD code")
    icd_tp = len(pi & gi)
    cpt_exact, mod_exact, icd_exact = pc == gc, pm == gm, pi == gi
    missed = [g for g in gold.icd if g not in pi]
    return {
        "cpt_exact": float(cpt_exact),
        "cpt_primary": float(bool(pred.cpt) and pred.cpt[0] == gold.cpt[0]),
        "modifier_exact": float(mod_exact),
        "icd_exact": float(icd_exact),
        "icd_any_overlap": float(icd_tp > 0),
        "icd_root_overlap": float(bool({icd10cm.category(c) for c in pi} & {icd10cm.category(c) for c in gi})),
        "icd_recall": icd_tp / len(gi),
        "icd_precision": icd_tp / len(pi) if pi else 0.0,
        "all_three_exact": float(cpt_exact and mod_exact and icd_exact),
        "icd_tp": icd_tp, "icd_fp": len(pi - gi), "icd_fn": len(gi - pi),
        "cpt_tp": len(pc & gc), "cpt_fp": len(pc - gc), "cpt_fn": len(gc - pc),
        "predicted_codes": len(pc) + len(pm) + len(pi),
        "invalid_codes": len(pred.invalid_codes(cpt_table)),
        "parse_failure": float(pred.is_empty),
        "icd_errors": {g: icd_error_kind(g, pred.icd) for g in missed},
    }


# ----------------------------------------------------------------------------- hierarchy scores
@dataclass(frozen=True)
class HierarchyCredit:
    """Credit of a predicted ICD code against a gold one: exact 1, same 3-character category, same chapter."""

    category: float = 0.5
    chapter: float = 0.2
    billable_only: bool = False  # a predicted code that is not billable (a category with children) earns nothing

    def __post_init__(self):
        if not 0 < self.chapter < self.category < 1:
            raise ValueError(f"ICD hierarchy credits need 0 < chapter < category < 1, got chapter={self.chapter}, "
                             f"category={self.category}")


def icd_hierarchy_credit(gold: str, pred: str, credit: HierarchyCredit = HierarchyCredit()) -> float:
    """1 for the same code, ``credit.category`` for the same category, ``credit.chapter`` for the same
    chapter, else 0; a predicted code that is not valid ICD-10-CM (with ``credit.billable_only``: not
    billable) earns nothing."""
    if not icd10cm.is_valid(pred) or (credit.billable_only and not icd10cm.is_billable(pred)):
        return 0.0
    if icd10cm.normalize(gold) == icd10cm.normalize(pred):
        return 1.0
    if icd10cm.category(gold) == icd10cm.category(pred):
        return credit.category
    ch = icd10cm.chapter(gold)
    return credit.chapter if ch is not None and ch == icd10cm.chapter(pred) else 0.0


@dataclass(frozen=True)
class HierarchicalMatch:
    """A one-to-one matching of predicted to gold ICD codes by hierarchy credit."""

    score: float  # soft F1: 2 * sum(credit of matched pairs) / (|gold| + |pred|), in [0, 1]
    pairs: tuple[tuple[str, str, float], ...]  # (gold, pred, credit) of each pair with credit > 0
    unmatched_pred: tuple[str, ...]  # predicted codes in no pair with credit > 0


def icd_hierarchical_match(gold: Sequence[str], pred: Sequence[str],
                           credit: HierarchyCredit = HierarchyCredit()) -> HierarchicalMatch:
    """Match ``pred`` to ``gold`` one-to-one maximizing total credit (Hungarian algorithm).

    score = 2 * sum(credit) / (|gold| + |pred|): 1 only for the exact set; every missing and
    every extra code lowers it, because each code can be matched at most once.
    """
    gold, pred = list(dict.fromkeys(gold)), list(dict.fromkeys(pred))
    if not gold and not pred:
        return HierarchicalMatch(1.0, (), ())
    if not gold or not pred:
        return HierarchicalMatch(0.0, (), tuple(pred))
    m = np.array([[icd_hierarchy_credit(g, p, credit) for p in pred] for g in gold])
    rows, cols = optimize.linear_sum_assignment(m, maximize=True)
    pairs = tuple((gold[r], pred[c], float(m[r, c])) for r, c in zip(rows, cols) if m[r, c] > 0)
    matched = {p for _, p, _ in pairs}
    total = sum(c for _, _, c in pairs)
    return HierarchicalMatch(2 * total / (len(gold) + len(pred)), pairs, tuple(p for p in pred if p not in matched))


# ----------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class LabelCounts:
    """Per-record, per-label tp/fp/fn indicators (sparse, records x labels) at one ICD level."""

    labels: tuple[str, ...]
    tp: sparse.csr_matrix
    fp: sparse.csr_matrix
    fn: sparse.csr_matrix

    @classmethod
    def of(cls, gold_sets: Sequence[set[str]], pred_sets: Sequence[set[str]]) -> "LabelCounts":
        labels = tuple(sorted(set().union(*gold_sets, *pred_sets)))
        index = {lab: j for j, lab in enumerate(labels)}
        shape = (len(gold_sets), len(labels))

        def matrix(sets: Iterable[set[str]]) -> sparse.csr_matrix:
            rows, cols = [], []
            for i, s in enumerate(sets):
                rows += [i] * len(s)
                cols += [index[lab] for lab in s]
            return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)

        return cls(labels, matrix(g & p for g, p in zip(gold_sets, pred_sets)),
                   matrix(p - g for g, p in zip(gold_sets, pred_sets)),
                   matrix(g - p for g, p in zip(gold_sets, pred_sets)))

    def weighted(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, fn) summed over records with ``weights`` (resamples x records) -> resamples x labels."""
        return tuple(np.asarray((m.T @ weights.T).T) for m in (self.tp, self.fp, self.fn))


def macro_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Mean per-label F1 = 2tp/(2tp+fp+fn) over labels present in the gold (tp+fn > 0), per row."""
    support = (tp + fn) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support, 2 * tp / (2 * tp + fp + fn), 0.0)
    count = support.sum(axis=-1)
    return np.where(count > 0, f1.sum(axis=-1) / np.maximum(count, 1), np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    return _ratio(2 * tp, 2 * tp + fp + fn)


@dataclass(frozen=True)
class ScoreTable:
    """Scores of a set of records, in record order; aggregates are functions of record weights."""

    ids: tuple[str, ...]
    records: tuple[dict, ...]
    values: dict[str, np.ndarray]  # per-record metrics and counts, each (n,)
    labels: dict[str, LabelCounts]  # ICD levels -> label counts
    golds: tuple[CodeLine, ...] = field(repr=False, default=())

    @property
    def n(self) -> int:
        return len(self.ids)

    def aggregate(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every aggregate for each row of ``weights`` (resamples x records)."""
        w = np.atleast_2d(np.asarray(weights, dtype=float))
        total = w.sum(axis=1)
        s = {k: w @ v for k, v in self.values.items()}
        out = {name: _ratio(s[key], total) for key, name in MEAN_METRICS.items()}
        out["icd_micro_precision"] = _ratio(s["icd_tp"], s["icd_tp"] + s["icd_fp"])
        out["icd_micro_recall"] = _ratio(s["icd_tp"], s["icd_tp"] + s["icd_fn"])
        out["icd_micro_f1"] = _f1(s["icd_tp"], s["icd_fp"], s["icd_fn"])
        out["cpt_micro_f1"] = _f1(s["cpt_tp"], s["cpt_fp"], s["cpt_fn"])
        for level in MACRO_LEVELS:
            out[f"icd_macro_f1_{level}"] = macro_f1(*self.labels[level].weighted(w))
        out["invalid_code_rate"] = _ratio(s["invalid_codes"], s["predicted_codes"])
        out["parse_failure_rate"] = _ratio(s["parse_failure"], total)
        return out

    def point(self, mask: np.ndarray | None = None) -> dict[str, float]:
        """Aggregates over all records (or those where ``mask`` is true)."""
        w = np.ones(self.n) if mask is None else np.asarray(mask, dtype=float)
        return {k: float(v[0]) for k, v in self.aggregate(w).items()}


def score_records(ids: Sequence[str], golds: Sequence[CodeLine], preds: Sequence[CodeLine],
                  cpt_table: cpt_codes.CptTable | None = None) -> ScoreTable:
    """Score aligned gold and predicted lines; raises ValueError naming the record on bad gold."""
    if not (len(ids) == len(golds) == len(preds)):
        raise ValueError(f"ids, golds and preds differ in length: {len(ids)}, {len(golds)}, {len(preds)}")
    records = []
    for rid, g, p in zip(ids, golds, preds):
        try:
            records.append(score_record(g, p, cpt_table))
        except ValueError as exc:
            raise ValueError(f"record {rid!r}: field 'gold': {exc}") from exc
    numeric = [k for k in records[0] if k != "icd_errors"] if records else []
    values = {k: np.array([r[k] for r in records], dtype=float) for k in numeric}
    labels = {level: LabelCounts.of([{icd_label(c, level) for c in g.icd} for g in golds],
                                    [{icd_label(c, level) for c in p.icd} for p in preds])
              for level in MACRO_LEVELS}
    return ScoreTable(tuple(ids), tuple(records), values, labels, tuple(golds))


# ----------------------------------------------------------------------------- bootstrap
def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """Multiplicity of each record in each resample (resamples x n), drawn with a seeded generator."""
    if resamples < 1 or n < 1:
        raise ValueError(f"bootstrap needs records and resamples, got n={n}, resamples={resamples}")
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = (idx + np.arange(resamples)[:, None] * n).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(float)


def _interval(samples: np.ndarray) -> list[float | None]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return [None, None]
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return [float(lo), float(hi)]


def confidence_intervals(table: ScoreTable, resamples: int = 1000, seed: int = 17) -> dict[str, list]:
    """95% percentile-bootstrap interval of every aggregate, resampling records."""
    boot = table.aggregate(bootstrap_weights(table.n, resamples, seed))
    return {name: _interval(boot[name]) for name in AGGREGATE_METRICS}


def error_taxonomy(table: ScoreTable) -> dict:
    """Counts and shares of the error kinds of missed gold ICD codes."""
    counts = dict.fromkeys(ERROR_KINDS, 0)
    for rec in table.records:
        for kind in rec["icd_errors"].values():
            counts[kind] += 1
    missed = sum(counts.values())
    return {"missed": missed, "counts": counts,
            "shares": {k: (v / missed if missed else 0.0) for k, v in counts.items()}}


def group_breakdown(table: ScoreTable, groups: Sequence[str | None]) -> dict[str, dict]:
    """Mean metrics and ``n`` for each group value (records with no value are grouped as ``unknown``)."""
    keys = np.array([g if g else "unknown" for g in groups], dtype=object)
    out = {}
    for value in sorted(set(keys)):
        mask = keys == value
        point = table.point(mask)
        out[value] = {"n": int(mask.sum()), **{k: point[k] for k in (*MEAN_METRICS.values(), "icd_micro_f1")}}
    return out


def chapter_breakdown(table: ScoreTable) -> dict[str, dict]:
    """Code-level ICD precision, recall and F1 restricted to each chapter's codes, with gold support."""
    codes = table.labels["code"]
    tp, fp, fn = (np.asarray(m.sum(axis=0)).ravel() for m in (codes.tp, codes.fp, codes.fn))
    chapters = np.array([icd_label(c, "chapter") for c in codes.labels], dtype=object)
    out = {}
    for ch in sorted(set(chapters), key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c)):
        m = chapters == ch
        t, p, n = tp[m].sum(), fp[m].sum(), fn[m].sum()
        out[ch] = {"support": int(t + n), "predicted": int(t + p), "precision": float(_ratio(t, t + p)),
                   "recall": float(_ratio(t, t + n)), "f1": float(_f1(t, p, n))}
    return out


def summarize(table: ScoreTable, groups: Mapping[str, Sequence[str | None]] | None = None,
              resamples: int = 1000, seed: int = 17) -> dict:
    """The content of metrics.json: every aggregate by name, CIs, error taxonomy, breakdowns."""
    if table.n == 0:
        raise ValueError("no records to summarize")
    breakdowns = {name: group_breakdown(table, values) for name, values in (groups or {}).items()}
    breakdowns["icd_chapter"] = chapter_breakdown(table)
    return {"n": table.n, **table.point(),
            "ci95": confidence_intervals(table, resamples, seed),
            "bootstrap": {"resamples": resamples, "seed": seed, "method": "percentile, records resampled"},
            "icd_errors": error_taxonomy(table), "breakdowns": breakdowns}


# ----------------------------------------------------------------------------- comparison
def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> dict:
    """Exact McNemar test of paired 0/1 outcomes: two-sided binomial p on the discordant pairs."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)
    return {"a_only": only_a, "b_only": only_b, "p_value": p}


def compare_tables(a: ScoreTable, b: ScoreTable, resamples: int = 1000, seed: int = 17) -> dict[str, dict]:
    """Every aggregate of both runs, B - A, a paired bootstrap 95% CI of it, and McNemar where exact-match.

    Raises ValueError when the runs scored different records or different gold.
    """
    if list(a.ids) != list(b.ids):
        missing_b = sorted(set(a.ids) - set(b.ids))
        missing_a = sorted(set(b.ids) - set(a.ids))
        if missing_a or missing_b:
            raise ValueError(f"the runs scored different records: only in A {missing_b[:10]} "
                             f"({len(missing_b)}), only in B {missing_a[:10]} ({len(missing_a)})")
        raise ValueError("the runs list the same records in different orders; align them first")
    changed = [rid for rid, ga, gb in zip(a.ids, a.golds, b.golds) if ga != gb]
    if changed:
        raise ValueError(f"the runs scored different gold for {len(changed)} record(s): {changed[:10]}")
    pa, pb = a.point(), b.point()
    w = bootstrap_weights(a.n, resamples, seed)
    ba, bb = a.aggregate(w), b.aggregate(w)
    out = {}
    for name in AGGREGATE_METRICS:
        row = {"a": pa[name], "b": pb[name], "diff": pb[name] - pa[name], "diff_ci95": _interval(bb[name] - ba[name])}
        if name in EXACT_MATCH_METRICS:
            row["mcnemar"] = mcnemar_exact(a.values[name], b.values[name])
        out[name] = row
    return out
