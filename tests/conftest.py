"""Shared fixtures: a locally built Llama-3-style tokenizer and a tiny Llama base (no downloads)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _corpus() -> list[str]:
    """Radiology words and real codes, enough for a byte-level BPE to learn useful merges."""
    from nyxmed.codes import icd10cm

    words = ("CT abdomen pelvis with contrast without MRI brain knee ultrasound duplex venous lower "
             "extremity bilateral left right chest radiograph two views findings impression no acute "
             "abnormality fracture pain mass nodule effusion reason for exam exam description")
    codes = " ".join(icd10cm.all_billable()[::400])
    return [words, codes, "74177, 26, R10.84, K57.30", "73721, RT 26, M25.561", "93970, , I83.93"] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from nyxmed.tiny import build_tokenizer

    return build_tokenizer(_corpus(), vocab_size=512)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny Llama base folder (model + tokenizer + generation config)."""
    from nyxmed.tiny import build_tiny_model, save_base

    out = tmp_path_factory.mktemp("tiny_base")
    return save_base(build_tiny_model(tiny_tokenizer, seed=0), tiny_tokenizer, out)


@pytest.fixture(scope="session")
def pg_dsn():
    """DSN of a real PostgreSQL server; CI must have one, so there it fails instead of skipping."""
    dsn = os.environ.get("NYXMED_PG_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but NYXMED_PG_DSN is not set: .ci/run must start PostgreSQL")
        pytest.skip("NYXMED_PG_DSN not set (no PostgreSQL server)")
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=5):
            pass
    except Exception as exc:  # a server that is not there is a failure in CI, a skip elsewhere
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at NYXMED_PG_DSN is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    return dsn
