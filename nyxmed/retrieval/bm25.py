"""Lexical retrieval: a BM25 index (``bm25s``) queried in vectorized batches."""

from __future__ import annotations

from typing import Sequence

import bm25s
import numpy as np
from bm25s.tokenization import Tokenizer


class Bm25Index:
    """BM25 over a fixed pool of texts; :meth:`search` returns pool row numbers, best first."""

    def __init__(self, texts: Sequence[str], threads: int = 0):
        self.size = len(texts)
        self.threads = threads
        self._tokenizer = Tokenizer(stopwords="english")
        corpus = self._tokenizer.tokenize(list(texts), show_progress=False)
        self._model = bm25s.BM25()
        self._model.index(corpus, show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows and scores per query, shape ``[n, k]``; rows without a match are -1."""
        k = min(k, self.size)
        if not queries or k == 0:
            return np.full((len(queries), k), -1, np.int64), np.zeros((len(queries), k), np.float32)
        # words unseen in the pool map to the empty token: they cannot match anything anyway
        tokens = self._tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False)
        rows, scores = self._model.retrieve(tokens, k=k, show_progress=False, n_threads=self.threads)
        rows = np.where(scores > 0, rows, -1).astype(np.int64)
        return rows, scores.astype(np.float32)
