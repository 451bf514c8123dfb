"""Coding new reports: a release's preprocessor makes the prompt, a generator writes the code line.

A :class:`Coder` is what a release is for: the adapter (behind a :class:`~nyxmed.generation.Generator`)
plus the :class:`~nyxmed.preprocessor.Preprocessor` its training prompts were made with. Reports
carry no gold codes; any that are present are ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from nyxmed.cases import Case, InvalidCase, report_case_from_record
from nyxmed.codeline import parse
from nyxmed.codes import cpt as cpt_codes
from nyxmed.generation import Chat, Generator


@dataclass(frozen=True)
class CodedReport:
    """One coded report: the model's line, its parsed codes, what fails the code systems, provenance."""

    id: str
    code_line: str
    cpt: tuple[str, ...]
    modifiers: tuple[str, ...]
    icd: tuple[str, ...]
    invalid_codes: tuple[str, ...]
    issues: tuple[str, ...]
    version: str | None
    preprocessor_id: str
    adapter_sha256: str | None
    truncated: tuple[str, ...] = ()  # prompt shortening stages applied (as training shortens)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Uncoded:
    """A report that could not be coded, with the field and the reason (a reject line)."""

    id: str | None
    field: str
    reason: str


class Coder:
    """Code reports with ``preprocessor`` (prompts) and ``generator`` (the release's model)."""

    def __init__(self, preprocessor: Any, generator: Generator, version: str | None = None,
                 adapter_sha256: str | None = None, cpt_table: cpt_codes.CptTable | None = None):
        self.preprocessor, self.generator = preprocessor, generator
        self.version, self.adapter_sha256, self.cpt_table = version, adapter_sha256, cpt_table

    def describe(self) -> dict[str, Any]:
        """What codes the reports: version, preprocessor id and adapter sha256."""
        return {"version": self.version, "preprocessor_id": self.preprocessor.id,
                "adapter_sha256": self.adapter_sha256}

    def code(self, cases: Sequence[Case], progress: bool = False) -> tuple[list[CodedReport], list[Uncoded]]:
        """Coded reports in input order, and the reports whose prompt cannot fit even when shortened."""
        made = self.preprocessor.prompts(list(cases), progress=progress)
        ready = [(c, p) for c, p in zip(cases, made) if p is not None]
        uncoded = [Uncoded(c.id, "report_text", "does not fit the prompt budget even with the body cut")
                   for c, p in zip(cases, made) if p is None]
        outputs = self.generator.generate([Chat(c.id, p.system, p.user) for c, p in ready], progress=progress)
        return [self._coded(c.id, g.text, p.truncated) for (c, p), g in zip(ready, outputs)], uncoded

    def code_text(self, report_text: str, record_id: str = "text", **fields: str) -> CodedReport:
        """Code one report given as text (``exam_description``, ``reason_for_exam`` optional)."""
        case = report_case_from_record({"id": record_id, "report_text": report_text, **fields})
        coded, uncoded = self.code([case])
        if uncoded:
            raise InvalidCase(record_id, uncoded[0].field, uncoded[0].reason)
        return coded[0]

    def _coded(self, record_id: str, text: str, truncated: tuple[str, ...]) -> CodedReport:
        parsed = parse(text)
        line = parsed.line
        return CodedReport(record_id, text.strip(), line.cpt, line.modifiers, line.icd,
                           tuple(line.invalid_codes(self.cpt_table)), parsed.issues, self.version,
                           self.preprocessor.id, self.adapter_sha256, tuple(truncated))



@dataclass(frozen=True)
class CodingRun:
    """Coded reports, rejects (id, line, field, reason) and counts where read = coded + rejected."""

    coded: list[CodedReport]
    rejects: list[dict[str, Any]]
    counts: dict[str, int]


def load_coder(cfg: Any) -> Coder:
    """A :class:`Coder` from a :class:`~nyxmed.config.CodeConfig`: tokenizer, preprocessor, generator, CPT table."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from nyxmed.generation import build_generator
    from nyxmed.io import sha256_file
    from nyxmed.preprocessor import Preprocessor
    from nyxmed.training.artifacts import ADAPTER_WEIGHTS

    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    preprocessor = Preprocessor.load(cfg.preprocessor, tokenizer)
    generator = build_generator(cfg.backend, cfg.model, cfg.adapter, cfg.batch_size, cfg.max_new_tokens, cfg.dtype,
                                cfg.device, cfg.endpoint, cfg.api_key_env, cfg.tensor_parallel_size)
    weights = Path(cfg.adapter or "") / ADAPTER_WEIGHTS
    return Coder(preprocessor, generator, cfg.version, sha256_file(weights) if cfg.adapter and weights.is_file() else None,
                 cpt_codes.load_cpt_table(cfg.cpt_table))


def code_reports(coder: Coder, source: Any = None, text: str | None = None, progress: bool = True) -> CodingRun:
    """Code the reports of ``source`` (read with rejects, gold codes ignored) or the one report ``text``."""
    from nyxmed.sources import read_cases

    rejects: list[dict[str, Any]] = []
    if text is not None:
        try:
            cases = [report_case_from_record({"id": "text", "report_text": text})]
        except InvalidCase as exc:
            cases, rejects = [], [{"id": "text", "line": None, "field": exc.field, "reason": exc.reason}]
        read = 1
    else:
        result = read_cases(source, reports_only=True, progress=progress)
        cases, read = result.cases, result.counts["read"]
        rejects = [{"id": r.id, "line": r.record_no, "field": r.field, "reason": r.reason} for r in result.rejects]
    coded, uncoded = coder.code(cases, progress=progress) if cases else ([], [])
    rejects += [{"id": u.id, "line": None, "field": u.field, "reason": u.reason} for u in uncoded]
    return CodingRun(coded, rejects, {"read": read, "coded": len(coded), "rejected": len(rejects)})


def coding_table(run: CodingRun, show: int = 10):
    """A rich table of the first ``show`` coded reports and the counts."""
    from rich.table import Table

    table = Table(title=f"read {run.counts['read']}: coded {run.counts['coded']}, rejected {run.counts['rejected']}")
    for col in ("id", "code line", "invalid codes", "issues"):
        table.add_column(col)
    for c in run.coded[:show]:
        table.add_row(c.id, c.code_line, ", ".join(c.invalid_codes), "; ".join(c.issues))
    return table
