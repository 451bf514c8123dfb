"""Lexical retrieval: a BM25 index (``bm25s``) scored for a whole batch of queries at once.

``bm25s`` tokenizes and precomputes every (term, document) BM25 score; a batch of queries is
then one sparse product ``queries x terms @ terms x documents`` (the same sum ``bm25s`` computes
query by query), followed by a top-k per row. Long queries (whole reports) keep only their
``query_terms`` rarest terms: frequent template words cost the most and rank the least.
"""

from __future__ import annotations

from typing import Sequence

import bm25s
import numpy as np
from bm25s.tokenization import Tokenizer
from scipy.sparse import csr_matrix

_SCORE_CELLS = 1 << 25  # dense score cells per sub-batch (128 MiB of float32)


class Bm25Index:
    """BM25 over a fixed pool of texts; :meth:`search` returns pool row numbers, best first."""

    def __init__(self, texts: Sequence[str], query_terms: int = 32):
        self.size = len(texts)
        self.query_terms = query_terms
        self._tokenizer = Tokenizer(stopwords="english")
        corpus = self._tokenizer.tokenize(list(texts), show_progress=False)
        self._model = bm25s.BM25()
        self._model.index(corpus, show_progress=False)
        s = self._model.scores
        self._df = np.diff(s["indptr"])  # documents per term
        self._term_doc = csr_matrix((s["data"], s["indices"], s["indptr"]),
                                    shape=(len(s["indptr"]) - 1, s["num_docs"]), dtype=np.float32)

    def _query_matrix(self, queries: Sequence[str]) -> csr_matrix:
        tokens = self._tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False)
        rows, cols = [], []
        for r, ids in enumerate(tokens):
            ids = np.unique(np.asarray(ids, dtype=np.int64))
            ids = ids[self._df[ids] > 0]  # words unseen in the pool cannot match
            if self.query_terms and len(ids) > self.query_terms:
                ids = ids[np.argsort(self._df[ids], kind="stable")[:self.query_terms]]
            rows.append(np.full(len(ids), r))
            cols.append(ids)
        rows_a = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        cols_a = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        return csr_matrix((np.ones(len(rows_a), np.float32), (rows_a, cols_a)),
                          shape=(len(queries), self._term_doc.shape[0]))

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """Dense ``[n, pool]`` BM25 scores (for checks and small pools)."""
        return (self._query_matrix(queries) @ self._term_doc).toarray()

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows and scores per query, shape ``[n, k]``; rows without a match are -1."""
        n, k = len(queries), min(k, self.size)
        rows = np.full((n, k), -1, np.int64)
        out = np.zeros((n, k), np.float32)
        if n == 0 or k == 0:
            return rows, out
        q = self._query_matrix(queries)
        step = max(1, _SCORE_CELLS // max(self.size, 1))
        for lo in range(0, n, step):
            dense = (q[lo:lo + step] @ self._term_doc).toarray()
            top = np.argpartition(-dense, k - 1, axis=1)[:, :k] if k < self.size else \
                np.broadcast_to(np.arange(self.size), dense.shape).copy()
            top_scores = np.take_along_axis(dense, top, 1)
            order = np.lexsort((top, -top_scores), axis=1)  # best first, ties by row
            top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
            rows[lo:lo + step] = np.where(top_scores > 0, top, -1)
            out[lo:lo + step] = top_scores
        return rows, out
