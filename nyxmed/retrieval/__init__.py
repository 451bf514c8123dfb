"""Few-shot retrieval: BM25 and dense indexes, rank fusion, reranking, candidate codes, leakage defense."""

from nyxmed.retrieval.neighbours import Neighbours, NeighbourSearch

__all__ = ["Neighbours", "NeighbourSearch"]
