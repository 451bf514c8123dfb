"""`nyxmed serve`: the real server in a subprocess, spoken to with a real HTTP client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from nyxmed.config import load_recipe
from nyxmed.dataset import build_dataset
from nyxmed.synth import generate_cases

httpx = pytest.importorskip("httpx")
TOKEN = "s3cret-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_tokenizer, tiny_base_dir, tiny_adapter_dir):
    out = tmp_path_factory.mktemp("serve")
    recipe = load_recipe(None, [f"data.out_dir={out / 'data'}", "data.heldout_size=10", "data.val_size=5",
                                "retrieval.dense=false", "prompt.max_length=3900"])
    build_dataset(recipe, tiny_tokenizer, generate_cases(80, 3), progress=False)
    port = _free_port()
    env = {**os.environ, "NYXMED_TEST_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "nyxmed", "serve", "--model", str(tiny_base_dir), "--adapter", str(tiny_adapter_dir),
           "--preprocessor", str(out / "data" / "preprocessor"), "--port", str(port), "--token-env",
           "NYXMED_TEST_TOKEN", "max_new_tokens=6", "device=cpu", "max_request_bytes=20000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("server did not come up in 120 s")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_code_one_and_many_reports(server):
    one = httpx.post(f"{server}/v1/code", json={"id": "r1", "report_text": "CT abdomen. Impression: appendicitis."},
                     headers=_auth(), timeout=120)
    assert one.status_code == 200, one.text
    (result,) = one.json()["results"]
    assert result["id"] == "r1" and set(result) >= {"code_line", "cpt", "modifiers", "icd", "invalid_codes",
                                                      "issues", "version", "preprocessor_id"}
    release = httpx.get(f"{server}/v1/release", headers=_auth(), timeout=10).json()
    assert result["preprocessor_id"] == release["preprocessor_id"] and len(release["preprocessor_id"]) == 64
    # serve decodes under the code-line grammar by default, and says so (the grammar's settings)
    assert result["constrained"] is True and release["constrained"]["cpt"] == "radiology"
    many = httpx.post(f"{server}/v1/code", headers=_auth(), timeout=120, json={"reports": [
        {"id": "a", "report_text": "MRI brain without contrast.", "cpt": ["70551"]},  # gold ignored
        {"id": "b", "report_text": "Chest radiograph two views.", "exam_description": "XR chest"}]})
    assert many.status_code == 200 and [r["id"] for r in many.json()["results"]] == ["a", "b"]


def test_token_size_limit_and_bad_input(server):
    body = {"id": "r1", "report_text": "CT head."}
    assert httpx.post(f"{server}/v1/code", json=body, timeout=10).status_code == 401
    assert httpx.post(f"{server}/v1/code", json=body, headers={"Authorization": "Bearer wrong"},
                      timeout=10).status_code == 401
    assert httpx.get(f"{server}/v1/release", timeout=10).status_code == 401
    big = httpx.post(f"{server}/v1/code", json={"id": "r1", "report_text": "x" * 30000}, headers=_auth(), timeout=10)
    assert big.status_code == 413
    empty = httpx.post(f"{server}/v1/code", json={"reports": [{"id": "r1", "report_text": "  "}]},
                       headers=_auth(), timeout=10)
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "reports", 0, "report_text"]
    dup = httpx.post(f"{server}/v1/code", json={"reports": [body, body]}, headers=_auth(), timeout=10)
    assert dup.status_code == 422 and "duplicate id" in dup.text
    wrong_type = httpx.post(f"{server}/v1/code", json={"id": "r1", "report_text": 5}, headers=_auth(), timeout=10)
    assert wrong_type.status_code == 422 and "report_text" in wrong_type.text
