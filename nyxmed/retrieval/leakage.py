"""Self-leakage defense: three independent layers that block a few-shot neighbour.

1. ``content_hash`` - the neighbour's normalized report text hashes the same as the query's;
2. ``near_duplicate`` - embedding cosine >= ``leak_cosine`` (dense on), else MinHash
   char-shingle Jaccard >= ``leak_jaccard`` (see :mod:`nyxmed.retrieval.neardup`);
3. ``metadata`` - same patient key and exam date, or same accession number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nyxmed.cases import Case
from nyxmed.retrieval import neardup

LAYERS = ("content_hash", "near_duplicate", "metadata")


def _key(text: str | None) -> int:
    """A non-negative 63-bit key of ``text`` (-1 when missing)."""
    if not text:
        return -1
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class Fingerprints:
    """Per-case keys for the three layers; ``vectors`` are embeddings or MinHash signatures."""

    content: np.ndarray
    visit: np.ndarray  # patient key + exam date
    accession: np.ndarray
    vectors: np.ndarray

    @classmethod
    def of(cls, cases: Sequence[Case], vectors: np.ndarray) -> "Fingerprints":
        content = np.array([int(c.content_hash[:15], 16) for c in cases], dtype=np.int64)
        visit = np.array([_key(f"{c.patient_key}\x1f{c.exam_date}") if c.patient_key and c.exam_date else -1
                          for c in cases], dtype=np.int64)
        accession = np.array([_key(c.accession) for c in cases], dtype=np.int64)
        return cls(content, visit, accession, vectors)

    def take(self, rows: np.ndarray) -> "Fingerprints":
        return Fingerprints(self.content[rows], self.visit[rows], self.accession[rows], self.vectors[rows])


@dataclass(frozen=True)
class LeakageGuard:
    """Checks query rows against candidate pool rows; ``measure`` is ``cosine`` or ``jaccard``."""

    measure: str
    threshold: float

    def check(self, queries: Fingerprints, pool: Fingerprints, cand: np.ndarray) -> dict[str, np.ndarray]:
        """Per layer, a ``[n, m]`` mask of candidates (pool rows, -1 = empty) that layer blocks."""
        valid = cand >= 0
        c = np.where(valid, cand, 0)
        same_content = (pool.content[c] == queries.content[:, None]) & valid
        same_visit = (queries.visit[:, None] >= 0) & (pool.visit[c] == queries.visit[:, None])
        same_acc = (queries.accession[:, None] >= 0) & (pool.accession[c] == queries.accession[:, None])
        if self.measure == "cosine":
            similarity = np.einsum("nd,nmd->nm", queries.vectors, pool.vectors[c])
        elif self.measure == "jaccard":
            similarity = neardup.jaccard(queries.vectors[:, None, :], pool.vectors[c])
        else:
            raise ValueError(f"leakage measure {self.measure!r}: expected 'cosine' or 'jaccard'")
        return {
            "content_hash": same_content,
            "near_duplicate": (similarity >= self.threshold) & valid,
            "metadata": (same_visit | same_acc) & valid,
        }
