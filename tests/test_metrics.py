"""Metrics: hand-computed cases for every definition, and scikit-learn cross-checks on random data."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, precision_score, recall_score
from sklearn.preprocessing import MultiLabelBinarizer

from nyxmed.codeline import CodeLine, parse
from nyxmed.codes import icd10cm
from nyxmed import metrics as M


def line(cpt, mods, icd) -> CodeLine:
    return CodeLine.of(cpt, mods, icd)


GOLD = line(["74177"], ["26"], ["R10.84", "K57.30"])


def test_exact_metrics_by_hand():
    r = M.score_record(GOLD, line(["74177"], ["26"], ["k5730", "r10.84"]))  # order, case, dot do not matter
    assert (r["cpt_exact"], r["modifier_exact"], r["icd_exact"], r["all_three_exact"]) == (1, 1, 1, 1)
    r = M.score_record(GOLD, line(["74177", "74176"], ["26"], ["R10.84", "K57.30"]))
    assert (r["cpt_exact"], r["cpt_primary"], r["all_three_exact"]) == (0, 1, 0)
    r = M.score_record(GOLD, line(["74176", "74177"], [], ["R10.84", "K57.30"]))
    assert (r["cpt_exact"], r["cpt_primary"], r["modifier_exact"], r["icd_exact"]) == (0, 0, 0, 1)


def test_modifier_both_empty_is_a_match():
    gold = line(["93970"], [], ["I83.93"])
    assert M.score_record(gold, line(["93970"], [], ["I83.93"]))["modifier_exact"] == 1
    assert M.score_record(gold, line(["93970"], ["26"], ["I83.93"]))["modifier_exact"] == 0


def test_icd_overlap_recall_precision_by_hand():
    # gold {R10.84, K57.30}; predicted {R10.84, K57.31 (same category K57), M25.561}
    r = M.score_record(GOLD, line(["74177"], ["26"], ["R10.84", "K57.31", "M25.561"]))
    assert r["icd_any_overlap"] == 1 and r["icd_root_overlap"] == 1 and r["icd_exact"] == 0
    assert r["icd_recall"] == pytest.approx(1 / 2)
    assert r["icd_precision"] == pytest.approx(1 / 3)
    assert (r["icd_tp"], r["icd_fp"], r["icd_fn"]) == (1, 2, 1)
    # no shared code but a shared category: root overlap only
    r = M.score_record(GOLD, line(["74177"], [], ["K57.31"]))
    assert (r["icd_any_overlap"], r["icd_root_overlap"], r["icd_recall"], r["icd_precision"]) == (0, 1, 0, 0)
    # empty prediction: precision is 0 by definition
    r = M.score_record(GOLD, line(["74177"], ["26"], []))
    assert (r["icd_precision"], r["icd_recall"], r["icd_root_overlap"]) == (0, 0, 0)


def test_parse_failure_and_invalid_codes():
    empty = parse("I am not sure what the codes are").line
    r = M.score_record(GOLD, empty)
    assert r["parse_failure"] == 1 and r["predicted_codes"] == 0 and r["cpt_primary"] == 0
    r = M.score_record(GOLD, line(["74177"], ["26"], ["R10.84", "Q99.99"]))  # Q99.99 does not exist
    assert (r["predicted_codes"], r["invalid_codes"], r["parse_failure"]) == (4, 1, 0)
    t = M.score_records(["a", "b"], [GOLD, GOLD], [empty, line(["74177"], ["26"], ["R10.84", "Q99.99"])])
    p = t.point()
    assert p["parse_failure_rate"] == 0.5 and p["invalid_code_rate"] == pytest.approx(1 / 4)


def test_gold_without_icd_is_refused_with_record_id():
    with pytest.raises(ValueError, match="'r7'.*'gold'"):
        M.score_records(["r7"], [line(["74177"], [], [])], [GOLD])


def test_error_taxonomy_by_hand():
    assert icd10cm.relation("M25.561", "M25.56").value == "ancestor"
    assert M.icd_error_kind("M25.561", ["M25.56"]) == "specificity"  # ancestor
    assert M.icd_error_kind("M25.56", ["M25.561"]) == "specificity"  # descendant
    assert M.icd_error_kind("M25.561", ["M25.59"]) == "specificity"  # sibling, same category
    assert M.icd_error_kind("M25.561", ["M79.1"]) == "same_chapter"  # both chapter 13
    assert M.icd_error_kind("M25.561", ["R10.84"]) == "unrelated"
    assert M.icd_error_kind("M25.561", []) == "missing"
    assert M.icd_error_kind("M25.561", ["R10.84", "M25.562"]) == "specificity"  # closest relation wins
    golds = [line(["73721"], ["RT"], ["M25.561", "R10.84"]), line(["73721"], [], ["M25.561"])]
    preds = [line(["73721"], ["RT"], ["M25.562"]), line([], [], [])]
    tax = M.error_taxonomy(M.score_records(["a", "b"], golds, preds))
    assert tax["counts"] == {"specificity": 1, "same_chapter": 0, "unrelated": 1, "missing": 1}
    assert tax["missed"] == 3 and tax["shares"]["missing"] == pytest.approx(1 / 3)


def test_means_micro_and_macro_by_hand():
    golds = [line(["74177"], [], ["R10.84", "K57.30"]), line(["73721"], ["RT"], ["M25.561"])]
    preds = [line(["74177"], [], ["R10.84", "M25.561"]), line(["73722"], ["RT"], ["M25.561", "Q99.99"])]
    p = M.score_records(["a", "b"], golds, preds).point()
    assert p["cpt_exact"] == 0.5 and p["modifier_exact"] == 1.0 and p["icd_exact"] == 0.0
    assert p["icd_recall_mean"] == pytest.approx((1 / 2 + 1) / 2)
    assert p["icd_precision_mean"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # micro: tp 2 (R10.84, M25.561 in b), fp 2 (M25.561 in a, Q99.99), fn 1 (K57.30)
    assert p["icd_micro_precision"] == pytest.approx(2 / 4)
    assert p["icd_micro_recall"] == pytest.approx(2 / 3)
    assert p["icd_micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    # cpt micro: tp 1, fp 1 (73722), fn 1 (73721)
    assert p["cpt_micro_f1"] == pytest.approx(2 / 4)
    # macro by code over gold labels {R10.84, K57.30, M25.561}; Q99.99 is ignored (not in gold)
    # R10.84: tp1 -> 1; K57.30: fn1 -> 0; M25.561: tp1 fp1 -> 2/3
    assert p["icd_macro_f1_code"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    # categories: R10 1, K57 0, M25 (tp1 in b, fp1 in a) 2/3
    assert p["icd_macro_f1_category"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    # chapters: 18 (R10) 1; 11 (K57) 0; 13 (M25) tp1 fp1 -> 2/3; Q99.99 is chapter 17, absent from gold
    assert icd10cm.chapter("Q99.99") == "17"
    assert p["icd_macro_f1_chapter"] == pytest.approx((1 + 0 + 2 / 3) / 3)


def test_invalid_category_gets_invalid_chapter_label():
    assert M.icd_label("X9Z.1", "chapter") == "invalid"
    assert M.icd_label("M25.561", "chapter") == "13" and M.icd_label("m25561", "category") == "M25"
    # a prediction in a non-existent category counts against micro precision only
    p = M.score_records(["a"], [GOLD], [line(["74177"], ["26"], ["R10.84", "K57.30", "X9Z.1"])]).point()
    assert p["icd_macro_f1_chapter"] == 1.0 and p["icd_micro_precision"] == pytest.approx(2 / 3)


def _random_lines(rng: random.Random, n: int):
    pool = ["R10.84", "K57.30", "K57.31", "M25.561", "M25.562", "M79.1", "I83.93", "J18.9", "N20.0", "X9Z.1"]
    golds, preds = [], []
    for _ in range(n):
        golds.append(line([rng.choice(["74177", "73721", "93970"])], [], rng.sample(pool[:-1], rng.randint(1, 3))))
        preds.append(line(rng.sample(["74177", "73721", "93970"], rng.randint(0, 2)), [],
                          rng.sample(pool, rng.randint(0, 4))))
    return golds, preds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_micro_and_macro_match_sklearn(seed):
    golds, preds = _random_lines(random.Random(seed), 60)
    p = M.score_records([str(i) for i in range(60)], golds, preds).point()
    for level in M.MACRO_LEVELS:
        g = [{M.icd_label(c, level) for c in x.icd} for x in golds]
        q = [{M.icd_label(c, level) for c in x.icd} for x in preds]
        mlb = MultiLabelBinarizer().fit(g + q)
        yt, yp = mlb.transform(g), mlb.transform(q)
        gold_labels = [i for i, c in enumerate(yt.sum(axis=0)) if c > 0]
        expected = f1_score(yt, yp, average="macro", labels=gold_labels, zero_division=0)
        assert p[f"icd_macro_f1_{level}"] == pytest.approx(expected), level
        if level == "code":
            assert p["icd_micro_f1"] == pytest.approx(f1_score(yt, yp, average="micro", zero_division=0))
            assert p["icd_micro_precision"] == pytest.approx(precision_score(yt, yp, average="micro", zero_division=0))
            assert p["icd_micro_recall"] == pytest.approx(recall_score(yt, yp, average="micro", zero_division=0))
    mlb = MultiLabelBinarizer().fit([set(x.cpt) for x in golds + preds])
    expected = f1_score(mlb.transform([set(x.cpt) for x in golds]), mlb.transform([set(x.cpt) for x in preds]),
                        average="micro", zero_division=0)
    assert p["cpt_micro_f1"] == pytest.approx(expected)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    golds, preds = _random_lines(random.Random(3), 80)
    t = M.score_records([str(i) for i in range(80)], golds, preds)
    ci = M.confidence_intervals(t, resamples=1000, seed=5)
    assert ci == M.confidence_intervals(t, resamples=1000, seed=5)
    assert ci != M.confidence_intervals(t, resamples=1000, seed=6)
    point = t.point()
    for name in M.AGGREGATE_METRICS:
        lo, hi = ci[name]
        assert lo <= point[name] + 1e-9 and point[name] - 1e-9 <= hi, name
    # the bootstrap of a mean matches a direct numpy resampling of the per-record values
    w = M.bootstrap_weights(80, 1000, 5)
    assert (w.sum(axis=1) == 80).all()
    idx = np.random.default_rng(5).integers(0, 80, size=(1000, 80))
    direct = t.values["icd_recall"][idx].mean(axis=1)
    assert np.allclose(t.aggregate(w)["icd_recall_mean"], direct)


def test_summarize_names_breakdowns_and_ci():
    golds, preds = _random_lines(random.Random(4), 30)
    t = M.score_records([str(i) for i in range(30)], golds, preds)
    out = M.summarize(t, {"modality": ["CT" if i % 3 else "MR" for i in range(30)]}, resamples=200, seed=1)
    assert out["n"] == 30 and set(M.AGGREGATE_METRICS) <= set(out) and set(out["ci95"]) == set(M.AGGREGATE_METRICS)
    mod = out["breakdowns"]["modality"]
    assert mod["CT"]["n"] == 20 and mod["MR"]["n"] == 10
    ct = [i for i in range(30) if i % 3]
    assert mod["CT"]["cpt_exact"] == pytest.approx(t.values["cpt_exact"][ct].mean())
    chapters = out["breakdowns"]["icd_chapter"]
    assert sum(c["support"] for c in chapters.values()) == sum(len(g.icd) for g in golds)


def test_mcnemar_exact_by_hand():
    a = np.array([1, 1, 1, 1, 1, 0, 0, 1])
    b = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    r = M.mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"]) == (4, 1)
    # two-sided exact binomial on 5 discordant pairs, 4 vs 1: 2 * P(X<=1) = 2 * 6/32
    assert r["p_value"] == pytest.approx(12 / 32)
    assert r["p_value"] == pytest.approx(stats.binomtest(4, 5, 0.5).pvalue)
    assert M.mcnemar_exact(a, a)["p_value"] == 1.0


def test_compare_tables_and_refusal():
    golds, preds = _random_lines(random.Random(5), 40)
    ids = [str(i) for i in range(40)]
    a = M.score_records(ids, golds, preds)
    b = M.score_records(ids, golds, golds)  # a perfect run
    cmp = M.compare_tables(a, b, resamples=300, seed=2)
    assert cmp["all_three_exact"]["b"] == 1.0
    assert cmp["icd_micro_f1"]["diff"] == pytest.approx(1.0 - a.point()["icd_micro_f1"])
    lo, hi = cmp["icd_micro_f1"]["diff_ci95"]
    assert 0 < lo <= cmp["icd_micro_f1"]["diff"] <= hi
    assert cmp["icd_exact"]["mcnemar"]["a_only"] == 0 and "mcnemar" not in cmp["icd_micro_f1"]
    with pytest.raises(ValueError, match="different records.*'39'"):
        M.compare_tables(a, M.score_records(ids[:-1], golds[:-1], golds[:-1]))
    other = list(golds)
    other[3] = line(["74177"], [], ["R10.84"]) if golds[3] != line(["74177"], [], ["R10.84"]) else GOLD
    with pytest.raises(ValueError, match="different gold.*'3'"):
        M.compare_tables(a, M.score_records(ids, other, preds))
