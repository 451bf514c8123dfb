"""The main job end to end (`nyxmed demo`) at a size CI affords: 2 ZeRO-3 CPU ranks, real artifacts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nyxmed.config import DemoConfig, EvalConfig

pytestmark = pytest.mark.slow

# The demo's base (its pre-training is most of the fixture's time) with fewer demo cases: a LoRA epoch of
# ~48 steps and a 40-record benchmark.
SMALL = DemoConfig(cases=500, benchmark_n=40, eval_batch_size=20, tokenizer_texts=500,
                   overrides=["data.heldout_size=90", "data.val_size=24", "train.eval_steps=20",
                              "train.save_steps=20", "train.epochs=1", "train.max_steps=-1"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from nyxmed.demo import Demo

    out = tmp_path_factory.mktemp("demo")
    d = Demo(replace(SMALL, out_dir=str(out / "run")))
    summary = d.run()
    return d, summary


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _answer_nll(model, records) -> float:
    """Mean negative log-likelihood of the gold answer tokens (labels != -100) given the prompt."""
    total, count = 0.0, 0
    with torch.no_grad():
        for rec in records:
            ids = torch.tensor([rec["input_ids"]])
            labels = torch.tensor([rec["labels"]])
            n = int((labels[:, 1:] != -100).sum())
            total += model(input_ids=ids, labels=labels).loss.item() * n
            count += n
    return total / count


def test_every_artifact_exists_and_loads(demo):
    from datasets import load_from_disk
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from nyxmed.releases import LocalRegistry

    d, summary = demo
    for name, path in summary["artifacts"].items():
        assert Path(path).exists(), f"{name}: {path} missing"
    out = d.out
    assert set(load_from_disk(str(out / "data" / "dataset"))) == {"train", "validation", "heldout"}
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "base"), out / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, with_adapter(ids).logits, atol=1e-4, rtol=1e-4)
    tm = json.loads((out / "adapter" / "training_metrics.json").read_text())
    assert tm["world_size"] == 2
    assert json.loads((out / "adapter" / "deepspeed_config.json").read_text())["zero_optimization"]["stage"] == 3
    assert (out / "adapter" / "frozen" / "epoch-1" / "frozen.json").is_file()
    assert LocalRegistry(out / "registry").production() == "v1"
    assert json.loads((out / "demo_summary.json").read_text())["artifacts"] == summary["artifacts"]
    before, after = _metrics(out / "eval_base"), _metrics(out / "eval_adapter")
    assert before["n"] == after["n"] == SMALL.benchmark_n
    comparison = json.loads((out / "compare" / "comparison.json").read_text())
    assert comparison["metrics"]["cpt_exact"]["diff"] == pytest.approx(after["cpt_exact"] - before["cpt_exact"])


def test_trained_adapter_beats_the_untrained_base(demo):
    """The benchmark metrics and the likelihood of the gold code line on held-out records."""
    from datasets import load_from_disk
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    d, _ = demo
    heldout = load_from_disk(str(d.out / "data" / "dataset"))["heldout"].select(range(20))
    base = AutoModelForCausalLM.from_pretrained(d.out / "base").eval()
    base_nll = _answer_nll(base, heldout)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(d.out / "base"), d.out / "adapter").eval()
    adapter_nll = _answer_nll(adapted, heldout)
    # every gold answer token at least e^2 = 7.4x likelier on average (measured: 4.13 -> 0.47 nats)
    assert adapter_nll < base_nll - 2.0, (base_nll, adapter_nll)
    before, after = _metrics(d.out / "eval_base"), _metrics(d.out / "eval_adapter")
    # the base was pre-trained on coded reports and report chats, never on coding in a chat: it mostly
    # answers in prose at the assistant turn (measured on these 40 records: 0.150 / 0.075, parse
    # failures 0.675; on the demo's 200: 0.010 / 0.120). With tokenizers 0.23 / transformers 5.24 the
    # same code (also the commit before this bound moved) measures cpt_exact 0.300 here: the bound is
    # 0.35, and the gains below are what the test is about.
    assert before["cpt_exact"] <= 0.35 and before["icd_root_overlap"] <= 0.35, before
    # measured 0.150 -> 0.825 and 0.075 -> 0.700 (the demo's floors are 0.6 and 0.5 on 200 records)
    assert after["cpt_exact"] - before["cpt_exact"] >= 0.35, (before, after)
    assert after["icd_root_overlap"] - before["icd_root_overlap"] >= 0.35, (before, after)
    assert after["parse_failure_rate"] <= 0.05, after


def test_merged_model_writes_what_base_plus_adapter_writes(demo, tmp_path):
    from nyxmed import evaluation

    d, _ = demo
    cfg = replace(EvalConfig(), model=str(d.out / "merged"), data=str(d.out / "data"),
                  benchmark=str(d.out / "bench.json"), out_dir=str(tmp_path / "merged_eval"),
                  batch_size=SMALL.eval_batch_size, max_new_tokens=SMALL.eval_max_new_tokens, device="cpu")
    evaluation.run(cfg)

    def outputs(run: Path) -> dict[str, str]:
        return {json.loads(line)["id"]: json.loads(line)["output"] for line in (run / "predictions.jsonl").open()}

    assert outputs(tmp_path / "merged_eval") == outputs(d.out / "eval_adapter")


def test_pretraining_texts_are_coded_reports_and_report_chats_of_other_cases(tiny_tokenizer):
    from nyxmed.codeline import parse
    from nyxmed.dataset import retrieval_text
    from nyxmed.demo import CHAT_SYSTEM, pretraining_texts
    from nyxmed.prompts import SYSTEM_PROMPT
    from nyxmed.synth import generate_cases

    own = generate_cases(200, SMALL.seed + 1)
    texts = pretraining_texts(200, SMALL.seed + 1, chat_share=0.5, tokenizer=tiny_tokenizer)
    demo_texts = {retrieval_text(c) for c in generate_cases(200, SMALL.seed)}
    chats = 0
    for text, case in zip(texts, own):
        if text.startswith(tiny_tokenizer.bos_token):  # a chat about the report, in the Llama-3 template
            chats += 1
            assert CHAT_SYSTEM in text and SYSTEM_PROMPT not in text and "Codes:" not in text
            assert case.report_text.strip() in text
            answer = text.rpartition("<|start_header_id|>assistant<|end_header_id|>\n\n")[2]
            assert answer.removesuffix("<|eot_id|>") in case.report_text + case.exam_description
            assert not any(code in text for code in case.codes.icd + case.codes.cpt)  # never coded in a chat
        else:
            report, _, line = text.rpartition("\nCodes: ")
            assert report == retrieval_text(case) and parse(line).line == case.codes
            assert report not in demo_texts
    assert 70 <= chats <= 130
    plain = [f"{retrieval_text(c)}\nCodes: {c.codes.render()}" for c in generate_cases(50, 3)]
    assert pretraining_texts(50, 3) == plain  # chat_share 0: coded reports only
    with pytest.raises(ValueError, match="tokenizer"):
        pretraining_texts(5, 3, chat_share=0.5)


def test_demo_tokenizer_spends_about_a_token_per_word_of_the_fixed_prompt_wording():
    from nyxmed.demo import tokenizer_corpus
    from nyxmed.prompts import SYSTEM_PROMPT, icd_candidate_line, load_rules
    from nyxmed.synth import generate_cases
    from nyxmed.tiny import build_tokenizer

    cases = generate_cases(300, SMALL.seed)
    rules = load_rules("configs/demo_rules.txt")
    tok = build_tokenizer(tokenizer_corpus(SMALL, cases, rules), vocab_size=SMALL.vocab_size)
    candidate = icd_candidate_line(cases[0].codes.icd[0])
    for text in (SYSTEM_PROMPT, rules, candidate):
        words = len(text.split())
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 1.5 * words, text
    # a BPE of the reports alone spells the same wording out in pieces
    reports_only = build_tokenizer([c.report_text for c in cases], vocab_size=SMALL.vocab_size)
    assert len(reports_only(SYSTEM_PROMPT, add_special_tokens=False)["input_ids"]) > 2 * len(SYSTEM_PROMPT.split())


def test_demo_finds_its_recipe_and_rules_file_from_any_directory(tmp_path, monkeypatch):
    from nyxmed.demo import Demo

    monkeypatch.chdir(tmp_path)  # configs/demo.yaml and configs/demo_rules.txt are not under the cwd
    d = Demo(replace(SMALL, out_dir=str(tmp_path / "run")))
    assert d.recipe_path.is_file() and Path(d.recipe.prompt.rules_file).is_file()
    assert d.recipe.data.out_dir == str((tmp_path / "run" / "data").resolve())


def test_demo_config_overrides_split_between_demo_fields_and_the_recipe(tmp_path):
    """`nyxmed demo` and bench/demo_curve.py: plain keys set DemoConfig, dotted keys go to the recipe."""
    from nyxmed.config import ConfigError
    from nyxmed.demo import Demo, load_demo_config

    yaml_file = tmp_path / "demo.yaml"
    yaml_file.write_text("cases: 900\npretrain_steps: 40\n")
    cfg = load_demo_config(str(yaml_file), ["pretrain_steps=70", "train.learning_rate=0.01", "lora.r=16",
                                            f"out_dir={tmp_path / 'run'}"])
    assert (cfg.cases, cfg.pretrain_steps) == (900, 70)  # file over defaults, overrides over the file
    assert cfg.overrides == ["train.learning_rate=0.01", "lora.r=16"]
    recipe = Demo(cfg).recipe
    assert recipe.train.learning_rate == 0.01 and recipe.lora.r == 16
    with pytest.raises(ConfigError, match="pretrain_stepz"):
        load_demo_config(None, ["pretrain_stepz=3"])


def test_the_demo_codes_new_reports_with_the_production_release(demo):
    from nyxmed.preprocessor import verify
    from nyxmed.releases import LocalRegistry

    d, _ = demo
    registry = LocalRegistry(d.out / "registry")
    release = registry.release(registry.production())
    coded = [json.loads(line) for line in (d.out / "coded_new_reports.jsonl").read_text().splitlines()]
    assert [c["id"] for c in coded] == [f"new-{i + 1}" for i in range(d.cfg.new_reports)]
    assert release["preprocessor"] == {"id": verify(d.out / "data" / "preprocessor")["preprocessor_id"],
                                       "complete": True}
    assert {c["preprocessor_id"] for c in coded} == {release["preprocessor"]["id"]}
    assert {c["version"] for c in coded} == {d.cfg.version}
    assert sum(bool(c["cpt"]) and bool(c["icd"]) for c in coded) >= d.cfg.new_reports - 1  # a trained coder
    assert all(c["constrained"] for c in coded) and not any(c["invalid_codes"] for c in coded)  # the grammar


def test_continue_trains_v2_on_the_v1_release_compares_releases_and_rolls_back(demo):
    """`nyxmed demo --continue` on the demo's folder (last: it promotes v2 in the fixture's registry)."""
    from nyxmed.coder import load_coder
    from nyxmed.demo_continue import ContinuationDemo
    from nyxmed.releases import LocalRegistry

    d, _ = demo
    cfg = replace(SMALL, out_dir=str(d.out), continuation=True, continue_cases=160, continue_retained=40,
                  continue_steps=4, overrides=[*SMALL.overrides, "data.heldout_size=20", "data.val_size=8"])
    summary = ContinuationDemo(cfg).run()
    cont = d.out / "continue"
    registry = LocalRegistry(d.out / "registry")
    v1, v2 = registry.release("v1"), registry.release("v2")
    # promoted exactly when the gate finds no regression beyond a CI; registered with its parent either way
    assert summary["promoted"] == (not summary["regressions"])
    assert registry.production() == ("v2" if summary["promoted"] else "v1") and v2["parent"]["version"] == "v1"
    assert v2["parent"]["adapter_sha256"] == v1["files"]["adapter_model.safetensors"]["sha256"]
    assert v2["preprocessor"]["id"] == v1["preprocessor"]["id"]  # the parent's preprocessor by default
    counts = summary["counts"]
    assert counts["by_role"]["primary"] > 0 and counts["retained_filtered_by_previous_manifest"] == 20
    stored = json.loads((registry.path("v2") / "comparison.json").read_text())
    assert stored["n"] == SMALL.benchmark_n and stored["metrics"]["cpt_exact"]["diff"] == \
        summary["comparison"]["cpt_exact"]["diff"]
    assert "## Comparison with v1" in (registry.path("v2") / "README.md").read_text()
    assert json.loads((cont / "compare" / "parent" / "metrics.json").read_text())["cpt_exact"] == \
        _metrics(d.out / "eval_adapter")["cpt_exact"]  # the parent merged codes the benchmark as v1 did
    with pytest.raises(Exception, match="already has v2"):  # a second run never overwrites a release
        ContinuationDemo(cfg).run()
    assert (cont / "continue_summary.json").is_file()  # refused before the earlier run's folder is touched
    if summary["promoted"]:
        registry.rollback()
    coder = load_coder(release=str(registry.root), dtype="float32", device="cpu", max_new_tokens=4)
    assert coder.describe()["version"] == "v1" and coder.preprocessor.id == v1["preprocessor"]["id"]
