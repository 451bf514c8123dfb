"""Batched greedy generation backends: transformers (base + PEFT adapter, or merged), vLLM, HTTP.

Every backend takes :class:`Chat` requests (system and user text) and returns one
:class:`Generation` per request, in order: greedy, at most ``max_new_tokens``, stopping at the
end of the assistant turn (``<|eot_id|>``). With ``grammar`` (:class:`GrammarSettings`) every
backend decodes under the code-line grammar (:mod:`nyxmed.constrained`).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from tqdm.auto import tqdm

from nyxmed.codes.cpt import CptTable
from nyxmed.constrained import GrammarSettings, code_line_ebnf
from nyxmed.errors import NotFound, RemoteError, UsageError
from nyxmed.prompts import render_prompt  # the one prompt path, shared with training

log = logging.getLogger(__name__)

END_OF_TURN = "<|eot_id|>"
BACKENDS = ("transformers", "vllm", "openai")


class BackendUnavailable(UsageError, RuntimeError):
    """The requested backend cannot run here (a package is missing); the message says how to fix it."""


@dataclass(frozen=True)
class Chat:
    """One request: the record id (for error messages) and the chat messages' text."""

    id: str
    system: str
    user: str


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int  # generated tokens, the stop token included when it was produced


class Generator(Protocol):
    def generate(self, chats: Sequence[Chat], progress: bool = True) -> list[Generation]: ...


def _stop_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(eot, int) and eot != tokenizer.unk_token_id:
        ids.add(eot)
    return sorted(i for i in ids if i is not None)


# ----------------------------------------------------------------------------- transformers
def load_transformers(model: str, adapter: str | None = None, dtype: str = "auto", device: str = "auto"):
    """Load (model, tokenizer): the base (or merged) model, with a PEFT adapter on top when given.

    The tokenizer comes from the adapter folder when it has one (the tokenizer training used).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else model
    tokenizer = AutoTokenizer.from_pretrained(tok_source)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = {"device_map": "auto"} if device == "cuda" else {}
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, **kwargs)
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise NotFound(f"adapter folder {adapter!r} has no adapter_config.json")
        lm = PeftModel.from_pretrained(lm, adapter)
    if device != "cuda":
        lm = lm.to(device)
    lm.eval()
    return lm, tokenizer


class TransformersGenerator:
    """Batched ``model.generate`` with left padding; prompts are sorted by length to pad less.

    Greedy unless ``temperature`` > 0 (plain sampling, no top-k/top-p); with ``grammar`` xgrammar's
    logits processor masks every token that would leave the code-line grammar.
    """

    def __init__(self, model, tokenizer, batch_size: int = 4, max_new_tokens: int = 64,
                 grammar: GrammarSettings | None = None, cpt_table: CptTable | None = None, temperature: float = 0.0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_new_tokens, self.temperature = batch_size, max_new_tokens, temperature
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (Llama-3: <|finetune_right_pad_id|>)")
        self.stop_ids = _stop_token_ids(tokenizer)
        self.compiled = None
        if grammar is not None:
            from nyxmed.constrained import compile_code_line

            # the model's output size, which may exceed the tokenizer's (padded embeddings)
            vocab = int(model.get_output_embeddings().weight.shape[0])
            self.compiled = compile_code_line(tokenizer, self.stop_ids, grammar, cpt_table, vocab_size=vocab)

    @classmethod
    def from_pretrained(cls, model: str, adapter: str | None = None, dtype: str = "auto", device: str = "auto",
                        **kwargs) -> "TransformersGenerator":
        return cls(*load_transformers(model, adapter, dtype, device), **kwargs)

    def generate(self, chats: Sequence[Chat], progress: bool = True) -> list[Generation]:
        import torch

        from nyxmed.training.batching import length_grouped_order  # torch and datasets: not in the core install

        prompts = [render_prompt(self.tokenizer, c.system, c.user) for c in chats]
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order, _ = length_grouped_order([len(ids) for ids in encoded], self.batch_size)
        results: list[Generation | None] = [None] * len(chats)
        device = next(self.model.parameters()).device
        with tqdm(total=len(chats), desc="generating", unit="rec", disable=not progress) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                inputs = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
                inputs = {k: v.to(device) for k, v in inputs.items()}
                with torch.inference_mode():
                    out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **self._decoding(),
                                              eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
                new = out[:, inputs["input_ids"].shape[1]:].tolist()
                for i, ids in zip(batch, new):
                    ids = _until_stop(ids, self.stop_ids)
                    results[i] = Generation(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids))
                bar.update(len(batch))
        return results  # type: ignore[return-value]


    def _decoding(self) -> dict:
        """``generate`` arguments for one call: greedy or sampling, and a fresh grammar processor (one per call)."""
        from nyxmed.constrained import logits_processor

        kwargs = ({"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
                  if self.temperature > 0 else {"do_sample": False})
        if self.compiled is not None:
            kwargs["logits_processor"] = [logits_processor(self.compiled)]
        return kwargs


def _until_stop(ids: list[int], stop_ids: Sequence[int]) -> list[int]:
    """Generated ids up to and including the first stop token (later ids are padding)."""
    for k, t in enumerate(ids):
        if t in stop_ids:
            return ids[:k + 1]
    return ids


# ----------------------------------------------------------------------------- vLLM
class VllmGenerator:
    """vLLM offline engine; an adapter is applied per request with a LoRARequest (never merged)."""

    def __init__(self, model: str, adapter: str | None = None, max_new_tokens: int = 64,
                 tensor_parallel_size: int = 1, dtype: str = "auto", grammar: GrammarSettings | None = None,
                 cpt_table: CptTable | None = None, **engine_kwargs):
        try:
            from vllm import LLM, SamplingParams
            from vllm.lora.request import LoRARequest
        except ImportError as exc:
            raise BackendUnavailable("backend 'vllm' needs vLLM, which is not installed: "
                                     "pip install 'nyxmed[vllm]' on a GPU machine, or use backend=transformers") from exc
        self.lora = None
        if adapter:
            config = json.loads((Path(adapter) / "adapter_config.json").read_text())
            engine_kwargs.setdefault("enable_lora", True)
            engine_kwargs.setdefault("max_lora_rank", int(config["r"]))
            self.lora = LoRARequest("nyxmed-adapter", 1, str(adapter))
        self.llm = LLM(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        # vLLM compiles the grammar itself (xgrammar backend) and caches it across requests
        structured = None
        if grammar is not None:
            from vllm.sampling_params import StructuredOutputsParams  # vLLM >= 0.11 (guided_* removed in 0.12)

            structured = StructuredOutputsParams(grammar=code_line_ebnf(grammar, cpt_table))
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, structured_outputs=structured,
                                     stop_token_ids=_stop_token_ids(self.tokenizer), skip_special_tokens=True)

    def generate(self, chats: Sequence[Chat], progress: bool = True) -> list[Generation]:
        prompts = [render_prompt(self.tokenizer, c.system, c.user) for c in chats]
        outputs = self.llm.generate(prompts, self.params, lora_request=self.lora, use_tqdm=progress)
        return [Generation(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outputs]


# ----------------------------------------------------------------------------- HTTP
_CHAT_PATH = "/chat/completions"
_CHECK_TIMEOUT_S = 30.0  # the pre-run check must not hang for a whole request timeout


def _server_message(exc: urllib.error.HTTPError) -> str:
    """The server's own words from an error body: OpenAI ``error.message``, vLLM ``message``, FastAPI ``detail``."""
    try:
        raw = exc.read()[:4000]
    except (OSError, http.client.HTTPException):
        return ""
    try:
        body = json.loads(raw)
        err = body.get("error", body) if isinstance(body, dict) else body
        text = (err.get("message") or err.get("detail") or err) if isinstance(err, dict) else err
    except ValueError:
        text = raw.decode(errors="replace")
    return " ".join(str(text).split())[:300]


