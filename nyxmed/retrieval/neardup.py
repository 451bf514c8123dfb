"""Cheap near-duplicate measure: one-permutation MinHash over character 9-shingles.

Each normalized text becomes ``bins`` 32-bit minima (one hash per shingle, binned by its top
bits); the share of equal bins estimates the shingle-set Jaccard. Used for de-duplication
before splitting (with LSH banding) and as the leakage near-duplicate layer when dense
retrieval is off.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from nyxmed.cases import normalize_text

BINS = 64
SHINGLE = 9
EMPTY = np.uint32(0xFFFFFFFF)
_FNV = np.uint64(1099511628211)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads shingle hashes evenly over 64 bits (wraps on purpose)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def signatures(texts: Sequence[str], chunk: int = 2048) -> np.ndarray:
    """``[n, BINS]`` uint32 signatures of the normalized texts (empty bins hold ``EMPTY``)."""
    out = np.full((len(texts), BINS), EMPTY, dtype=np.uint32)
    for lo in range(0, len(texts), chunk):
        norm = [normalize_text(t).encode() for t in texts[lo:lo + chunk]]
        # texts shorter than a shingle count as one shingle: pad them to shingle length
        norm = [s.ljust(SHINGLE, b" ") if s else s for s in norm]
        lengths = np.fromiter((len(s) for s in norm), dtype=np.int64, count=len(norm))
        buf = np.frombuffer(b"\x00".join(norm) + b"\x00" * SHINGLE, dtype=np.uint8).astype(np.uint64)
        starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
        m = len(buf) - SHINGLE + 1
        h = np.zeros(m, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(SHINGLE):
                h = h * _FNV + buf[j:j + m]
        pos = np.arange(m)
        doc = np.searchsorted(starts, pos, side="right") - 1
        valid = pos + SHINGLE <= starts[doc] + lengths[doc]
        h, doc = _mix(h[valid]), doc[valid]
        bins = (h >> np.uint64(58)).astype(np.int64)
        values = (h & np.uint64(0xFFFFFFFE)).astype(np.uint32)  # never equal to EMPTY
        np.minimum.at(out[lo:lo + chunk], (doc, bins), values)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of signatures ``a`` and ``b`` (broadcast over leading axes)."""
    both_empty = (a == EMPTY) & (b == EMPTY)
    equal = ((a == b) & ~both_empty).sum(-1)
    used = BINS - both_empty.sum(-1)
    return np.where(used > 0, equal / np.maximum(used, 1), 0.0)


def near_duplicate_components(sigs: np.ndarray, threshold: float, bands: int = 16) -> np.ndarray:
    """Component label per row; rows sharing a label are near duplicates (Jaccard >= threshold).

    LSH banding proposes pairs (each row against the first row of its bucket), which are then
    checked against ``threshold``; labels are the smallest row number of each component.
    """
    n = len(sigs)
    rows_per_band = BINS // bands
    src, dst = [], []
    for band in range(bands):
        part = sigs[:, band * rows_per_band:(band + 1) * rows_per_band].astype(np.uint64)
        key = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(rows_per_band):
                key = _mix(key * _FNV + part[:, j])
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        rep = first[inverse]
        cand = np.nonzero(rep != np.arange(n))[0]
        if len(cand):
            ok = jaccard(sigs[cand], sigs[rep[cand]]) >= threshold
            src.append(cand[ok])
            dst.append(rep[cand][ok])
    if not src or not sum(len(s) for s in src):
        return np.arange(n)
    s, d = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(s)), (s, d)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    return smallest[labels]
