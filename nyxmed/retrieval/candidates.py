"""Candidate code lists: the gold codes of retrieved neighbours, ranked by fused score.

An ICD list can be widened by code-system neighbours (siblings under the same parent and
billable codes below a non-billable one) so a more specific code can be offered even when no
neighbour used it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.sparse import csr_matrix

from nyxmed.codes import icd10cm


class CodeIncidence:
    """Which pool rows carry which code (sparse ``[pool, codes]``), for one code field."""

    def __init__(self, code_lists: Sequence[Sequence[str]]):
        self.codes: list[str] = []
        index: dict[str, int] = {}
        rows, cols = [], []
        for r, codes in enumerate(code_lists):
            for code in codes:
                col = index.setdefault(code, len(index))
                if col == len(self.codes):
                    self.codes.append(code)
                rows.append(r)
                cols.append(col)
        self.matrix = csr_matrix((np.ones(len(rows), np.float64), (rows, cols)),
                                 shape=(len(code_lists), max(len(self.codes), 1)))

    def rank(self, neighbours: np.ndarray, scores: np.ndarray) -> list[list[tuple[str, float]]]:
        """Per query, ``(code, summed neighbour score)`` best first (ties by code)."""
        n, m = neighbours.shape
        valid = neighbours >= 0
        weights = csr_matrix((scores[valid], (np.nonzero(valid)[0], neighbours[valid])),
                             shape=(n, self.matrix.shape[0]))
        summed = (weights @ self.matrix).tocsr()
        out = []
        for i in range(n):
            lo, hi = summed.indptr[i], summed.indptr[i + 1]
            pairs = [(self.codes[c], float(v)) for c, v in zip(summed.indices[lo:hi], summed.data[lo:hi])]
            pairs.sort(key=lambda p: (-p[1], p[0]))
            out.append(pairs)
        return out


@lru_cache(maxsize=None)
def code_system_neighbours(code: str) -> tuple[str, ...]:
    """Billable codes below ``code`` if it is not billable, else its billable siblings."""
    if not icd10cm.is_valid(code):
        return ()
    if not icd10cm.is_billable(code):
        return tuple(d for d in icd10cm.descendants(code) if icd10cm.is_billable(d))
    parents = icd10cm.ancestors(code)
    if not parents:
        return ()
    return tuple(d for d in icd10cm.descendants(parents[0]) if d != code and icd10cm.is_billable(d))


def widen(ranked: list[tuple[str, float]], per_code: int, discount: float) -> list[tuple[str, float]]:
    """Add up to ``per_code`` code-system neighbours of each ranked code at ``discount`` x its score."""
    scores = dict(ranked)
    for code, score in ranked:
        added = 0
        for extra in code_system_neighbours(code):
            if added >= per_code:
                break
            if extra not in scores:
                scores[extra] = score * discount
                added += 1
    return sorted(scores.items(), key=lambda p: (-p[1], p[0]))
