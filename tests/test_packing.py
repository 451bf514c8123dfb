"""Packing: packed loss and gradients equal the padded ones; no example sees its neighbour."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st


from nyxmed.training.batching import length_grouped_batches, length_grouped_order
from nyxmed.training.loss import IGNORE_INDEX, answer_logits_to_keep, answer_positions, weighted_lm_loss
from nyxmed.training.packing import PackingCollator, check_packing_supported, pack_indices
from nyxmed.tiny import build_tiny_model

TEXTS = [
    "CT abdomen pelvis with contrast findings no acute abnormality",
    "MRI brain without contrast reason for exam pain",
    "ultrasound duplex venous lower extremity bilateral impression",
    "chest radiograph two views nodule effusion",
]
ANSWERS = ["74177, 26, R10.84, K57.30", "70551, , R51.9", "93970, , I83.93", "71046, 26, R91.1"]
WEIGHTS = [1.0, 3.0, 1.0, 2.0]


@pytest.fixture(scope="module")
def examples(tiny_tokenizer):
    """Features shaped like the built dataset: labels -100 except the answer and <|eot_id|>."""
    out = []
    for k, (text, answer, w) in enumerate(zip(TEXTS, ANSWERS, WEIGHTS)):
        prompt = [tiny_tokenizer.bos_token_id] + tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        ans = tiny_tokenizer(answer, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
        out.append({"id": f"ex{k}", "input_ids": prompt + ans, "labels": [IGNORE_INDEX] * len(prompt) + ans,
                    "weight": w})
    assert len({len(e["input_ids"]) for e in out}) > 1, "examples must differ in length"
    return out


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return build_tiny_model(tiny_tokenizer, seed=1).float().train()


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _unpadded_reference(model, examples):
    """The V17 baseline: micro-batch 1, one forward per example, loss summed over the step."""
    model.zero_grad()
    num, den = torch.zeros(()), torch.zeros(())
    for e in examples:
        ids = torch.tensor([e["input_ids"]])
        logits = model(input_ids=ids, use_cache=False).logits
        s, w = weighted_lm_loss(logits, torch.tensor([e["labels"]]), torch.full(ids.shape, e["weight"]))
        num, den = num + s, den + w
    loss = num / den
    loss.backward()
    return loss.detach(), _grads(model)


def _padded_reference(model, examples, pad_id):
    """Right-padded micro-batch with an attention mask and per-token weights."""
    model.zero_grad()
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), IGNORE_INDEX)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    weights = torch.zeros((len(examples), width))
    for r, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[r, :n], labels[r, :n], mask[r, :n], weights[r, :n] = (torch.tensor(e["input_ids"]),
                                                                  torch.tensor(e["labels"]), 1, e["weight"])
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    s, w = weighted_lm_loss(logits, labels, weights)
    loss = s / w
    loss.backward()
    return loss.detach(), _grads(model)


def _packed(model, examples, pad_id, max_tokens=None, answer_logits_only=False):
    model.zero_grad()
    batch = PackingCollator(pad_token_id=pad_id, max_tokens=max_tokens)(examples)
    weights = batch.pop("token_weights")
    keep = answer_logits_to_keep(batch["labels"]) if answer_logits_only else 0
    inputs = {k: v for k, v in batch.items() if k != "labels"}  # as the trainer: no loss inside the model
    logits = model(**inputs, logits_to_keep=keep).logits
    s, w = weighted_lm_loss(logits, batch["labels"], weights)
    loss = s / w
    loss.backward()
    return loss.detach(), _grads(model), batch


def _assert_same(ref, got):
    ref_loss, ref_grads = ref
    got_loss, got_grads = got
    torch.testing.assert_close(got_loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert ref_grads.keys() == got_grads.keys() and len(ref_grads) > 10
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_weighted_loss_matches_formula(model, examples):
    """sum_i w_i sum_t l_it / sum_i w_i n_i, from transformers' own per-example mean loss."""
    num = den = 0.0
    with torch.no_grad():
        for e in examples:
            out = model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]]), use_cache=False)
            n = sum(1 for t in e["labels"][1:] if t != IGNORE_INDEX)
            num += e["weight"] * out.loss.item() * n
            den += e["weight"] * n
    loss, _ = _unpadded_reference(model, examples)
    assert loss.item() == pytest.approx(num / den, rel=1e-6)
    unweighted = [dict(e, weight=1.0) for e in examples]
    assert _unpadded_reference(model, unweighted)[0].item() != pytest.approx(loss.item(), rel=1e-5)