def _decode(raw: bytes, url: str, what: str = "") -> object:
    try:
        return json.loads(raw)
    except ValueError:
        raise RemoteError(f"{what}{url} answered with something that is not JSON: {raw[:200]!r}") from None


class OpenAIChatGenerator:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (vLLM serve, TGI, ...); ``batch_size`` parallel requests.

    Every failure of the server (refused, timed out, HTTP 4xx/5xx, not JSON) raises :class:`RemoteError`.
    """

    def __init__(self, endpoint: str, model: str, max_new_tokens: int = 64, batch_size: int = 4,
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 300.0, retries: int = 3,
                 grammar: GrammarSettings | None = None, cpt_table: CptTable | None = None):
        self.base = endpoint.rstrip("/").removesuffix(_CHAT_PATH)
        self.url = self.base + _CHAT_PATH
        self.model, self.max_new_tokens, self.batch_size = model, max_new_tokens, batch_size
        self.api_key_env, self.api_key = api_key_env, os.environ.get(api_key_env)
        self.timeout_s, self.retries = timeout_s, retries
        self._usage_warned, self._lock = False, threading.Lock()
        # vLLM's own request field (a vLLM server, not OpenAI's API); the legacy guided_* fields are
        # ignored by current vLLM without an error, so they would silently decode unconstrained
        self.extra = {} if grammar is None else {"structured_outputs": {"grammar": code_line_ebnf(grammar, cpt_table)}}

    def _send(self, url: str, body: bytes | None, timeout: float) -> bytes:
        """One HTTP exchange (POST with a body, else GET); urllib's and the socket's errors propagate."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()

    def _failure(self, exc: Exception, url: str, timeout: float, what: str = "") -> RemoteError:
        """One sentence for a failed exchange: the status and the server's message, or why it was unreachable."""
        if isinstance(exc, urllib.error.HTTPError):
            message = _server_message(exc)
            text = f"{what}{url} answered HTTP {exc.code} {exc.reason}" + (f": {message}" if message else "")
            if exc.code == 404 and not self.base.endswith("/v1"):
                text += f"; OpenAI-compatible servers answer under /v1: try endpoint {self.base}/v1"
            if exc.code in (401, 403):
                text += (f"; the API key is read from ${self.api_key_env}"
                         + ("" if self.api_key else ", which is not set"))
            return RemoteError(text)
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return RemoteError(f"{what}{url} did not answer within {timeout:g} s")
        hint = "; is the server running?" if isinstance(reason, ConnectionRefusedError) else ""
        return RemoteError(f"{what}cannot reach {url}: {reason}{hint}")

    def check_server(self) -> list[str]:
        """Ask ``GET {endpoint}/models`` whether the server is up and serves ``self.model``; returns the served ids."""
        url, timeout = self.base + "/models", min(self.timeout_s, _CHECK_TIMEOUT_S)
        try:
            raw = self._send(url, None, timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc, url, timeout) from exc
        listing = _decode(raw, url)
        try:
            served = [str(m["id"]) for m in listing["data"]]  # type: ignore[index]
        except (KeyError, TypeError) as exc:
            raise RemoteError(f"{url} sent no model list (data[].id): {listing!r:.300}") from exc
        if self.model not in served:
            raise RemoteError(f"{self.base} does not serve model {self.model!r}; it serves "
                              f"{', '.join(map(repr, served[:20])) or 'no models'}: pass one of those as the model")
        return served

    def _request(self, chat: Chat) -> Generation:
        body = json.dumps({
            "model": self.model, "temperature": 0.0, "max_tokens": self.max_new_tokens, "stop": [END_OF_TURN],
            "messages": [{"role": "system", "content": chat.system}, {"role": "user", "content": chat.user}],
            **self.extra,
        }).encode()
        what = f"record {chat.id!r}: "
        for attempt in range(self.retries + 1):
            try:
                raw = self._send(self.url, body, self.timeout_s)
                break
            except (OSError, http.client.HTTPException) as exc:
                # 4xx is our request's fault: retrying cannot help
                client_error = isinstance(exc, urllib.error.HTTPError) and exc.code < 500
                if client_error or attempt == self.retries:
                    raise self._failure(exc, self.url, self.timeout_s, what) from exc
            time.sleep(min(2 ** attempt, 10))
        reply = _decode(raw, self.url, what)
        try:
            text = reply["choices"][0]["message"]["content"] or ""  # type: ignore[index]
        except (KeyError, IndexError, TypeError) as exc:
            raise RemoteError(f"{what}{self.url} sent no choices[0].message.content: {reply!r:.300}") from exc
        usage = reply.get("usage") if isinstance(reply, dict) else None
        if not isinstance(usage, dict) or "completion_tokens" not in usage:
            with self._lock:
                warn, self._usage_warned = not self._usage_warned, True
            if warn:
                log.warning("%s sends no usage.completion_tokens: generated tokens (and tokens/s) are "
                            "recorded as 0 for this run", self.url)
            usage = {}
        return Generation(text, int(usage.get("completion_tokens") or 0))

    def generate(self, chats: Sequence[Chat], progress: bool = True) -> list[Generation]:
        pool = ThreadPoolExecutor(max_workers=self.batch_size)
        try:
            return list(tqdm(pool.map(self._request, chats), total=len(chats), desc="requesting",
                             unit="rec", disable=not progress))
        finally:
            # after a failure, requests not yet sent are cancelled instead of each waiting out its retries
            pool.shutdown(wait=True, cancel_futures=True)


