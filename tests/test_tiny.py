"""The tiny Llama-3 stand-in: special tokens, chat template, padding, save/load through the Auto classes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from nyxmed import tiny

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>", "<|eom_id|>", "<|finetune_right_pad_id|>"]

MESSAGES = [
    {"role": "system", "content": "You are a certified radiology coder."},
    {"role": "user", "content": "CT abdomen pelvis with contrast. Reason: RLQ pain.\n"},
    {"role": "assistant", "content": "74177, 26, R10.31"},
]

# The Llama-3 Instruct prompt format, written out by hand (contents trimmed, BOS once, eot after each turn).
LLAMA3_FORMAT = (
    "<|begin_of_text|>"
    "<|start_header_id|>system<|end_header_id|>\n\nYou are a certified radiology coder.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nCT abdomen pelvis with contrast. Reason: RLQ pain.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n74177, 26, R10.31<|eot_id|>"
)


def test_special_tokens_are_single_llama3_tokens(tiny_tokenizer):
    for token in LLAMA3_SPECIALS:
        ids = tiny_tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tiny_tokenizer.convert_ids_to_tokens(ids[0]) == token
    assert tiny_tokenizer.bos_token == "<|begin_of_text|>"
    assert tiny_tokenizer.eos_token == "<|eot_id|>"
    assert tiny_tokenizer.pad_token == "<|finetune_right_pad_id|>"
    assert len({tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id}) == 3


def test_encode_prepends_bos_like_llama3(tiny_tokenizer):
    with_special = tiny_tokenizer("CT abdomen")["input_ids"]
    without = tiny_tokenizer("CT abdomen", add_special_tokens=False)["input_ids"]
    assert with_special == [tiny_tokenizer.bos_token_id] + without


def test_digits_are_split_one_by_one(tiny_tokenizer):
    pieces = tiny_tokenizer.tokenize("74177")
    assert [p.lstrip("Ġ") for p in pieces] == list("74177")


def test_chat_template_matches_the_llama3_format(tiny_tokenizer):
    assert tiny_tokenizer.chat_template == tiny.LLAMA3_CHAT_TEMPLATE
    assert tiny_tokenizer.apply_chat_template(MESSAGES, tokenize=False) == LLAMA3_FORMAT
    prompt = tiny_tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == LLAMA3_FORMAT[: LLAMA3_FORMAT.index("74177")]


def test_chat_template_tokenized_has_one_bos(tiny_tokenizer):
    text = tiny_tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tiny_tokenizer.bos_token_id) == 1 and ids[0] == tiny_tokenizer.bos_token_id
    assert ids.count(tiny_tokenizer.eos_token_id) == 3
    assert tiny_tokenizer.decode(ids) == LLAMA3_FORMAT


def test_left_padding(tiny_tokenizer):
    batch = tiny_tokenizer(["CT", "CT abdomen pelvis with contrast"], padding=True, add_special_tokens=False)
    short, long_ = batch["input_ids"]
    assert len(short) == len(long_)
    assert short[0] == tiny_tokenizer.pad_token_id and short[-1] != tiny_tokenizer.pad_token_id
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][0][-1] == 1


def test_tiny_config_is_llama3_shaped(tiny_tokenizer):
    cfg = tiny.tiny_llama_config(tiny_tokenizer)
    assert cfg.model_type == "llama" and cfg.vocab_size == len(tiny_tokenizer)
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    rope_theta = getattr(cfg, "rope_theta", None) or (cfg.rope_parameters or {}).get("rope_theta")
    assert rope_theta == 500000.0
    assert cfg.tie_word_embeddings is False
    assert cfg.eos_token_id == [tiny_tokenizer.convert_tokens_to_ids("<|end_of_text|>"), tiny_tokenizer.eos_token_id]


def test_tiny_model_is_seeded(tiny_tokenizer):
    a = tiny.build_tiny_model(tiny_tokenizer, seed=3)
    b = tiny.build_tiny_model(tiny_tokenizer, seed=3)
    c = tiny.build_tiny_model(tiny_tokenizer, seed=4)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_saved_base_loads_with_auto_classes(tiny_base_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    assert isinstance(model, LlamaForCausalLM)
    # the tokenizer survives the round trip: vocabulary, specials, template, padding side
    assert tok.get_vocab() == tiny_tokenizer.get_vocab()
    assert tok.apply_chat_template(MESSAGES, tokenize=False) == LLAMA3_FORMAT
    assert tok.padding_side == "left"
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>")
    assert tok("CT")["input_ids"] == tiny_tokenizer("CT")["input_ids"]
    # the weights survive: same logits as the model that was saved (seed 0)
    original = tiny.build_tiny_model(tiny_tokenizer, seed=0).eval()
    ids = torch.tensor([tiny_tokenizer(LLAMA3_FORMAT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(ids).logits, original(ids).logits, atol=1e-6)
    # greedy generation stops at the end of a turn
    gen = json.loads((tiny_base_dir / "generation_config.json").read_text())
    assert gen["do_sample"] is False and tok.eos_token_id in gen["eos_token_id"]
    assert gen["pad_token_id"] == tok.pad_token_id


def test_generate_runs_with_left_padded_batch(tiny_base_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    prompts = [tok.apply_chat_template([{"role": "user", "content": u}], tokenize=False, add_generation_prompt=True)
               for u in ("CT", "CT abdomen pelvis with contrast")]
    batch = tok(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=4)
    assert out.shape[0] == 2 and out.shape[1] <= batch["input_ids"].shape[1] + 4
    assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"])


def test_build_tiny_base_writes_a_loadable_folder(tmp_path):
    out = tiny.build_tiny_base(["CT abdomen 74177 R10.84"] * 10, tmp_path / "base", vocab_size=300,
                               hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_size"] == 32 and cfg["num_hidden_layers"] == 1 and cfg["num_key_value_heads"] == 1
    assert AutoTokenizer.from_pretrained(out).padding_side == "left"


@pytest.mark.parametrize("vocab_size", [300, 512])
def test_vocab_size_is_respected(vocab_size):
    tok = tiny.build_tokenizer(["CT abdomen pelvis 74177 R10.84 with and without contrast"] * 50, vocab_size=vocab_size)
    assert len(tok) <= vocab_size


def test_llama3_split_keeps_up_to_three_digits_together():
    tok = tiny.build_tokenizer(["CT abdomen pelvis 74177 R10.84 with and without contrast"] * 50, vocab_size=400,
                               split="llama3")
    pieces = [p.lstrip("Ġ") for p in tok.tokenize("74177 R10.84")]
    assert "".join(pieces) == "74177R10.84"
    assert "741" in pieces and "77" in pieces and "84" in pieces
    with pytest.raises(ValueError, match="split"):
        tiny.build_tokenizer(["x"], split="bytes")


def test_lm_sequences_start_with_one_bos(tiny_tokenizer):
    chat = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "CT head"}], tokenize=False)
    plain, templated, _ = tiny.lm_sequences(tiny_tokenizer, ["CT head", chat, "x"], seq_len=6)
    bos = tiny_tokenizer.bos_token_id
    assert plain[0] == templated[0] == bos and bos not in plain[1:] + templated[1:]
    assert len(templated) == 6  # cut to seq_len