def test_packed_loss_and_grads_equal_padded(model, examples, tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    unpadded = _unpadded_reference(model, examples)
    padded = _padded_reference(model, examples, pad)
    packed_loss, packed_grads, batch = _packed(model, examples, pad)
    assert batch["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in examples))
    _assert_same(unpadded, (packed_loss, packed_grads))
    _assert_same(padded, (packed_loss, packed_grads))


def test_answer_only_logits_equal_full_logits(model, examples, tiny_tokenizer):
    """The trainer's logits_to_keep=answer_positions(labels): same loss and gradients, fewer logits."""
    pad = tiny_tokenizer.pad_token_id
    loss, grads, batch = _packed(model, examples, pad, answer_logits_only=True)
    kept = model(**{k: v for k, v in batch.items() if k != "labels"},
                 logits_to_keep=answer_positions(batch["labels"])).logits
    n_answer = sum(sum(1 for t in e["labels"][1:] if t != IGNORE_INDEX) for e in examples)
    assert kept.shape == (n_answer, model.config.vocab_size) and n_answer < batch["input_ids"].shape[1]
    _assert_same(_unpadded_reference(model, examples), (loss, grads))
    _assert_same(_packed(model, examples, pad)[:2], (loss, grads))


def test_answer_logits_fall_back_to_all_positions_on_older_transformers(model, examples, tiny_tokenizer, monkeypatch):
    """transformers releases that cannot slice by a boolean mask (5.17 on the GPU image failed with
    'too many indices') get logits_to_keep=0: every position's logits, the same loss and gradients."""
    from nyxmed.training import loss as packing

    labels = PackingCollator(pad_token_id=tiny_tokenizer.pad_token_id)(examples)["labels"]
    assert torch.equal(answer_logits_to_keep(labels), answer_positions(labels))  # this transformers slices
    monkeypatch.setattr(packing, "_MASK_LOGITS_TO_KEEP", False)
    assert answer_logits_to_keep(labels) == 0
    fallback = _packed(model, examples, tiny_tokenizer.pad_token_id, answer_logits_only=True)[:2]
    _assert_same(_unpadded_reference(model, examples), fallback)


def test_packed_rows_with_tail_padding_equal_padded(model, examples, tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    lengths = [len(e["input_ids"]) for e in examples]
    max_tokens = max(lengths) + min(lengths)  # forces several rows of unequal length
    loss, grads, batch = _packed(model, examples, pad, max_tokens=max_tokens)
    assert batch["input_ids"].shape[0] >= 2
    assert (batch["input_ids"] == pad).any(), "expected a tail-padded row"
    _assert_same(_unpadded_reference(model, examples), (loss, grads))


def test_boundaries_positions_and_weights(examples, tiny_tokenizer):
    # A label on an example's first token must not be learnt from the previous example.
    feats = [dict(e, labels=list(e["input_ids"])) for e in examples[:3]]
    batch = PackingCollator(pad_token_id=tiny_tokenizer.pad_token_id)(feats)
    starts, pos = [0], 0
    for f in feats[:-1]:
        pos += len(f["input_ids"])
        starts.append(pos)
    for s, f in zip(starts, feats):
        n = len(f["input_ids"])
        assert batch["labels"][0, s].item() == IGNORE_INDEX
        assert batch["labels"][0, s + 1:s + n].tolist() == f["input_ids"][1:]
        assert batch["position_ids"][0, s:s + n].tolist() == list(range(n))
        assert batch["token_weights"][0, s:s + n].tolist() == [f["weight"]] * n
    assert "attention_mask" not in batch and batch["use_cache"] is False


def test_no_attention_across_examples(model, examples, tiny_tokenizer):
    collate = PackingCollator(pad_token_id=tiny_tokenizer.pad_token_id)
    a, b = examples[0], examples[1]
    n_a = len(a["input_ids"])
    changed = dict(a, input_ids=[a["input_ids"][0]] + [(t + 7) % 400 + 20 for t in a["input_ids"][1:]])
    with torch.no_grad():
        outs = []
        for first in (a, changed):
            batch = collate([first, b])
            batch.pop("token_weights")
            outs.append(model(**batch).logits[0])
        alone = model(input_ids=torch.tensor([b["input_ids"]]), use_cache=False).logits[0]
    assert not torch.allclose(outs[0][:n_a], outs[1][:n_a], atol=1e-3), "perturbation must change A"
    torch.testing.assert_close(outs[1][n_a:], outs[0][n_a:], rtol=0, atol=1e-5)
    torch.testing.assert_close(outs[0][n_a:], alone, rtol=1e-5, atol=1e-5)


def test_check_packing_supported(model):
    check_packing_supported(model)
    model.config._attn_implementation = "my_attention"
    try:
        with pytest.raises(ValueError, match="my_attention"):
            check_packing_supported(model)
    finally:
        model.config._attn_implementation = "sdpa"


def test_collator_rejects_bad_features(tiny_tokenizer):
    collate = PackingCollator(pad_token_id=tiny_tokenizer.pad_token_id, max_tokens=4)
    with pytest.raises(ValueError, match="ex9.*input_ids"):
        collate([{"id": "ex9", "input_ids": [], "labels": []}])
    with pytest.raises(ValueError, match="length 5 exceeds max_tokens=4"):
        collate([{"id": "a", "input_ids": [1] * 5, "labels": [1] * 5}])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=60), st.integers(50, 120))
def test_pack_indices_plan(lengths, max_tokens):
    rows = pack_indices(lengths, max_tokens)
    flat = sorted(i for r in rows for i in r)
    assert flat == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= max_tokens for r in rows)
    # Best-fit decreasing never needs more than 11/9 OPT + 1 rows; OPT >= total / capacity.
    assert len(rows) <= math.ceil(11 / 9 * math.ceil(sum(lengths) / max_tokens)) + 1


