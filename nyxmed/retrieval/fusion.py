"""Reciprocal rank fusion of several ranked lists, vectorized over a batch of queries."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def reciprocal_rank_fusion(rankings: Sequence[np.ndarray], k: int = 60, top: int | None = None,
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ``[n, m_i]`` row-id rankings (-1 = empty) by ``sum 1 / (k + rank)``, rank from 1.

    Returns ids and scores of shape ``[n, top]``, best first, padded with -1 / 0.
    """
    n = rankings[0].shape[0]
    ids = np.concatenate([r for r in rankings], axis=1) if rankings else np.zeros((n, 0), np.int64)
    ranks = np.concatenate([np.broadcast_to(np.arange(1, r.shape[1] + 1), r.shape) for r in rankings], axis=1)
    top = ids.shape[1] if top is None else top
    out_ids = np.full((n, top), -1, np.int64)
    out_scores = np.zeros((n, top), np.float64)
    valid = ids >= 0
    if not valid.any() or top == 0:
        return out_ids, out_scores
    rows = np.broadcast_to(np.arange(n)[:, None], ids.shape)[valid]
    cols = ids[valid]
    contrib = 1.0 / (k + ranks[valid])
    # one key per (query, pool row): sum its contributions across the lists
    stride = int(cols.max()) + 1
    keys, inverse = np.unique(rows * stride + cols, return_inverse=True)
    scores = np.bincount(inverse, weights=contrib)
    key_rows, key_ids = keys // stride, keys % stride
    # best first within each query; ties broken by pool row for determinism
    order = np.lexsort((key_ids, -scores, key_rows))
    key_rows, key_ids, scores = key_rows[order], key_ids[order], scores[order]
    starts = np.searchsorted(key_rows, np.arange(n))
    pos = np.arange(len(key_rows)) - starts[key_rows]
    keep = pos < top
    out_ids[key_rows[keep], pos[keep]] = key_ids[keep]
    out_scores[key_rows[keep], pos[keep]] = scores[keep]
    return out_ids, out_scores
