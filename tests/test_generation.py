"""Generation backends: batched greedy transformers (base and PEFT adapter), HTTP endpoint, vLLM guard."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nyxmed.generation import (BackendUnavailable, Chat, OpenAIChatGenerator, TransformersGenerator, _until_stop,
                               build_generator, load_transformers)
from nyxmed.prompts import render_prompt

CHATS = [Chat(f"r{i}", "You are a certified radiology coder.", "CT abdomen pelvis with contrast. " * (1 + 2 * i))
         for i in range(5)]


@pytest.fixture(scope="module")
def tiny_generator(tiny_base_dir):
    return TransformersGenerator.from_pretrained(str(tiny_base_dir), device="cpu", batch_size=4, max_new_tokens=12)


def test_batched_left_padded_equals_unbatched(tiny_generator):
    batched = tiny_generator.generate(CHATS, progress=False)
    one = TransformersGenerator(tiny_generator.model, tiny_generator.tokenizer, batch_size=1, max_new_tokens=12)
    assert tiny_generator.tokenizer.padding_side == "left"
    assert [g.text for g in batched] == [g.text for g in one.generate(CHATS, progress=False)]
    assert all(1 <= g.new_tokens <= 12 for g in batched)


def test_generation_matches_a_direct_greedy_call(tiny_generator):
    import torch

    tok, model = tiny_generator.tokenizer, tiny_generator.model
    ids = tok(render_prompt(tok, CHATS[2].system, CHATS[2].user), add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, eos_token_id=tiny_generator.stop_ids,
                             pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert tiny_generator.generate([CHATS[2]], progress=False)[0].text == expected


def test_stop_at_end_of_turn():
    assert _until_stop([5, 6, 9, 1, 1], [9]) == [5, 6, 9]
    assert _until_stop([5, 6], [9]) == [5, 6]


def test_adapter_is_applied(tiny_base_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, tok = load_transformers(str(tiny_base_dir), device="cpu")
    # init_lora_weights=False: random B matrices, so the adapter really changes the outputs
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    with_adapter = TransformersGenerator.from_pretrained(str(tiny_base_dir), str(tmp_path / "adapter"), device="cpu",
                                                         max_new_tokens=8)
    assert type(with_adapter.model).__name__.startswith("Peft")
    plain = TransformersGenerator.from_pretrained(str(tiny_base_dir), device="cpu", max_new_tokens=8)
    assert [g.text for g in with_adapter.generate(CHATS, False)] != [g.text for g in plain.generate(CHATS, False)]
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_transformers(str(tiny_base_dir), str(tmp_path), device="cpu")


class CannedChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in: answers from ``server.answers`` keyed by the user message."""

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        user = body["messages"][-1]["content"]
        if self.path != "/v1/chat/completions" or user not in self.server.answers:
            self.send_response(404 if self.path != "/v1/chat/completions" else 500)
            self.end_headers()
            self.wfile.write(b"no canned answer")
            return
        reply = {"choices": [{"message": {"role": "assistant", "content": self.server.answers[user]}}],
                 "usage": {"completion_tokens": 7}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def canned_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), CannedChat)
    server.answers, server.requests = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_openai_endpoint_backend(canned_server):
    canned_server.answers = {c.user: f"74177, , R10.8{i}" for i, c in enumerate(CHATS)}
    url = f"http://127.0.0.1:{canned_server.server_address[1]}/v1"
    gen = build_generator("openai", "served-model", endpoint=url, batch_size=3, max_new_tokens=64)
    out = gen.generate(CHATS, progress=False)
    assert [g.text for g in out] == [f"74177, , R10.8{i}" for i in range(5)]  # order kept despite parallel requests
    assert all(g.new_tokens == 7 for g in out)
    sent = canned_server.requests[0]
    assert sent["model"] == "served-model" and sent["temperature"] == 0.0 and sent["max_tokens"] == 64
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


def test_openai_endpoint_error_names_the_record(canned_server):
    url = f"http://127.0.0.1:{canned_server.server_address[1]}/v1"
    gen = OpenAIChatGenerator(url, "m", retries=0)
    with pytest.raises(RuntimeError, match="record 'r0'.*HTTP 500"):
        gen.generate(CHATS[:1], progress=False)


def test_backend_choice_errors(tiny_base_dir):
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        build_generator("tgi", "m")
    with pytest.raises(ValueError, match="needs an endpoint"):
        build_generator("openai", "m")
    with pytest.raises(ValueError, match="cannot apply an adapter"):
        build_generator("openai", "m", adapter="x", endpoint="http://127.0.0.1:1/v1")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_missing_is_a_clear_error(tiny_base_dir):
    with pytest.raises(BackendUnavailable, match="vLLM, which is not installed"):
        build_generator("vllm", str(tiny_base_dir))


def test_vllm_wiring_with_a_recording_engine(tiny_base_dir, tmp_path, monkeypatch):
    """What VllmGenerator hands vLLM (no GPU here, so a recording stand-in engine; the real run is GPU-only)."""
    import sys
    import types

    from transformers import AutoTokenizer

    calls = {}

    class LLM:
        def __init__(self, **kwargs):
            calls["engine"] = kwargs

        def get_tokenizer(self):
            return AutoTokenizer.from_pretrained(str(tiny_base_dir))

        def generate(self, prompts, params, lora_request=None, use_tqdm=True):
            calls.update(prompts=prompts, params=params, lora=lora_request)
            out = types.SimpleNamespace(text="74177, , R10.84", token_ids=[1, 2, 3])
            return [types.SimpleNamespace(outputs=[out]) for _ in prompts]

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LoRARequest:
        def __init__(self, name, int_id, path):
            self.args = (name, int_id, path)

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    lora_mod = types.ModuleType("vllm.lora.request")
    lora_mod.LoRARequest = LoRARequest
    for name, mod in (("vllm", vllm), ("vllm.lora", types.ModuleType("vllm.lora")), ("vllm.lora.request", lora_mod)):
        monkeypatch.setitem(sys.modules, name, mod)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 16}))
    gen = build_generator("vllm", str(tiny_base_dir), adapter=str(tmp_path), max_new_tokens=64, tensor_parallel_size=4)
    out = gen.generate(CHATS[:2], progress=False)
    assert [(g.text, g.new_tokens) for g in out] == [("74177, , R10.84", 3)] * 2
    assert calls["engine"]["enable_lora"] is True and calls["engine"]["max_lora_rank"] == 16
    assert calls["engine"]["tensor_parallel_size"] == 4 and calls["engine"]["model"] == str(tiny_base_dir)
    assert calls["lora"].args == ("nyxmed-adapter", 1, str(tmp_path))  # applied per request, not merged
    tok = gen.tokenizer
    assert calls["params"].kwargs["temperature"] == 0.0 and calls["params"].kwargs["max_tokens"] == 64
    assert tok.convert_tokens_to_ids("<|eot_id|>") in calls["params"].kwargs["stop_token_ids"]
    assert calls["prompts"][0] == render_prompt(tok, CHATS[0].system, CHATS[0].user)
