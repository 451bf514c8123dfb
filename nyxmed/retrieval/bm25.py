"""Lexical retrieval: a BM25 index (``bm25s``) queried in batches.

``bm25s`` tokenizes, precomputes every (term, document) score and retrieves a batch of queries
with its default numpy backend (numba is not used: its backend orders tied scores differently,
so it would change built data; docs/performance.md). Long queries (whole
reports) keep only their ``query_terms`` rarest terms: frequent template words cost the most
and change the ranking the least.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import bm25s
import numpy as np
from bm25s.tokenization import Tokenizer


class Bm25Index:
    """BM25 over a fixed pool of texts; :meth:`search` returns pool row numbers, best first."""

    def __init__(self, texts: Sequence[str], query_terms: int = 32, threads: int = 0):
        self.size = len(texts)
        self.query_terms = query_terms
        self.threads = threads
        self._tokenizer = Tokenizer(stopwords="english")
        corpus = self._tokenizer.tokenize(list(texts), show_progress=False)
        self._model = bm25s.BM25()
        self._model.index(corpus, show_progress=False)
        self._df = np.diff(np.asarray(self._model.scores["indptr"], dtype=np.int64))  # documents per term

    def save(self, folder: str | Path) -> None:
        """The bm25s index (scores, vocabulary, parameters) and its tokenizer's vocabulary."""
        self._model.save(str(folder), show_progress=False)
        self._tokenizer.save_vocab(str(folder))

    @classmethod
    def load(cls, folder: str | Path, query_terms: int = 32, threads: int = 0) -> "Bm25Index":
        """The index :meth:`save` wrote; searches exactly as the index that was saved."""
        index = cls.__new__(cls)
        index.query_terms, index.threads = query_terms, threads
        index._tokenizer = Tokenizer(stopwords="english")
        index._tokenizer.load_vocab(str(folder))
        index._model = bm25s.BM25.load(str(folder), show_progress=False)
        index._df = np.diff(np.asarray(index._model.scores["indptr"], dtype=np.int64))
        index.size = int(index._model.scores["num_docs"])
        return index

    def _query_terms(self, queries: Sequence[str]) -> list[list[int]]:
        """Each query's distinct term ids known to the pool, its rarest ``query_terms`` only."""
        tokens = self._tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False)
        out = []
        for ids in tokens:
            ids = np.unique(np.asarray(ids, dtype=np.int64))
            ids = ids[self._df[ids] > 0]  # words unseen in the pool cannot match
            if self.query_terms and len(ids) > self.query_terms:
                ids = ids[np.argsort(self._df[ids], kind="stable")[:self.query_terms]]
            out.append([int(i) for i in ids] or [0])  # [0]: the empty token, matches nothing
        return out

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """Dense ``[n, pool]`` BM25 scores (for checks and small pools)."""
        return np.stack([self._model.get_scores(t) for t in self._query_terms(queries)])

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows and scores per query, shape ``[n, k]``; rows without a match are -1."""
        n, k = len(queries), min(k, self.size)
        if n == 0 or k == 0:
            return np.full((n, k), -1, np.int64), np.zeros((n, k), np.float32)
        rows, scores = self._model.retrieve(self._query_terms(queries), k=k, show_progress=False,
                                            n_threads=self.threads)
        rows = np.where(scores > 0, rows, -1).astype(np.int64)
        return rows, scores.astype(np.float32)
