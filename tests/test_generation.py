"""Generation backends: batched greedy transformers (base and PEFT adapter), HTTP endpoint, vLLM guard."""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nyxmed.errors import NyxmedError, RemoteError
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
    """An OpenAI-compatible stand-in under /v1: answers from ``server.answers`` keyed by the user message.

    Optional server attributes: ``models`` (served ids, None for a non-JSON page), ``error`` ((status, JSON body)
    for every chat request), ``usage`` (False: answers without ``usage``).
    """

    def _send(self, status: int, data: bytes, content_type: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server naming)
        self.server.gets = [*getattr(self.server, "gets", []), self.path]
        models = getattr(self.server, "models", ("served-model", "nyxmed-v17"))
        if self.path != "/v1/models":
            self._send(404, json.dumps({"detail": "Not Found"}).encode())
        elif models is None:
            self._send(200, b"<html>welcome</html>", "text/html")
        else:
            self._send(200, json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]}).encode())

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        user = body["messages"][-1]["content"]
        if getattr(self.server, "error", None):
            status, error = self.server.error
            self._send(status, json.dumps(error).encode())
            return
        if self.path != "/v1/chat/completions" or user not in self.server.answers:
            self._send(404 if self.path != "/v1/chat/completions" else 500, b"no canned answer", "text/plain")
            return
        reply = {"choices": [{"message": {"role": "assistant", "content": self.server.answers[user]}}]}
        if getattr(self.server, "usage", True):
            reply["usage"] = {"completion_tokens": 7}
        self._send(200, json.dumps(reply).encode())

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


def _url(server, path="/v1"):
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_openai_endpoint_backend(canned_server):
    canned_server.answers = {c.user: f"74177, , R10.8{i}" for i, c in enumerate(CHATS)}
    url = _url(canned_server)
    gen = build_generator("openai", "served-model", endpoint=url, batch_size=3, max_new_tokens=64)
    assert canned_server.gets == ["/v1/models"]  # the server was checked before the run
    out = gen.generate(CHATS, progress=False)
    assert [g.text for g in out] == [f"74177, , R10.8{i}" for i in range(5)]  # order kept despite parallel requests
    assert all(g.new_tokens == 7 for g in out)
    sent = canned_server.requests[0]
    assert sent["model"] == "served-model" and sent["temperature"] == 0.0 and sent["max_tokens"] == 64
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


def test_openai_endpoint_error_names_the_record(canned_server, monkeypatch):
    sleeps = []
    monkeypatch.setattr("nyxmed.generation.time.sleep", sleeps.append)
    gen = OpenAIChatGenerator(_url(canned_server), "m", retries=2)
    with pytest.raises(RemoteError) as err:
        gen.generate(CHATS[:1], progress=False)
    assert str(err.value) == (f"record 'r0': {_url(canned_server)}/chat/completions answered HTTP 500 "
                              "Internal Server Error: no canned answer")
    assert len(canned_server.requests) == 3 and sleeps == [1, 2]  # a 5xx is retried
    assert isinstance(err.value, NyxmedError) and err.value.exit_code == 6


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}},
         "answered HTTP 400 Bad Request: max_tokens is too large"),
        (404, {"object": "error", "message": "The model `m` does not exist.", "code": 404},
         "answered HTTP 404 Not Found: The model `m` does not exist."),
        (401, {"detail": "invalid key"},
         "answered HTTP 401 Unauthorized: invalid key; the API key is read from $NYXMED_TEST_KEY, which is not set"),
    ],
)
def test_openai_endpoint_4xx_gives_the_status_and_the_servers_message(canned_server, monkeypatch, status, body,
                                                                      expected):
    monkeypatch.delenv("NYXMED_TEST_KEY", raising=False)
    canned_server.error = (status, body)
    gen = OpenAIChatGenerator(_url(canned_server), "m", api_key_env="NYXMED_TEST_KEY")
    with pytest.raises(RemoteError) as err:
        gen.generate(CHATS[:1], progress=False)
    assert str(err.value) == f"record 'r0': {_url(canned_server)}/chat/completions {expected}"
    assert len(canned_server.requests) == 1  # a 4xx is not retried


def test_openai_check_names_the_served_models(canned_server):
    with pytest.raises(RemoteError) as err:
        build_generator("openai", "nyxmed-v18", endpoint=_url(canned_server))
    assert str(err.value) == (f"{_url(canned_server)} does not serve model 'nyxmed-v18'; it serves 'served-model', "
                              "'nyxmed-v17': pass one of those as the model")
    assert canned_server.requests == []  # nothing was generated
    canned_server.models = ()
    with pytest.raises(RemoteError, match="it serves no models"):
        build_generator("openai", "served-model", endpoint=_url(canned_server))


def test_openai_check_hints_v1_on_404(canned_server):
    base = _url(canned_server, "")
    with pytest.raises(RemoteError) as err:
        build_generator("openai", "served-model", endpoint=base + "/")
    assert str(err.value) == (f"{base}/models answered HTTP 404 Not Found: Not Found; OpenAI-compatible servers "
                              f"answer under /v1: try endpoint {base}/v1")
    # a full chat-completions URL works as the endpoint too
    assert build_generator("openai", "served-model", endpoint=base + "/v1/chat/completions").url == \
        base + "/v1/chat/completions"


def test_openai_check_refuses_a_page_that_is_not_json(canned_server):
    canned_server.models = None
    with pytest.raises(RemoteError, match=r"/v1/models answered with something that is not JSON: b'<html>"):
        build_generator("openai", "served-model", endpoint=_url(canned_server))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_openai_closed_port_is_one_clear_error(monkeypatch):
    monkeypatch.setattr("nyxmed.generation.time.sleep", lambda s: None)
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(RemoteError, match=rf"^cannot reach {url}/models: .*Connection refused.*; is the server running\?$"):
        build_generator("openai", "m", endpoint=url)
    with pytest.raises(RemoteError, match=rf"^record 'r0': cannot reach {url}/chat/completions: .*Connection refused"):
        OpenAIChatGenerator(url, "m", retries=1).generate(CHATS[:1], progress=False)


def test_openai_timeout_is_one_clear_error():
    with socket.socket() as sock:  # listens but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        with pytest.raises(RemoteError, match=rf"^{url}/models did not answer within 0.5 s$"):
            OpenAIChatGenerator(url, "m", timeout_s=0.5).check_server()


def test_openai_missing_usage_warns_once(canned_server, caplog):
    canned_server.answers = {c.user: "74177, , R10.84" for c in CHATS}
    canned_server.usage = False
    gen = build_generator("openai", "served-model", endpoint=_url(canned_server), batch_size=3)
    with caplog.at_level(logging.WARNING, logger="nyxmed.generation"):
        out = gen.generate(CHATS, progress=False)
    assert [g.text for g in out] == ["74177, , R10.84"] * 5 and all(g.new_tokens == 0 for g in out)
    warnings = [r.getMessage() for r in caplog.records if r.name == "nyxmed.generation"]
    assert warnings == [(f"{_url(canned_server)}/chat/completions sends no usage.completion_tokens: generated "
                         "tokens (and tokens/s) are recorded as 0 for this run")]


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


def test_openai_constrained_sends_the_grammar_in_structured_outputs(canned_server):
    from nyxmed.constrained import GrammarSettings, code_line_ebnf

    canned_server.answers = {CHATS[0].user: "74177, , R10.84"}
    settings = GrammarSettings(icd="valid", max_icd=2)
    gen = build_generator("openai", "served-model", endpoint=_url(canned_server), grammar=settings)
    assert gen.generate(CHATS[:1], progress=False)[0].text == "74177, , R10.84"
    sent = canned_server.requests[0]
    assert sent["structured_outputs"] == {"grammar": code_line_ebnf(settings)}
    assert 'icds ::= icd (", " icd){0,1}' in sent["structured_outputs"]["grammar"]
    assert not [k for k in sent if k.startswith("guided_")]  # ignored by current vLLM: never sent


def test_vllm_constrained_passes_structured_outputs(tiny_base_dir, monkeypatch):
    """Against vLLM's documented API (SamplingParams(structured_outputs=StructuredOutputsParams(grammar=...)))."""
    import sys
    import types

    from nyxmed.constrained import GrammarSettings, code_line_ebnf

    class Recorder:
        def __init__(self, *args, **kwargs):
            self.kwargs = kwargs

        def get_tokenizer(self):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(tiny_base_dir))

    vllm, sampling = types.ModuleType("vllm"), types.ModuleType("vllm.sampling_params")
    vllm.LLM, vllm.SamplingParams, sampling.StructuredOutputsParams = Recorder, Recorder, Recorder
    lora_mod = types.ModuleType("vllm.lora.request")
    lora_mod.LoRARequest = Recorder
    for name, mod in (("vllm", vllm), ("vllm.sampling_params", sampling), ("vllm.lora", types.ModuleType("vllm.lora")),
                      ("vllm.lora.request", lora_mod)):
        monkeypatch.setitem(sys.modules, name, mod)
    gen = build_generator("vllm", str(tiny_base_dir), grammar=GrammarSettings())
    assert gen.params.kwargs["structured_outputs"].kwargs == {"grammar": code_line_ebnf(GrammarSettings())}
    assert build_generator("vllm", str(tiny_base_dir)).params.kwargs["structured_outputs"] is None
