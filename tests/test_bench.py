"""The benchmarks run and report consistent JSON (numbers are not asserted: they are the machine's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_step.py"


def test_train_step_compare_reports_both_modes_with_equal_loss():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH), "--compare", "--n", "7", "--max-length", "200",
                           "--max-tokens", "512", "--threads", "1", "--warmup", "1", "--lora-r", "8"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    for key in ("model_dims", "device", "examples", "packed_rows", "model_flops_per_token", "peak_tflops",
                "padded", "packed", "tokens_per_s_ratio_packed_over_padded", "loss_rel_diff"):
        assert key in result, key
    padded, packed = result["padded"], result["packed"]
    assert padded["micro_batches"] == result["examples"] == 7
    assert packed["micro_batches"] == result["packed_rows"] < 7  # several examples per row
    assert padded["tokens"] == packed["tokens"]  # same data
    for run in (padded, packed):
        assert run["tokens_per_s"] > 0 and run["wall_s"] > 0
        assert run["peak_memory"]["bytes"] > 0
        assert run["mfu"] is None  # CPU: no peak FLOP/s to divide by
    assert result["tokens_per_s_ratio_packed_over_padded"] == pytest.approx(
        packed["tokens_per_s"] / padded["tokens_per_s"])
    assert packed["weighted_loss"] == pytest.approx(padded["weighted_loss"], rel=1e-5)
    assert padded["weighted_loss"] > 1.0  # a random model's loss over a 512-token vocabulary, not a zero


def test_merge_memory_reports_the_merges_own_peak(tmp_path):
    """bench/merge_memory.py on the tiny model: the peak is read after the warm-up (VmHWM reset)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH.with_name("merge_memory.py")), "--sizes", "tiny",
                           "--dtype", "float32", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads(proc.stdout)["results"]
    assert result["model_bytes"] == sum(p.stat().st_size for p in (tmp_path / "tiny-merged").glob("*.safetensors"))
    assert 0 < result["merge_rss_bytes"] == result["peak_rss"] - result["rss_after_warmup"]
    # the warm-up merged the same tiny model, so its own peak is not carried into the measurement
    assert result["peak_rss"] < result["peak_rss_during_warmup"] + 64 * 2**20
    assert result["merge_rss_over_model_bytes"] == pytest.approx(result["merge_rss_bytes"] / result["model_bytes"], abs=1e-3)


