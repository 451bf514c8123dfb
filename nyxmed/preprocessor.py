"""The preprocessor: retrieval pool, indexes, rules and prompt settings; the one path from a case to its prompt.

``build_dataset`` makes every training prompt through a :class:`Preprocessor` and saves it to
``<data.out_dir>/preprocessor/``; :meth:`Preprocessor.load` gives back an object whose
:meth:`~Preprocessor.prompts` makes the same prompt for any case, a new report too (docs/dataset.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nyxmed import prompts
from nyxmed.cases import Case
from nyxmed.codeline import CodeLine
from nyxmed.codes import icd10cm
from nyxmed.config import PromptConfig, RetrievalConfig, to_dict
from nyxmed.errors import InputError, NotFound, VerificationError
from nyxmed.io import atomic_dir, jsonl_text, read_json, read_jsonl, sha256_file, sha256_text, write_atomic, write_json
from nyxmed.prompt_tokens import BATCH, TRUNCATION_STAGES, Encoded, PromptEncoder
from nyxmed.retrieval import neardup
from nyxmed.retrieval.bm25 import Bm25Index
from nyxmed.retrieval.candidates import CodeIncidence, widen
from nyxmed.retrieval.dense import DenseIndex
from nyxmed.retrieval.leakage import Fingerprints
from nyxmed.retrieval.neighbours import Neighbours, NeighbourSearch, retrieval_text

FORMAT = 1
ANSWER_RESERVE = 64  # tokens kept free for the answer of a case without one (generation's max_new_tokens)
FINGERPRINT_FIELDS = ("content", "visit", "accession", "vectors")
# what prompts show of a pool case; patient key, accession and date live only as hashed fingerprints
POOL_FIELDS = ("id", "exam_description", "reason_for_exam", "report_text")


@dataclass(frozen=True)
class Prompt:
    """One case's chat (system, user) and its prompt ids (chat template + generation prompt, no answer)."""

    id: str
    system: str
    user: str
    input_ids: np.ndarray
    truncated: tuple[str, ...]  # truncation stages applied, in TRUNCATION_STAGES order of first use
    shots: tuple[str, ...]  # pool ids of the few-shot examples shown
    cpt_candidates: tuple[str, ...]
    icd_candidates: tuple[str, ...]

    @property
    def messages(self) -> list[dict[str, str]]:
        return prompts.chat_messages(self.system, self.user)


def chat_template_sha256(tokenizer) -> str:
    """sha256 of the tokenizer's chat template (the text every prompt is rendered with)."""
    return sha256_text(tokenizer.chat_template or "")


class Preprocessor:
    """The train split as a retrieval pool (BM25, optional dense and reranker, leakage fingerprints),
    the coding rules and the prompt settings; makes the prompt of any case."""

    def __init__(self, pool: Sequence[Case], fingerprints: Fingerprints, retrieval: RetrievalConfig,
                 prompt: PromptConfig, rules: str, tokenizer, system: str = prompts.SYSTEM_PROMPT,
                 bm25: Bm25Index | None = None, dense: DenseIndex | None = None):
        """``fingerprints.vectors``: pool embeddings when ``retrieval.dense``, else MinHash signatures.
        ``bm25`` / ``dense``: saved indexes of this pool (built here when None)."""
        self.pool, self.fingerprints = list(pool), fingerprints
        self.retrieval, self.prompt_cfg, self.rules, self.system = retrieval, prompt, rules, system
        self.tokenizer = tokenizer
        reranker = None
        if retrieval.reranker:
            from nyxmed.retrieval.rerank import Reranker

            reranker = Reranker(retrieval.reranker)
        self.search = NeighbourSearch([retrieval_text(c) for c in self.pool], fingerprints, retrieval,
                                      pool_vectors=fingerprints.vectors if retrieval.dense else None,
                                      reranker=reranker, bm25=bm25, dense=dense)
        self.encoder = PromptEncoder(tokenizer, system, prompt.max_length, prompt.min_body_tokens)
        self._cpt = CodeIncidence([c.codes.cpt for c in self.pool])
        self._icd = CodeIncidence([c.codes.icd for c in self.pool])
        self._shots: dict[int, prompts.Shot] = {}
        self.id: str | None = None  # the preprocessor_id, once saved or loaded

    # ------------------------------------------------------------------ the one prompt path
    def query_fingerprints(self, cases: Sequence[Case], texts: Sequence[str], progress: bool = False,
                           ) -> tuple[Fingerprints, np.ndarray | None]:
        """Leakage fingerprints of new queries and their embeddings (None when dense is off)."""
        if not self.retrieval.dense:
            return Fingerprints.of(cases, neardup.signatures(texts)), None
        from nyxmed.retrieval.dense import load_embedder

        vectors = load_embedder(self.retrieval.embedding_model).encode(texts, progress=progress)
        return Fingerprints.of(cases, vectors), vectors

    def candidates(self, neigh: Neighbours) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
        """Ordered CPT and ICD-10-CM candidate lists per query, from unblocked neighbours' gold codes."""
        cfg = self.retrieval
        rows, scores = neigh.rows[:, :cfg.candidate_neighbours], neigh.scores[:, :cfg.candidate_neighbours]
        cpt = [tuple(code for code, _ in r[:cfg.cpt_candidates]) for r in self._cpt.rank(rows, scores)]
        icd = []
        for r in self._icd.rank(rows, scores):
            ranked = widen(r[:cfg.icd_candidates], cfg.widen_per_code, cfg.widen_discount) if cfg.widen_icd else r
            icd.append(tuple(code for code, _ in ranked[:cfg.icd_candidates]))
        return cpt, icd

    def parts(self, cases: Sequence[Case], neigh: Neighbours) -> list[prompts.PromptParts]:
        """Each case's user-message pieces: its few-shot examples, candidate lists, rules and report."""
        pcfg = self.prompt_cfg
        cpt, icd = self.candidates(neigh)
        out = []
        for i, case in enumerate(cases):
            for r in neigh.shots[i]:
                if r >= 0 and r not in self._shots:
                    self._shots[r] = prompts.shot_for(self.pool[r], pcfg.seed, pcfg.explicit_share)
            shots = tuple(self._shots[r] for r in neigh.shots[i] if r >= 0)
            out.append(prompts.parts_for(case, shots, cpt[i], icd[i], self.rules, pcfg.seed, pcfg.explicit_share))
        return out

    def prompts(self, cases: Sequence[Case], answer_tokens: int | Sequence[int] = ANSWER_RESERVE,
                progress: bool = False) -> list[Prompt | None]:
        """The prompt of each case, retrieved from the pool through the leakage defense and shortened
        as training shortens it (keeping ``answer_tokens`` free); None where even that cannot fit."""
        texts = [retrieval_text(c) for c in cases]
        fp, vectors = self.query_fingerprints(cases, texts, progress)
        neigh = self.search.search(texts, fp, np.full(len(cases), -1, np.int64), dense_queries=vectors,
                                   progress=progress)
        parts = self.parts(cases, neigh)
        reserve = [answer_tokens] * len(cases) if isinstance(answer_tokens, int) else list(answer_tokens)
        out: list[Prompt | None] = []
        for lo in range(0, len(cases), BATCH):
            hi = min(lo + BATCH, len(cases))
            encoded = self.encoder.encode(parts[lo:hi], reserve=reserve[lo:hi])
            for i, enc in zip(range(lo, hi), encoded):
                out.append(None if enc is None else self._prompt(cases[i], enc, neigh.shots[i], parts[i]))
        return out

    def prompt(self, case: Case, answer_tokens: int = ANSWER_RESERVE) -> Prompt:
        """The prompt of one case; raises InputError when its report cannot fit ``prompt.max_length``."""
        out = self.prompts([case], answer_tokens)[0]
        if out is None:
            raise InputError(f"record {case.id!r}: report_text does not fit prompt.max_length="
                             f"{self.prompt_cfg.max_length} even with the body cut to "
                             f"prompt.min_body_tokens={self.prompt_cfg.min_body_tokens}")
        return out

    def _prompt(self, case: Case, enc: Encoded, shot_rows: np.ndarray, parts: prompts.PromptParts) -> Prompt:
        return Prompt(case.id, self.system, enc.user, enc.input_ids[:enc.prompt_len], enc.stages,
                      tuple(self.pool[r].id for r in shot_rows if r >= 0), parts.cpt, parts.icd)

    # ------------------------------------------------------------------ saved form
    def settings(self) -> dict:
        """Everything besides the pool that decides a prompt (written to ``settings.json``)."""
        return {
            "system": self.system,
            "retrieval": to_dict(self.retrieval),
            "prompt": to_dict(self.prompt_cfg),
            "truncation_order": list(TRUNCATION_STAGES),
            "answer_reserve": ANSWER_RESERVE,
            "embedder": self.retrieval.embedding_model if self.retrieval.dense else None,  # None: packaged MiniLM
            "reranker": self.retrieval.reranker,
            "leakage": {"measure": self.search.guard.measure, "threshold": self.search.guard.threshold},
            "chat_template_sha256": chat_template_sha256(self.tokenizer),
            "icd10cm_release": icd10cm.release_name(),
            "pool_size": len(self.pool),
        }

    def save(self, folder: str | Path) -> str:
        """Write the preprocessor to ``folder`` (swapped in atomically); returns its ``preprocessor_id``."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            rows = [{**{k: getattr(c, k) for k in POOL_FIELDS}, "code_line": c.codes.to_dict()} for c in self.pool]
            write_atomic(tmp / "pool.jsonl", jsonl_text(rows, ensure_ascii=False))
            (tmp / "fingerprints").mkdir()
            for name in FINGERPRINT_FIELDS:
                np.save(tmp / "fingerprints" / f"{name}.npy", getattr(self.fingerprints, name), allow_pickle=False)
            self.search.bm25.save(tmp / "bm25")
            if self.search.dense is not None:
                self.search.dense.save(tmp / "dense.faiss")
            write_atomic(tmp / "rules.txt", self.rules)
            write_json(tmp / "settings.json", self.settings())
            files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = {"format": FORMAT, "files": files}
            self.id = sha256_text(json.dumps(manifest, sort_keys=True))
            write_json(tmp / "manifest.json", {"preprocessor_id": self.id, **manifest})
        return self.id

    @classmethod
    def load(cls, folder: str | Path, tokenizer) -> "Preprocessor":
        """The preprocessor saved in ``folder``, every file checked against the manifest's sha256.

        Raises NotFound (no manifest), VerificationError (a damaged or missing file, or a tokenizer
        chat template / ICD-10-CM release other than the one the prompts were built with)."""
        folder = Path(folder)
        manifest = verify(folder)
        settings = read_json(folder / "settings.json")
        if chat_template_sha256(tokenizer) != settings["chat_template_sha256"]:
            raise VerificationError(f"preprocessor {str(folder)!r}: the tokenizer's chat template (sha256 "
                                    f"{chat_template_sha256(tokenizer)[:12]}) is not the one its prompts were built "
                                    f"with ({settings['chat_template_sha256'][:12]})")
        if icd10cm.release_name() != settings["icd10cm_release"]:
            raise VerificationError(f"preprocessor {str(folder)!r}: built with ICD-10-CM release "
                                    f"{settings['icd10cm_release']!r}, loaded release is {icd10cm.release_name()!r}")
        retrieval, prompt = RetrievalConfig(**settings["retrieval"]), PromptConfig(**settings["prompt"])
        pool = [Case(**{k: r[k] for k in POOL_FIELDS}, codes=CodeLine.of(**r["code_line"]))
                for r in read_jsonl(folder / "pool.jsonl")]
        fp = Fingerprints(*(np.load(folder / "fingerprints" / f"{n}.npy", allow_pickle=False)
                            for n in FINGERPRINT_FIELDS))
        bm25 = Bm25Index.load(folder / "bm25", retrieval.bm25_query_terms, retrieval.bm25_threads)
        dense = DenseIndex.load(folder / "dense.faiss") if retrieval.dense else None
        pre = cls(pool, fp, retrieval, prompt, (folder / "rules.txt").read_text(encoding="utf-8"), tokenizer,
                  system=settings["system"], bm25=bm25, dense=dense)
        pre.id = manifest["preprocessor_id"]
        return pre


def verify(folder: str | Path) -> dict:
    """The manifest of the preprocessor in ``folder`` after checking every file's sha256 and the id."""
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        raise NotFound(f"no preprocessor at {str(folder)!r}: manifest.json is missing")
    manifest = read_json(folder / "manifest.json")
    body = {"format": manifest.get("format"), "files": manifest.get("files", {})}
    if manifest.get("preprocessor_id") != sha256_text(json.dumps(body, sort_keys=True)):
        raise VerificationError(f"preprocessor {str(folder)!r}: manifest.json is damaged (its preprocessor_id "
                                "is not the hash of its file list)")
    for rel, want in body["files"].items():
        path = folder / rel
        if not path.is_file():
            raise VerificationError(f"preprocessor {str(folder)!r}: file {rel!r} is missing")
        if sha256_file(path) != want:
            raise VerificationError(f"preprocessor {str(folder)!r}: file {rel!r} is damaged "
                                    f"(sha256 {sha256_file(path)[:12]}, manifest {want[:12]})")
    return manifest
