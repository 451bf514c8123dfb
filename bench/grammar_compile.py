"""Compile time and size of the code-line grammar for a vocabulary of Llama-3's size. JSON to stdout.

The Llama-3 tokenizer cannot be downloaded here, so this trains a byte-level BPE with Llama-3's
pre-tokenizer regex and special tokens (``nyxmed.tiny.build_tokenizer``) to ``--vocab-size``
(Llama-3: 128,256) on a corpus of text files (default: the Python sources of this environment,
which are large and varied enough to fill the merges), then compiles the grammar for each setting
(``nyxmed.constrained.compile_code_line``, uncached) and prints the seconds and bytes. The
vocabulary is of Llama-3's size and kind, not Llama-3's: a real tokenizer folder can be given
with ``--tokenizer`` (e.g. a downloaded meta-llama/Meta-Llama-3-70B-Instruct).

    python bench/grammar_compile.py
    python bench/grammar_compile.py --tokenizer /models/Meta-Llama-3-70B-Instruct
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def corpus_texts(root: Path, max_bytes: int):
    """Text of the ``.py`` files below ``root``, up to ``max_bytes`` in all, in a fixed order."""
    seen = 0
    for path in sorted(root.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        seen += len(text)
        yield text
        if seen >= max_bytes:
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="a real tokenizer folder (skips the training)")
    ap.add_argument("--vocab-size", type=int, default=128_256)
    ap.add_argument("--corpus", default=str(Path(sys.prefix) / "lib"), help="folder of .py files to train on")
    ap.add_argument("--corpus-mb", type=int, default=150)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from nyxmed.constrained import GrammarSettings, _CACHE, compile_code_line
    from nyxmed.generation import _stop_token_ids
    from nyxmed.tiny import build_tokenizer

    start = time.perf_counter()
    if args.tokenizer:
        tokenizer, source = AutoTokenizer.from_pretrained(args.tokenizer), args.tokenizer
    else:
        tokenizer = build_tokenizer(corpus_texts(Path(args.corpus), args.corpus_mb << 20), args.vocab_size, "llama3")
        source = (f"byte-level BPE trained here on {args.corpus_mb} MB of .py files under {args.corpus} "
                  "(Llama-3 pre-tokenizer regex and special tokens; not Llama-3's vocabulary)")
    train_s = time.perf_counter() - start
    stops = _stop_token_ids(tokenizer)
    rows = []
    for name, settings in (("billable (default)", GrammarSettings()), ("valid", GrammarSettings(icd="valid")),
                           ("billable, cpt any", GrammarSettings(cpt="any"))):
        _CACHE.clear()
        compiled = compile_code_line(tokenizer, stops, settings)
        rows.append({"grammar": name, "compile_seconds": round(compiled.compile_seconds, 2),
                     "memory_bytes": compiled.memory_bytes, "python_peak_bytes": compiled.peak_python_bytes})
    print(json.dumps({"tokenizer": source, "vocab_size": len(tokenizer), "tokenizer_seconds": round(train_s, 1),
                      "grammars": rows}, indent=1))


if __name__ == "__main__":
    main()