def build_generator(backend: str, model: str, adapter: str | None = None, batch_size: int = 4,
                    max_new_tokens: int = 64, dtype: str = "auto", device: str = "auto",
                    endpoint: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                    tensor_parallel_size: int = 1, grammar: GrammarSettings | None = None,
                    cpt_table: CptTable | None = None) -> Generator:
    """The generator for ``backend``; raises UsageError on a bad combination, BackendUnavailable when missing.

    ``grammar`` turns on constrained decoding (CPT codes from ``cpt_table`` when it is a licensed table).

    For ``openai`` the server is asked first whether it serves ``model`` (RemoteError if not, or if it cannot be reached).
    """
    if backend == "transformers":
        return TransformersGenerator.from_pretrained(model, adapter, dtype, device, batch_size=batch_size,
                                                     max_new_tokens=max_new_tokens, grammar=grammar,
                                                     cpt_table=cpt_table)
    if backend == "vllm":
        return VllmGenerator(model, adapter, max_new_tokens, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                             grammar=grammar, cpt_table=cpt_table)
    if backend == "openai":
        if not endpoint:
            raise UsageError("backend 'openai' needs an endpoint URL (e.g. http://127.0.0.1:8000/v1)")
        if adapter:
            raise UsageError("backend 'openai' cannot apply an adapter: serve it and pass its served name as the model")
        generator = OpenAIChatGenerator(endpoint, model, max_new_tokens, batch_size, api_key_env,
                                        grammar=grammar, cpt_table=cpt_table)
        generator.check_server()
        return generator
    raise UsageError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
