"""Batched greedy generation backends: transformers (base + PEFT adapter, or merged), vLLM, HTTP.

Every backend takes :class:`Chat` requests (system and user text) and returns one
:class:`Generation` per request, in order: greedy, at most ``max_new_tokens``, stopping at the
end of the assistant turn (``<|eot_id|>``).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from tqdm.auto import tqdm

from nyxmed.errors import NotFound, UsageError
from nyxmed.training.batching import length_grouped_order
from nyxmed.prompts import render_prompt  # the one prompt path, shared with training

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
    """Batched greedy ``model.generate`` with left padding; prompts are sorted by length to pad less."""

    def __init__(self, model, tokenizer, batch_size: int = 4, max_new_tokens: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (Llama-3: <|finetune_right_pad_id|>)")
        self.stop_ids = _stop_token_ids(tokenizer)

    @classmethod
    def from_pretrained(cls, model: str, adapter: str | None = None, dtype: str = "auto", device: str = "auto",
                        **kwargs) -> "TransformersGenerator":
        return cls(*load_transformers(model, adapter, dtype, device), **kwargs)

    def generate(self, chats: Sequence[Chat], progress: bool = True) -> list[Generation]:
        import torch

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
                    out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                              eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
                new = out[:, inputs["input_ids"].shape[1]:].tolist()
                for i, ids in zip(batch, new):
                    ids = _until_stop(ids, self.stop_ids)
                    results[i] = Generation(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids))
                bar.update(len(batch))
        return results  # type: ignore[return-value]


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
                 tensor_parallel_size: int = 1, dtype: str = "auto", **engine_kwargs):
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
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                                     stop_token_ids=_stop_token_ids(self.tokenizer), skip_special_tokens=True)

    def generate(self, chats: Sequence[Chat], progress: bool = True) -> list[Generation]:
        prompts = [render_prompt(self.tokenizer, c.system, c.user) for c in chats]
        outputs = self.llm.generate(prompts, self.params, lora_request=self.lora, use_tqdm=progress)
        return [Generation(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outputs]


# ----------------------------------------------------------------------------- HTTP
class OpenAIChatGenerator:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (vLLM serve, TGI, ...); ``batch_size`` parallel requests."""

    def __init__(self, endpoint: str, model: str, max_new_tokens: int = 64, batch_size: int = 4,
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 300.0, retries: int = 3):
        self.url = endpoint.rstrip("/") + ("" if endpoint.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model, self.max_new_tokens, self.batch_size = model, max_new_tokens, batch_size
        self.api_key = os.environ.get(api_key_env)
        self.timeout_s, self.retries = timeout_s, retries

    def _request(self, chat: Chat) -> Generation:
        body = json.dumps({
            "model": self.model, "temperature": 0.0, "max_tokens": self.max_new_tokens, "stop": [END_OF_TURN],
            "messages": [{"role": "system", "content": chat.system}, {"role": "user", "content": chat.user}],
        }).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    reply = json.loads(resp.read())
                break
            except urllib.error.HTTPError as exc:
                # 4xx is our request's fault: retrying cannot help
                if exc.code < 500 or attempt == self.retries:
                    raise RuntimeError(f"record {chat.id!r}: {self.url} answered HTTP {exc.code}: "
                                       f"{exc.read()[:300].decode(errors='replace')}") from exc
            except urllib.error.URLError as exc:
                if attempt == self.retries:
                    raise RuntimeError(f"record {chat.id!r}: cannot reach {self.url}: {exc.reason}") from exc
            time.sleep(min(2 ** attempt, 10))
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise RuntimeError(f"record {chat.id!r}: {self.url} sent no choices[0].message.content: {reply!r:.300}") from exc
        usage = reply.get("usage") or {}
        return Generation(text, int(usage.get("completion_tokens", 0)))

    def generate(self, chats: Sequence[Chat], progress: bool = True) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=self.batch_size) as pool:
            return list(tqdm(pool.map(self._request, chats), total=len(chats), desc="requesting",
                             unit="rec", disable=not progress))


def build_generator(backend: str, model: str, adapter: str | None = None, batch_size: int = 4,
                    max_new_tokens: int = 64, dtype: str = "auto", device: str = "auto",
                    endpoint: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                    tensor_parallel_size: int = 1) -> Generator:
    """The generator for ``backend``; raises ValueError on a bad combination, BackendUnavailable when missing."""
    if backend == "transformers":
        return TransformersGenerator.from_pretrained(model, adapter, dtype, device, batch_size=batch_size,
                                                     max_new_tokens=max_new_tokens)
    if backend == "vllm":
        return VllmGenerator(model, adapter, max_new_tokens, tensor_parallel_size=tensor_parallel_size, dtype=dtype)
    if backend == "openai":
        if not endpoint:
            raise UsageError("backend 'openai' needs an endpoint URL (e.g. http://127.0.0.1:8000/v1)")
        if adapter:
            raise UsageError("backend 'openai' cannot apply an adapter: serve it and pass its served name as the model")
        return OpenAIChatGenerator(endpoint, model, max_new_tokens, batch_size, api_key_env)
    raise UsageError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