def test_pack_indices_fills_rows_and_rejects_long():
    assert sorted(map(sorted, pack_indices([6, 4, 5, 5, 3, 7], 10))) == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="example 1: length 11"):
        pack_indices([3, 11], 10)


def test_length_grouped_order():
    lengths = [5, 1, 9, 3, 9, 2, 7]
    order, inverse = length_grouped_order(lengths, batch_size=3)
    assert sorted(order) == list(range(len(lengths)))
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    results = [f"r{i}" for i in order]  # results come back in batch order
    assert [results[inverse[i]] for i in range(len(lengths))] == [f"r{i}" for i in range(len(lengths))]


@pytest.mark.slow
def test_trainer_packed_run_equals_padded_run(tiny_tokenizer, tiny_base_dir, tmp_path):
    """`nyxmed train` with train.packing: 4 examples in one row per step give V17's loss and update
    (micro-batch 1 x grad-accum 4 on the same examples); LoRA dropout off so both draw no noise."""
    from safetensors.torch import load_file
    from training_data import build_dataset
    from transformers import set_seed

    from nyxmed.config import load_recipe
    from nyxmed.training import train

    data = build_dataset(tiny_tokenizer, tmp_path / "data")
    runs = {}
    for name, extra in (("padded", ["train.micro_batch_size=1", "train.gradient_accumulation_steps=4"]),
                        ("packed", ["train.packing=true", "train.micro_batch_size=4",
                                    "train.gradient_accumulation_steps=1"])):
        out = tmp_path / name
        recipe = load_recipe("configs/tiny.yaml", [
            f"model.base_model={tiny_base_dir}", f"train.dataset_dir={data}", f"train.output_dir={out}",
            "lora.dropout=0.0", "train.max_steps=3", "train.eval_steps=3", "train.save_steps=3", *extra])
        set_seed(17)  # the LoRA A init draws from the global RNG: same draws for both runs
        result = train(recipe)
        metrics = json.loads((out / "training_metrics.json").read_text())
        runs[name] = ([p["loss"] for p in metrics["train_loss_curve"]], result.final_eval_loss,
                      load_file(str(out / "adapter_model.safetensors")))
    (pad_losses, pad_eval, pad_w), (pk_losses, pk_eval, pk_w) = runs["padded"], runs["packed"]
    assert len(pad_losses) == 3 and pk_losses == pytest.approx(pad_losses, rel=1e-5)
    assert pk_eval == pytest.approx(pad_eval, rel=1e-5)
    assert pad_w.keys() == pk_w.keys()
    assert any(w.abs().sum() > 0 for k, w in pad_w.items() if "lora_B" in k)
    for k in pad_w:
        torch.testing.assert_close(pk_w[k], pad_w[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.slow
def test_zero3_packed_run_equals_padded_run(tiny_tokenizer, tiny_base_dir, tmp_path):
    """Under `deepspeed --num_gpus 2` (ZeRO-3, gloo) with train.zero3_* overrides: a packed step of
    2 examples per rank gives the losses and adapter of micro-batch 1 x grad-accum 2."""
    from safetensors.torch import load_file
    from test_training import _finish, _launch
    from training_data import build_dataset

    data = build_dataset(tiny_tokenizer, tmp_path / "data")
    runs = {}
    for name, extra in (("padded", ["train.micro_batch_size=1", "train.gradient_accumulation_steps=2"]),
                        ("packed", ["train.packing=true", "train.micro_batch_size=2",
                                    "train.gradient_accumulation_steps=1",
                                    "train.zero3_param_persistence_threshold=2000000"])):
        out = tmp_path / name
        log = tmp_path / f"{name}.log"
        _finish(_launch([f"model.base_model={tiny_base_dir}", f"train.dataset_dir={data}", f"train.output_dir={out}",
                         "lora.dropout=0.0", "train.deepspeed=ds_configs/zero3.json", "train.max_steps=3",
                         "train.eval_steps=3", "train.save_steps=3", *extra], log, ranks=2), log)
        metrics = json.loads((out / "training_metrics.json").read_text())
        runs[name] = ([p["loss"] for p in metrics["train_loss_curve"]], metrics["final_eval_loss"],
                      load_file(str(out / "adapter_model.safetensors")), metrics["world_size"])
    (pad_losses, pad_eval, pad_w, pad_ws), (pk_losses, pk_eval, pk_w, pk_ws) = runs["padded"], runs["packed"]
    assert pad_ws == pk_ws == 2 and len(pad_losses) == 3
    assert pk_losses == pytest.approx(pad_losses, rel=1e-5) and pk_eval == pytest.approx(pad_eval, rel=1e-5)
    persistence = json.loads((tmp_path / "packed" / "deepspeed_config.json").read_text())
    assert persistence["zero_optimization"]["stage3_param_persistence_threshold"] == 2000000
    for k in pad_w:
        torch.testing.assert_close(pk_w[k], pad_w[k], rtol=1e-4, atol=1e-6, msg=k)


def test_length_grouped_batches_cover_each_epoch_once_and_pad_less():
    """Each epoch visits every sequence once; grouping by length pads far less than random batches."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 240, (640,), generator=torch.Generator().manual_seed(1)).tolist()
    batches = length_grouped_batches(lengths, 8, 200, gen)  # 2.5 epochs of 80 batches
    assert len(batches) == 200 and all(len(b) == 8 for b in batches)
    for epoch in range(2):
        seen = sorted(i for b in batches[epoch * 80:(epoch + 1) * 80] for i in b)
        assert seen == list(range(640))
    assert batches[:80] != batches[80:160]  # a new permutation each epoch

    def padded_share(bs):
        real = sum(lengths[i] for b in bs for i in b)
        return 1 - real / sum(len(b) * max(lengths[i] for i in b) for b in bs)

    rand = torch.randperm(640, generator=torch.Generator().manual_seed(2)).view(80, 8).tolist()
    assert padded_share(batches[:80]) < padded_share(rand) / 4
    again = length_grouped_batches(lengths, 8, 200, torch.Generator().manual_seed(0))
    assert again == batches
    with pytest.raises(ValueError, match="no sequences"):  # not an endless loop
        length_grouped_batches([], 8, 1, torch.Generator())
