"""The code-line grammar: constrained decoding cannot produce a code outside the code systems.

The grammar (xgrammar EBNF) is the canonical line as :meth:`CodeLine.render` writes it, built
from :mod:`nyxmed.codes`: ``CPT[ CPT], [MOD[ MOD]], ICD[, ICD]``, then the end of the turn.
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from functools import lru_cache
from dataclasses import dataclass
from typing import Sequence

from nyxmed.codes import cpt as cpt_codes
from nyxmed.codes import icd10cm, modifiers as mod_codes
from nyxmed.errors import UsageError
from nyxmed.io import sha256_text

ICD_SETS = ("billable", "valid")
CPT_SETS = ("radiology", "any")

# Without a licensed table: `any` = every code valid by shape (CptTable.is_valid), one rule per shape;
# `radiology` = cpt_codes.is_radiology_procedure (the radiology ranges, Category III, HCPCS Level II).
_CPT_SHAPES = '[0-9]{5} | [0-9]{4} [FT] | [A-V] [0-9]{4}'
_CPT_OUTSIDE_RANGES = '"0" [0-9]{3} "T" | [A-V] [0-9]{4}'


class ConstrainedUnavailable(UsageError):
    """Constrained decoding was asked for but xgrammar is not installed."""


@dataclass(frozen=True)
class GrammarSettings:
    """Which ICD-10-CM codes are allowed and how many codes each slot may hold."""

    icd: str = "billable"  # billable (leaves, claim-ready) | valid (any category or subcategory)
    max_cpt: int = 4
    max_modifiers: int = 3
    max_icd: int = 8
    cpt: str = "radiology"  # without a licensed table: radiology (ranges, III, HCPCS) | any (every shape)

    def __post_init__(self):
        if self.icd not in ICD_SETS:
            raise UsageError(f"constrained_icd must be one of {', '.join(ICD_SETS)}, got {self.icd!r}")
        if self.cpt not in CPT_SETS:
            raise UsageError(f"constrained_cpt must be one of {', '.join(CPT_SETS)}, got {self.cpt!r}")
        for name in ("max_cpt", "max_modifiers", "max_icd"):
            if getattr(self, name) < 1:
                raise UsageError(f"constrained_{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def of(cls, cfg) -> "GrammarSettings":
        """The settings of a config with ``constrained_icd`` / ``constrained_max_*`` fields (EvalConfig)."""
        return cls(cfg.constrained_icd, cfg.constrained_max_cpt, cfg.constrained_max_modifiers, cfg.constrained_max_icd,
                   cfg.constrained_cpt)


def _trie(codes: Sequence[str]) -> str:
    """The codes as one expression factored by shared prefixes: far faster to compile than a flat alternation."""
    root: dict = {}
    for code in codes:
        node = root
        for ch in code:
            node = node.setdefault(ch, {})
        node[""] = {}  # a code ends here

    def expr(node: dict) -> str:
        options = []
        for ch, child in sorted(node.items()):
            if not ch:
                continue
            text = ch
            while len(child) == 1 and "" not in child:  # a chain of single children is one literal
                (nxt, child), = child.items()
                text += nxt
            rest = expr(child) if child else ""
            options.append(f"{json.dumps(text)} {rest}".strip())
        body = " | ".join(options)
        if "" in node and options:
            return f"({body})?"
        return body if len(options) <= 1 else f"({body})"

    return expr(root)


def _bounded(rule: str, sep: str, most: int) -> str:
    """``rule`` once, then up to ``most - 1`` more, each after ``sep``."""
    return rule if most == 1 else f'{rule} ({json.dumps(sep)} {rule}){{0,{most - 1}}}'


def icd_codes(settings: GrammarSettings) -> tuple[str, ...]:
    """The ICD-10-CM codes the grammar allows, dotted as rendered, from the loaded release."""
    return icd10cm.all_billable() if settings.icd == "billable" else icd10cm.all_valid()


def code_line_ebnf(settings: GrammarSettings = GrammarSettings(), cpt_table: cpt_codes.CptTable | None = None) -> str:
    """The EBNF of a canonical code line; CPT codes from ``cpt_table`` when it is a licensed table."""
    table = tuple(sorted(cpt_table.descriptions)) if cpt_table and cpt_table.strict else ()
    return _ebnf(settings, table, icd10cm.release_name())


@lru_cache(maxsize=16)
def _ebnf(settings: GrammarSettings, table: tuple[str, ...], release: str) -> str:  # release: part of the key
    if table:
        cpt = _trie(table)
    elif settings.cpt == "any":
        cpt = _CPT_SHAPES
    else:
        cpt = f"{_trie(cpt_codes.radiology_codes())} | {_CPT_OUTSIDE_RANGES}"
    return "\n".join([
        'root ::= cpts ", " modifiers? ", " icds',
        f'cpts ::= {_bounded("cpt", " ", settings.max_cpt)}',
        f'modifiers ::= {_bounded("modifier", " ", settings.max_modifiers)}',
        f'icds ::= {_bounded("icd", ", ", settings.max_icd)}',
        f'cpt ::= {cpt}',
        f'modifier ::= {_trie(sorted(mod_codes.MODIFIERS))}',
        f'icd ::= {_trie(icd_codes(settings))}',
        "",
    ])


@dataclass(frozen=True)
class CompiledCodeLine:
    """A grammar compiled for one tokenizer, with what compiling it cost."""

    compiled: object  # xgrammar.CompiledGrammar
    ebnf: str
    compile_seconds: float
    memory_bytes: int  # the compiled grammar's own size (xgrammar's memory_size_bytes)
    peak_python_bytes: int  # Python allocations while building and compiling (tracemalloc peak)


def _xgrammar():
    try:
        import xgrammar
    except ImportError as exc:
        raise ConstrainedUnavailable("constrained decoding needs xgrammar: pip install 'nyxmed[constrained]' "
                                     "(or turn it off: constrained=false / --no-constrained)") from exc
    return xgrammar


def tokenizer_fingerprint(tokenizer, stop_token_ids: Sequence[int], vocab_size: int | None) -> str:
    """The tokenizer's vocabulary, stop tokens and model vocab size, hashed (the cache key's tokenizer part)."""
    return sha256_text(json.dumps([sorted(tokenizer.get_vocab().items()), sorted(stop_token_ids), vocab_size]))


_CACHE: dict[tuple[str, str], CompiledCodeLine] = {}
_LOCK = threading.Lock()


def compile_code_line(tokenizer, stop_token_ids: Sequence[int], settings: GrammarSettings = GrammarSettings(),
                      cpt_table: cpt_codes.CptTable | None = None, vocab_size: int | None = None) -> CompiledCodeLine:
    """Compile the code-line grammar for ``tokenizer``; cached by (tokenizer, code set and settings).

    The grammar text holds the code set (release, CPT table) and the settings, so its hash is that part of the key.
    ``vocab_size`` is the model's output size when it exceeds the tokenizer's (padded embeddings).
    """
    xgr = _xgrammar()
    tracemalloc.start()
    try:
        start = time.perf_counter()
        text = code_line_ebnf(settings, cpt_table)
        key = (tokenizer_fingerprint(tokenizer, stop_token_ids, vocab_size), sha256_text(text))
        with _LOCK:
            if key in _CACHE:
                return _CACHE[key]
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                      stop_token_ids=list(stop_token_ids))
            compiled = xgr.GrammarCompiler(info, cache_enabled=False).compile_grammar(text)
            result = CompiledCodeLine(compiled, text, time.perf_counter() - start, compiled.memory_size_bytes,
                                      tracemalloc.get_traced_memory()[1])
            _CACHE[key] = result
            return result
    finally:
        tracemalloc.stop()


def matches(compiled: CompiledCodeLine, token_ids: Sequence[int]) -> bool:
    """True when ``token_ids`` (ending with a stop token) are a complete line of the grammar."""
    matcher = _xgrammar().GrammarMatcher(compiled.compiled)
    return all(matcher.accept_token(int(t)) for t in token_ids) and matcher.is_terminated()


def accepts_text(compiled: CompiledCodeLine, text: str) -> bool:
    """True when ``text`` is a complete code line of the grammar (checked on characters, not tokens)."""
    matcher = _xgrammar().GrammarMatcher(compiled.compiled)
    return matcher.accept_string(text) and matcher.is_completed()


def logits_processor(compiled: CompiledCodeLine):
    """A fresh transformers logits processor for one ``generate`` call (xgrammar's own, one matcher per row)."""
    _xgrammar()
    from xgrammar.contrib.hf import LogitsProcessor

    return LogitsProcessor(compiled.compiled)
