"""Optional cross-encoder reranking of the fused neighbours (local model folder only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


class Reranker:
    """Re-scores the first ``top`` fused neighbours of each query with a cross-encoder."""

    def __init__(self, model_path: str, batch_size: int = 32, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        if not Path(model_path).is_dir():
            raise FileNotFoundError(f"retrieval.reranker: no local cross-encoder folder at {model_path!r}")
        self.model = CrossEncoder(model_path, device=device, local_files_only=True)
        self.batch_size = batch_size

    def rerank(self, queries: Sequence[str], pool: Sequence[str], ids: np.ndarray, top: int,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Reorder ``ids[:, :top]`` by cross-encoder score (the rest keep their order below).

        Returns the reordered ids and a score per position (cross-encoder score for the reranked
        head, ``-inf`` for the tail) so callers can see which positions were rescored.
        """
        ids = ids.copy()
        head = ids[:, :top]
        rows, cols = np.nonzero(head >= 0)
        scores = np.full(ids.shape, -np.inf, dtype=np.float64)
        if len(rows) == 0:
            return ids, scores
        pairs = [(queries[r], pool[head[r, c]]) for r, c in zip(rows, cols)]
        predicted = np.asarray(self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False),
                               dtype=np.float64).reshape(-1)
        head_scores = np.full(head.shape, -np.inf)
        head_scores[rows, cols] = predicted
        order = np.argsort(-head_scores, axis=1, kind="stable")
        ids[:, :head.shape[1]] = np.take_along_axis(head, order, axis=1)
        scores[:, :head.shape[1]] = np.take_along_axis(head_scores, order, axis=1)
        return ids, scores
