"""Coding new reports: a release's preprocessor makes the prompt, a generator writes the code line.

A :class:`Coder` is what a release is for: the adapter (behind a :class:`~nyxmed.generation.Generator`)
plus the :class:`~nyxmed.preprocessor.Preprocessor` its training prompts were made with. Reports
carry no gold codes; any that are present are ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from nyxmed.cases import Case, InvalidCase, report_case_from_record
from nyxmed.codeline import parse
from nyxmed.codes import cpt as cpt_codes
from nyxmed.errors import NotFound, UsageError, VerificationError
from nyxmed.generation import Chat, Generator
from nyxmed.io import sha256_file
from nyxmed.releases.staging import PREPROCESSOR_DIR
from nyxmed.training.artifacts import ADAPTER_WEIGHTS


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
    constrained: bool = False  # decoded under the code-line grammar (nyxmed.constrained)

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
                 adapter_sha256: str | None = None, cpt_table: cpt_codes.CptTable | None = None,
                 grammar: Any = None):
        self.preprocessor, self.generator = preprocessor, generator
        self.version, self.adapter_sha256, self.cpt_table = version, adapter_sha256, cpt_table
        self.grammar = grammar  # the GrammarSettings the generator decodes under, or None

    def describe(self) -> dict[str, Any]:
        """What codes the reports: version, preprocessor id, adapter sha256 and the grammar (or None)."""
        return {"version": self.version, "preprocessor_id": self.preprocessor.id,
                "adapter_sha256": self.adapter_sha256,
                "constrained": asdict(self.grammar) if self.grammar is not None else None}

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
                           self.preprocessor.id, self.adapter_sha256, tuple(truncated), self.grammar is not None)



@dataclass(frozen=True)
class ReleaseParts:
    """What codes for a release: its version, model folder (adapter or merged), preprocessor and base."""

    version: str
    kind: str  # adapter | frozen | merged
    folder: Path
    preprocessor: Path | None  # None: published without it (a Hub release by default)
    preprocessor_id: str | None
    base_model: str | None
    adapter_sha256: str | None


def release_parts(registry: Any, version: str | None = None) -> ReleaseParts:
    """The parts of ``version`` (default: production) in a local registry; raises NotFound when
    there is no production version."""
    version = version or registry.production()
    if version is None:
        raise NotFound(f"{registry!r} has no production version: promote one, or pass --version")
    if not hasattr(registry, "path"):
        raise UsageError(f"{registry!r}: code from a Hub release by downloading it (`hf download REPO --revision "
                         f"{version}`) and passing --adapter/--model and --preprocessor")
    registry.verify(version)
    folder, release = registry.path(version), registry.release(version)
    pre = release.get("preprocessor") or {}
    pre_dir = folder / PREPROCESSOR_DIR if pre.get("complete") else None
    weights = release["files"].get(ADAPTER_WEIGHTS, {}).get("sha256")
    return ReleaseParts(version, release["kind"], folder, pre_dir, pre.get("id"), release.get("base_model"), weights)


def check_preprocessor(preprocessor: Any, parts: ReleaseParts) -> None:
    """Refuse a preprocessor other than the one the release's adapter was trained with."""
    if parts.preprocessor_id is None:
        return  # released before releases carried their preprocessor: nothing to compare with
    if preprocessor.id != parts.preprocessor_id:
        raise VerificationError(f"preprocessor {preprocessor.id[:12]} is not release {parts.version}'s "
                                f"({parts.preprocessor_id[:12]}): its prompts would differ from training's")


def missing_preprocessor(parts: ReleaseParts) -> NotFound:
    """The error for a release published without its preprocessor (its pool holds training reports)."""
    return NotFound(f"release {parts.version} carries only its preprocessor's manifest (id "
                    f"{(parts.preprocessor_id or '?')[:12]}): its retrieval pool holds training reports and is not "
                    f"published by default; pass --preprocessor DIR with the <data.out_dir>/preprocessor it was built "
                    f"with")


def load_coder(*, model: str | None = None, adapter: str | None = None, preprocessor: str | None = None,
               release: str | None = None, version: str | None = None, backend: str = "transformers",
               endpoint: str | None = None, batch_size: int = 4, max_new_tokens: int = 64, dtype: str = "auto",
               device: str = "auto", api_key_env: str = "OPENAI_API_KEY", tensor_parallel_size: int = 1,
               tokenizer: str | None = None, cpt_table: cpt_codes.CptTable | None = None,
               grammar: Any = None) -> Coder:
    """A Coder from a local release registry (``release``: its production version, or ``version``) or from
    explicit ``model`` / ``adapter`` / ``preprocessor`` (then ``version`` only labels the results). With
    ``backend="openai"`` ``model`` is the served name of the release's merged model on ``endpoint``; the
    preprocessor still comes from the release."""
    from transformers import AutoTokenizer

    from nyxmed.generation import build_generator
    from nyxmed.preprocessor import Preprocessor
    from nyxmed.releases import LocalRegistry

    parts = None
    if release is not None:
        parts = release_parts(LocalRegistry(release), version)
        if parts.kind == "merged":
            model = model or str(parts.folder)
        else:
            adapter = adapter or (None if backend == "openai" else str(parts.folder))
            model = model or parts.base_model
        preprocessor = preprocessor or (str(parts.preprocessor) if parts.preprocessor else None)
        if preprocessor is None:
            raise missing_preprocessor(parts)
    if not model:
        raise UsageError("give --model (the base the adapter was trained on, or a merged model), or --release")
    if not preprocessor:
        raise UsageError("give --preprocessor (<data.out_dir>/preprocessor of the dataset the adapter was trained "
                         "on), or --release")
    tokenizer_from = tokenizer or (str(parts.folder) if parts else (adapter or model))
    pre = Preprocessor.load(preprocessor, AutoTokenizer.from_pretrained(tokenizer_from))
    if parts is not None:
        check_preprocessor(pre, parts)
    generator = build_generator(backend, model, adapter, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                dtype=dtype, device=device, endpoint=endpoint, api_key_env=api_key_env,
                                tensor_parallel_size=tensor_parallel_size, grammar=grammar, cpt_table=cpt_table)
    weights = Path(adapter) / ADAPTER_WEIGHTS if adapter else None
    adapter_sha256 = parts.adapter_sha256 if parts else (sha256_file(weights) if weights and weights.is_file() else None)
    return Coder(pre, generator, parts.version if parts else version, adapter_sha256, cpt_table, grammar)


@dataclass(frozen=True)
class CodingRun:
    """Coded reports, rejects (id, line, field, reason) and counts where read = coded + rejected."""

    coded: list[CodedReport]
    rejects: list[dict[str, Any]]
    counts: dict[str, int]


def coder_from_config(cfg: Any) -> Coder:
    """The :class:`Coder` a :class:`~nyxmed.config.CodeConfig` names (:func:`load_coder`)."""
    from nyxmed.constrained import GrammarSettings

    table = cpt_codes.load_cpt_table(cfg.cpt_table)
    return load_coder(model=cfg.model, adapter=cfg.adapter, preprocessor=cfg.preprocessor, release=cfg.release,
                      version=cfg.version, backend=cfg.backend, endpoint=cfg.endpoint, batch_size=cfg.batch_size,
                      max_new_tokens=cfg.max_new_tokens, dtype=cfg.dtype, device=cfg.device,
                      api_key_env=cfg.api_key_env, tensor_parallel_size=cfg.tensor_parallel_size,
                      tokenizer=cfg.tokenizer, cpt_table=table,
                      grammar=GrammarSettings.of(cfg) if cfg.constrained else None)


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