def test_demo_curve_reports_a_scored_curve(tmp_path):
    """bench/demo_curve.py: the demo's base and data, LoRA steps, and production-scored evaluations."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH.with_name("demo_curve.py")), "--steps", "2", "--eval-every", "1",
                           "--eval-n", "4", "--threads", "1", "--workdir", str(tmp_path), "pretrain_steps=30",
                           "train.learning_rate=0.004"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["mode"] == "lora r=64" and result["eval_records"] == 4 and result["device"] == "cpu"
    assert result["pretrain"]["steps"] == 30 and result["lr"] == 0.004  # the overrides reached the demo and recipe
    assert [p["step"] for p in result["curve"]] == [0, 1, 2]
    for point in result["curve"]:
        for key in ("cpt_exact", "icd_root_overlap", "parse_failure_rate"):
            assert 0.0 <= point[key] <= 1.0
    assert all(p["answer_loss"] > 0 for p in result["curve"][1:])
    assert all(p["eval_loss"] > 0 for p in result["curve"][1:])  # the Trainer evaluated at each point
    assert [p["train_seconds"] for p in result["curve"]] == sorted(p["train_seconds"] for p in result["curve"])
    assert result["pretrain"]["loss_last20"] < result["pretrain"]["loss_first"]
    assert result["train_tokens_per_second"] > 0


def test_grpo_gain_reports_before_after_and_paired_cis(tmp_path, tiny_tokenizer, tiny_base_dir):
    """bench/grpo_gain.py on a `make demo`-shaped folder built from the tiny fixtures (two GRPO steps)."""
    import shutil

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_adapter
    from training_data import build_dataset

    from nyxmed import config
    from nyxmed.evaluation import create_benchmark
    from nyxmed.metrics import AGGREGATE_METRICS

    demo = tmp_path / "demo"
    shutil.copytree(tiny_base_dir, demo / "base")
    make_adapter(demo / "base", demo / "adapter")
    config.save(config.load_recipe(BENCH.parents[1] / "configs" / "tiny.yaml"), demo / "adapter" / "config.yaml")
    build_dataset(tiny_tokenizer, demo / "data", n_train=8, n_val=4)
    create_benchmark(demo / "data", demo / "bench.json", pool="heldout", n=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH.with_name("grpo_gain.py")), "--demo-out", str(demo), "--steps", "2",
                           "--max-new-tokens", "8", "--resamples", "50", "grpo.num_generations=2",
                           "grpo.max_completion_length=8"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["steps"] == 2 and result["n"] == 4
    assert set(result["before"]) == set(result["after"]) == set(result["ci95_difference"]) == set(AGGREGATE_METRICS)
    for m in ("icd_exact", "all_three_exact", "cpt_exact", "modifier_exact"):
        lo, hi = result["ci95_difference"][m]
        assert 0 <= result["before"][m] <= 1 and 0 <= result["after"][m] <= 1 and -1 <= lo <= hi <= 1, m
    assert [p["step"] for p in result["reward_curve"]["reward"]] == [1, 2] and result["seconds_per_step"] > 0


def test_code_throughput_reports_retrieval_and_generation_apart():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    bench = BENCH.parent / "code_throughput.py"
    proc = subprocess.run([sys.executable, str(bench), "--reports", "6", "--pool", "200", "--batch-size", "3",
                           "--max-new-tokens", "8"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["reports"] == result["coded"] + result["uncoded"] == 6
    assert result["settings"]["pool_size"] < 200  # the pool is the train split of the built cases
    parts = result["retrieval_prompt"]["seconds"] + result["generation"]["seconds"]
    assert parts == pytest.approx(result["total"]["seconds"], abs=2e-3)
    assert all(result[k]["reports_per_s"] > 0 for k in ("retrieval_prompt", "generation", "total"))
    assert result["prompt_tokens_mean"] > 100  # few-shot examples and candidates, not a bare report


def test_constrained_bench_reports_both_runs_with_paired_cis(tmp_path, tiny_tokenizer, tiny_base_dir):
    """bench/constrained.py on a `make demo`-shaped folder built from the tiny fixtures."""
    import shutil

    pytest.importorskip("xgrammar")
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_adapter
    from training_data import build_dataset

    from nyxmed.evaluation import create_benchmark
    from nyxmed.metrics import AGGREGATE_METRICS

    demo = tmp_path / "demo"
    shutil.copytree(tiny_base_dir, demo / "base")
    make_adapter(demo / "base", demo / "adapter")
    build_dataset(tiny_tokenizer, demo / "data", n_train=8, n_val=4)
    create_benchmark(demo / "data", demo / "bench.json", pool="heldout", n=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH.with_name("constrained.py")), "--demo-out", str(demo),
                           "--max-new-tokens", "64", "--resamples", "50"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["n"] == 4
    assert set(result["unconstrained"]) == set(result["constrained"]) == set(result["ci95_difference"]) \
        == set(AGGREGATE_METRICS)
    assert result["invalid_code_rate"]["constrained"] == 0 and result["constrained"]["parse_failure_rate"] == 0
    free = result["unconstrained"]  # a random adapter writes no clean line unconstrained: the control
    assert free["invalid_code_rate"] + free["parse_failure_rate"] > 0
    assert all(v > 0 for v in result["seconds_per_record"].values()) and result["time_ratio"] > 0
    assert result["grammar_compile_seconds"] > 0 and result["grammar_memory_bytes"] > 0
    run = json.loads((demo / "constrained" / "constrained" / "metrics.json").read_text())["run"]
    assert run["constrained"]["icd"] == "billable" and run["constrained"]["max_icd"] == 8
