"""Retrieval: BM25, RRF, MinHash near duplicates, the three leakage layers, candidates, reranker, dense."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nyxmed.cases import case_from_record
from nyxmed.config import RetrievalConfig
from nyxmed.retrieval import neardup
from nyxmed.retrieval.bm25 import Bm25Index
from nyxmed.retrieval.candidates import CodeIncidence, code_system_neighbours, widen
from nyxmed.retrieval.fusion import reciprocal_rank_fusion
from nyxmed.retrieval.leakage import Fingerprints
from nyxmed.retrieval.neighbours import NeighbourSearch

WORDS = ("effusion mass nodule fracture edema thickening stone lesion cyst aneurysm hernia abscess "
         "stenosis occlusion thrombus calcification atelectasis consolidation pneumothorax").split()


def _report(rnd: random.Random, n: int = 60) -> str:
    return " ".join(f"{rnd.choice(['mild', 'small', 'no', 'focal', 'large'])} {rnd.choice(WORDS)}" for _ in range(n)) + "."


def _case(rid, text, patient=None, date=None, accession=None, icd=("R10.84",)):
    return case_from_record({"id": rid, "exam_description": "CT ABDOMEN", "reason_for_exam": "pain",
                             "report_text": text, "cpt": ["74177"], "icd": list(icd), "patient_key": patient,
                             "exam_date": date, "accession": accession})


def test_rrf_matches_formula():
    a = np.array([[3, 1, 2]])
    b = np.array([[1, 4, -1]])
    ids, scores = reciprocal_rank_fusion([a, b], k=60)
    expected = {3: 1 / 61, 1: 1 / 62 + 1 / 61, 2: 1 / 63, 4: 1 / 62}
    got = {int(i): s for i, s in zip(ids[0], scores[0]) if i >= 0}
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - v) < 1e-12 for k, v in expected.items())
    assert list(ids[0][:4]) == [1, 3, 4, 2]  # 4 and 3 tie-free; 4 (1/62) above 2 (1/63)


def test_bm25_ranks_the_matching_report_first():
    rnd = random.Random(0)
    texts = [_report(rnd) for _ in range(30)] + ["pneumothorax apical left tension"]
    rows, scores = Bm25Index(texts).search(["tension pneumothorax on the left apex"], 5)
    assert rows[0, 0] == 30 and scores[0, 0] > scores[0, 1]
    rows, _ = Bm25Index(texts).search(["zzzz qqqq"], 5)
    assert (rows == -1).all()  # no shared word: no neighbours at all


def test_batched_bm25_equals_bm25s_scores():
    rnd = random.Random(5)
    texts = [_report(rnd, rnd.randint(5, 40)) for _ in range(50)]
    queries = [_report(rnd, 8) for _ in range(6)]
    index = Bm25Index(texts, query_terms=0)
    ours = index.scores(queries)
    tokens = index._tokenizer.tokenize(queries, update_vocab=False, show_progress=False)
    theirs = np.stack([index._model.get_scores(sorted(set(t))) for t in tokens])
    assert np.allclose(ours, theirs, atol=1e-5)
    rows, scores = index.search(queries, 10)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert np.allclose(scores, np.sort(theirs, axis=1)[:, ::-1][:, :10], atol=1e-5)
    # pruned queries keep their rarest terms: a rare word still finds its document first
    pruned = Bm25Index(texts + ["aneurysm cyst zygomycosis"], query_terms=2)
    assert pruned.search(["no large mass small cyst zygomycosis"], 3)[0][0, 0] == 50


def test_minhash_near_duplicates():
    rnd = random.Random(1)
    base = _report(rnd, 120)
    edited = base.replace("mild", "minimal", 1)
    other = "Chest radiograph, two views: clear lungs, no pneumothorax, normal heart size, no pleural effusion. " * 3
    sig = neardup.signatures([base, edited, other, base])
    assert neardup.jaccard(sig[0], sig[3]) == 1.0
    assert neardup.jaccard(sig[0], sig[1]) > 0.9
    assert neardup.jaccard(sig[0], sig[2]) < 0.5
    labels = neardup.near_duplicate_components(sig, 0.9)
    assert labels[1] == labels[0] == labels[3] == 0 and labels[2] == 2


def _twins():
    """A query report and, in the pool, its exact copy, a near copy, a same-visit and a same-accession twin."""
    rnd = random.Random(2)
    query = _report(rnd, 80)
    pool = [_case(f"other-{i}", _report(rnd, 80), patient=f"p{i}") for i in range(25)]
    twin_text = query.rsplit(" ", 3)[0] + " fracture."
    pool += [
        _case("exact-copy", query, patient="px"),
        _case("near-copy", twin_text, patient="py"),
        _case("same-visit", query.replace("mild", "severe").replace("small", "tiny") + " extra views of the spine",
              patient="P1", date="2024-03-01"),
        _case("same-accession", query.replace("focal", "diffuse").replace("large", "big") + " comparison prior",
              patient="pz", accession="ACC-9"),
    ]
    q = _case("query", query, patient="P1", date="2024-03-01", accession="ACC-9")
    return q, pool


@pytest.mark.parametrize("dense", [False, True])
def test_leakage_layers_block_every_twin(dense):
    q, pool = _twins()
    texts = [c.report_text for c in pool]
    cfg = RetrievalConfig(dense=dense, n_shots=3, bm25_top=40, dense_top=40)
    if dense:
        from nyxmed.retrieval.dense import load_embedder

        emb = load_embedder()
        pool_vec, q_vec = emb.encode(texts), emb.encode([q.report_text])
    else:
        pool_vec, q_vec = neardup.signatures(texts), neardup.signatures([q.report_text])
    search = NeighbourSearch(texts, Fingerprints.of(pool, pool_vec), cfg, pool_vectors=pool_vec if dense else None)
    out = search.search([q.report_text], Fingerprints.of([q], q_vec), np.array([-1]),
                        dense_queries=q_vec if dense else None, progress=False)
    got = {pool[r].id for r in out.rows[0] if r >= 0}
    assert not got & {"exact-copy", "near-copy", "same-visit", "same-accession"}
    assert len(out.shots[0]) == 3 and (out.shots[0] >= 0).all()
    assert all(pool[r].id.startswith("other-") for r in out.shots[0])
    assert out.blocked["content_hash"] >= 1 and out.blocked["near_duplicate"] >= 2 and out.blocked["metadata"] >= 2


def test_a_pooled_record_never_retrieves_itself():
    rnd = random.Random(3)
    pool = [_case(f"c{i}", _report(rnd), patient=f"p{i}") for i in range(20)]
    texts = [c.report_text for c in pool]
    sig = neardup.signatures(texts)
    fp = Fingerprints.of(pool, sig)
    out = NeighbourSearch(texts, fp, RetrievalConfig(dense=False)).search(texts, fp, np.arange(20), progress=False)
    for i in range(20):
        assert i not in set(out.rows[i])
    assert out.blocked["self"] == 20 and out.blocked["content_hash"] == 0


def test_candidates_ranked_by_summed_score_and_widened_to_siblings():
    inc = CodeIncidence([["M25.561"], ["M25.561", "R52"], ["R52"], ["M17.11"]])
    ranked = inc.rank(np.array([[0, 1, 3, -1]]), np.array([[0.5, 0.4, 0.3, 0.0]]))[0]
    assert [c for c, _ in ranked] == ["M25.561", "R52", "M17.11"]
    assert ranked[0][1] == pytest.approx(0.9)
    assert "M25.562" in code_system_neighbours("M25.561")  # left knee pain is a sibling of right
    wide = dict(widen(ranked, per_code=3, discount=0.5))
    assert wide["M25.562"] == pytest.approx(0.45)
    assert set(code_system_neighbours("M25.56")) >= {"M25.561", "M25.562"}  # non-billable -> billable below


def test_reranker_reorders_head_by_cross_encoder(tmp_path):
    """A tiny CrossEncoder built locally (BertConfig + a small vocab): the real code path, no download."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from nyxmed.retrieval.rerank import Reranker

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "mild", "small", "no", "focal", "large", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    model = BertForSequenceClassification(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=1))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rnd = random.Random(4)
    pool = [_report(rnd, 20) for _ in range(8)]
    reranker = Reranker(str(tmp_path))
    ids = np.array([[0, 1, 2, 3, 4, 5, -1, -1]])
    out, scores = reranker.rerank(["mild edema"], pool, ids, top=4)
    expected = reranker.model.predict([("mild edema", pool[i]) for i in range(4)])
    assert list(out[0, :4]) == [int(i) for i in np.argsort(-np.asarray(expected), kind="stable")]
    assert list(out[0, 4:]) == [4, 5, -1, -1]  # the tail keeps its fused order
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        Reranker(str(tmp_path / "no-such-model"))
