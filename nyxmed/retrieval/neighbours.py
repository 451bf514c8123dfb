"""Few-shot neighbour search over the training pool: BM25 (+ dense) -> fusion -> leakage filter -> rerank."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from nyxmed.cases import Case
from nyxmed.config import RetrievalConfig
from nyxmed.retrieval.bm25 import Bm25Index
from nyxmed.retrieval.dense import DenseIndex
from nyxmed.retrieval.fusion import reciprocal_rank_fusion
from nyxmed.retrieval.leakage import LAYERS, Fingerprints, LeakageGuard


def retrieval_text(case: Case) -> str:
    """What retrieval and the near-duplicate checks see: exam, reason and body."""
    return "\n".join((case.exam_description, case.reason_for_exam, case.report_text))


@dataclass
class Neighbours:
    """Unblocked neighbours per query (pool rows, best first, -1 padded) and blocked counts."""

    rows: np.ndarray  # [n, m]
    scores: np.ndarray  # fused RRF scores, aligned with rows
    shots: np.ndarray  # [n, n_shots]: the few-shot examples, in prompt order
    blocked: dict[str, int] = field(default_factory=dict)  # per layer, plus "any" and "self"


class NeighbourSearch:
    """Retrieves few-shot neighbours for query records from a fixed pool (the train split)."""

    def __init__(self, pool_texts: Sequence[str], pool_fp: Fingerprints, cfg: RetrievalConfig,
                 pool_vectors: np.ndarray | None = None, reranker=None, bm25: Bm25Index | None = None,
                 dense: DenseIndex | None = None):
        """``bm25`` / ``dense``: indexes already built over this pool (loaded ones); else built here."""
        self.cfg = cfg
        self.pool_texts = list(pool_texts)
        self.pool_fp = pool_fp
        self.bm25 = bm25 or Bm25Index(self.pool_texts, query_terms=cfg.bm25_query_terms, threads=cfg.bm25_threads)
        if dense is None and cfg.dense and pool_vectors is not None and len(pool_vectors):
            dense = DenseIndex(pool_vectors)
        self.dense = dense if cfg.dense else None
        if cfg.dense and self.dense is None and len(self.pool_texts):
            raise ValueError("retrieval.dense is on but no pool embeddings were given")
        measure, threshold = ("cosine", cfg.leak_cosine) if cfg.dense else ("jaccard", cfg.leak_jaccard)
        self.guard = LeakageGuard(measure, threshold)
        self.reranker = reranker

    def search(self, texts: Sequence[str], fp: Fingerprints, self_rows: np.ndarray,
               dense_queries: np.ndarray | None = None, progress: bool = True) -> Neighbours:
        """Neighbours of each query; ``self_rows[i]`` is query i's own pool row (-1 if not pooled)."""
        cfg, n = self.cfg, len(texts)
        width = max(cfg.bm25_top, cfg.dense_top if self.dense else 0)
        rows = np.full((n, width), -1, np.int64)
        scores = np.zeros((n, width))
        blocked = {k: 0 for k in (*LAYERS, "any", "self")}
        bar = tqdm(total=n, desc="retrieval", unit="case", disable=not progress)
        for lo in range(0, n, cfg.batch_size):
            hi = min(n, lo + cfg.batch_size)
            # one extra hit per list: a pooled query finds itself first
            rankings = [self.bm25.search(texts[lo:hi], cfg.bm25_top + 1)[0]]
            if self.dense is not None:
                rankings.append(self.dense.search(dense_queries[lo:hi], cfg.dense_top + 1)[0])
            fused, fused_scores = reciprocal_rank_fusion(rankings, k=cfg.rrf_k, top=width + 1)
            is_self = (fused == self_rows[lo:hi, None]) & (fused >= 0)
            masks = self.guard.check(fp.take(np.arange(lo, hi)), self.pool_fp, fused)
            hit = np.zeros_like(is_self)
            for layer in LAYERS:
                masks[layer] &= ~is_self
                blocked[layer] += int(masks[layer].sum())
                hit |= masks[layer]
            blocked["any"] += int(hit.sum())
            blocked["self"] += int(is_self.sum())
            keep = (fused >= 0) & ~hit & ~is_self
            order = np.argsort(~keep, axis=1, kind="stable")
            kept = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(fused, order, 1), -1)[:, :width]
            kept_scores = np.where(kept >= 0, np.take_along_axis(fused_scores, order, 1)[:, :width], 0.0)
            rows[lo:hi], scores[lo:hi] = kept, kept_scores
            bar.update(hi - lo)
        bar.close()
        shots = rows[:, :cfg.n_shots]
        if self.reranker is not None and n:
            reranked, _ = self.reranker.rerank(list(texts), self.pool_texts, rows, cfg.rerank_top)
            shots = reranked[:, :cfg.n_shots]
        return Neighbours(rows, scores, shots, blocked)
