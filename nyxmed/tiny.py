"""A tiny Llama-3-architecture model and a locally built Llama-3-style tokenizer.

Stands in for the 70B base on machines without the weights: same architecture class, same
special tokens and chat template, built from :class:`LlamaConfig` and a BPE trained on local
text. Never downloads anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from nyxmed.training.batching import length_grouped_batches

BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
PAD = "<|finetune_right_pad_id|>"
SPECIAL_TOKENS = [BOS, EOS, "<|reserved_special_token_0|>", "<|reserved_special_token_1|>", PAD,
                  "<|reserved_special_token_2|>", HEADER_START, HEADER_END, "<|eom_id|>", EOT]

# The chat template of Meta-Llama-3-Instruct, verbatim.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


# The Llama-3 pre-tokenizer regex (tokenizer.json of Meta-Llama-3): numbers in groups of up to
# three digits; its punctuation branch takes trailing newlines.
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 2048,
                    split: str = "digits") -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``corpus`` with Llama-3's special tokens and chat template.

    ``split="digits"`` splits digits one by one (GPT-2 regex otherwise); ``split="llama3"`` uses
    Llama-3's own pre-tokenizer regex, which keeps up to three digits together (``768|56``).
    """
    if split not in ("digits", "llama3"):
        raise ValueError(f"split: expected 'digits' or 'llama3', got {split!r}")
    tok = Tokenizer(models.BPE())
    if split == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    # As Llama-3: encoding with special tokens prepends BOS (chat-rendered text already has it,
    # so callers encode that with add_special_tokens=False, exactly as with the real tokenizer).
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)])
    # padding_side and model_max_length as constructor arguments: set as attributes afterwards
    # they are not written to tokenizer_config.json, and a reloaded tokenizer would pad right.
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOT, pad_token=PAD,
                                   additional_special_tokens=[EOS, HEADER_START, HEADER_END],
                                   padding_side="left", model_max_length=8192)
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    return fast


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast, hidden_size: int = 64, layers: int = 2,
                      heads: int = 4, kv_heads: int = 2, intermediate_size: int = 176,
                      max_positions: int = 4096) -> LlamaConfig:
    """A Llama-3-shaped config (GQA, RoPE theta 500k, untied head) at toy size."""
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, rope_theta=500000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(EOT)],
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, **sizes) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama (fp32) for ``tokenizer``."""
    torch.manual_seed(seed)
    config = tiny_llama_config(tokenizer, **sizes)
    return LlamaForCausalLM(config)


def save_base(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """Save model, tokenizer and a greedy generation config (stop at end of turn) in one folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=model.config.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=False,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_base(corpus: Iterable[str], out_dir: str | Path, vocab_size: int = 2048, seed: int = 0,
                    **sizes) -> Path:
    """Tokenizer + random tiny Llama saved to ``out_dir``: a local stand-in for a base model path."""
    tokenizer = build_tokenizer(corpus, vocab_size=vocab_size)
    return save_base(build_tiny_model(tokenizer, seed=seed, **sizes), tokenizer, out_dir)


def lm_sequences(tokenizer: PreTrainedTokenizerFast, texts: list[str], seq_len: int) -> list[list[int]]:
    """Token ids of ``texts``, each starting with exactly one BOS (chat-template text carries its
    own), cut to ``seq_len``; texts of a single token are dropped."""
    bos = tokenizer.bos_token_id
    encoded = [([] if ids[:1] == [bos] else [bos]) + ids
               for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return [ids[:seq_len] for ids in encoded if len(ids) > 1]


def pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, texts: list[str], steps: int,
             batch_size: int = 8, seq_len: int = 256, lr: float = 3e-3, seed: int = 0,
             progress: bool = True) -> list[float]:
    """Full-parameter language-model training on ``texts`` (nanoGPT-style loop); returns the losses.
    Texts are encoded by :func:`lm_sequences` and batched by :func:`nyxmed.training.batching.length_grouped_batches`.

    Gives a tiny random base the vocabulary of the reports, standing in for a previous version.
    Trains wherever ``model`` lies (CPU in the demo; a GPU for ``bench/demo_curve.py --device cuda``).
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    encoded = lm_sequences(tokenizer, texts, seq_len)
    batches = length_grouped_batches([len(e) for e in encoded], batch_size, steps, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    model.train()
    losses: list[float] = []
    for pick in tqdm(batches, desc="pre-train base", disable=not progress):
        width = max(len(encoded[i]) for i in pick)
        ids = torch.full((len(pick), width), tokenizer.pad_token_id)
        labels = torch.full((len(pick), width), -100)
        for row, i in enumerate(pick):
            seq = torch.tensor(encoded[i])
            ids[row, : len(seq)] = seq
            labels[row, : len(seq)] = seq
        ids, labels = ids.to(model.device), labels.to(model.device)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses
