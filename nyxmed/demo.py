"""The main job end to end on the embedded synthetic data (``make demo`` / ``nyxmed demo``).

Synthetic cases -> validation -> tiny Llama-3 base (pre-trained on coded reports and report chats
of another synthetic set) -> dataset with retrieval and leakage defense -> LoRA training under DeepSpeed
ZeRO-3 (``train.py``) -> evaluation of base and adapter on a fixed benchmark -> merge with
verification -> register and promote.
Every artifact lands under one folder. Each step is the production code path at toy size.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nyxmed import config as cfgmod
from nyxmed.config import DemoConfig, EvalConfig
from nyxmed.io import fresh_output_dir, write_atomic

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"cpt_exact": 0.6, "icd_root_overlap": 0.5}  # what the trained adapter must reach (issue 7)
# The console table; every metric is in compare/comparison.md.
SHOWN = ("cpt_exact", "cpt_primary", "modifier_exact", "icd_exact", "icd_any_overlap", "icd_root_overlap",
         "icd_recall_mean", "icd_precision_mean", "all_three_exact", "icd_micro_f1", "icd_macro_f1_category",
         "parse_failure_rate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_project(path: str) -> Path:
    """``path`` as given when it exists, else relative to the project (the demo runs from anywhere)."""
    return Path(path) if Path(path).exists() else PROJECT_ROOT / path


def train_command(cfg: DemoConfig, recipe: Path, overrides: list[str]) -> list[str]:
    """``train.py`` under the DeepSpeed launcher (``ranks`` CPU processes), or plain Python for 0 ranks."""
    script = PROJECT_ROOT / "train.py"
    module_flag = "-m" if cfg.ranks <= 0 else "--module"  # python's flag vs the deepspeed launcher's
    target = [str(script)] if script.is_file() else [module_flag, "nyxmed", "train"]
    args = ["--config", str(recipe), *overrides]
    if cfg.ranks <= 0:
        return [sys.executable, *target, *args, "train.deepspeed=null"]
    launcher = Path(sys.executable).parent / "deepspeed"
    return [str(launcher), "--num_gpus", str(cfg.ranks), "--master_port", str(_free_port()), *target, *args]


CHAT_SYSTEM = "You are a helpful radiology assistant."  # the stand-in's chats; never the coding prompt


def load_demo_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DemoConfig:
    """Defaults, the YAML file at ``path``, then ``key=value`` overrides: DemoConfig keys set the demo
    (``cases=1000``), recipe keys go to its recipe (``train.epochs=2``)."""
    return cfgmod.load_demo_config(path, overrides)


def demo_inputs(cfg: DemoConfig) -> list[Path]:
    """The files the demo reads (its output folder must be none of them)."""
    return [_in_project(cfg.recipe)]


def report_questions(case) -> list[tuple[str, str]]:
    """Questions about ``case``'s report answered by copying from it: the exam performed, the impression."""
    from nyxmed.synth import EXAM_LABELS

    match = re.search(rf"^(?:{'|'.join(EXAM_LABELS)}): (.+)$", case.report_text, re.MULTILINE)
    exam = case.exam_description or (match.group(1) if match else "")
    impression = case.report_text.rpartition("IMPRESSION:\n")[2].strip()
    return [(q, a) for q, a in (("What exam was performed?", exam), ("What is the impression?", impression)) if a]


def pretraining_texts(n: int, seed: int, chat_share: float = 0.0, tokenizer=None) -> list[str]:
    """What the stand-in previous version was trained on, from ``n`` synthetic cases drawn with their
    own seed (none of them is a demo case).

    A ``chat_share`` of them are chats in ``tokenizer``'s Llama-3 template that ask which exam was done
    or what the impression says (:func:`report_questions`): the instruction following and copying
    from the user turn a real instruct base brings. The rest are coded reports in plain text,
    ``<report>\nCodes: <code line>``. Never a coding chat, so the base knows chats and code lines but
    has never coded a report at the assistant turn."""
    from nyxmed.dataset import retrieval_text
    from nyxmed.prompts import report_head
    from nyxmed.synth import generate_cases

    if chat_share and tokenizer is None:
        raise ValueError("pretraining_texts: chat_share > 0 needs the tokenizer (its chat template)")
    rng = random.Random(seed)
    texts = []
    for case in generate_cases(n, seed):
        questions = report_questions(case)
        if rng.random() >= chat_share or not questions:
            texts.append(f"{retrieval_text(case)}\nCodes: {case.codes.render()}")
            continue
        question, answer = rng.choice(questions)
        report = report_head(case, bool(case.exam_description)) + case.report_text
        texts.append(tokenizer.apply_chat_template(
            [{"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": f"{report}\n\n{question}"},
             {"role": "assistant", "content": answer}], tokenize=False))
    return texts


def tokenizer_corpus(cfg: DemoConfig, cases, rules: str) -> list[str]:
    """What the demo's BPE is trained on: reports and code lines of ``cases`` and the prompts' fixed
    wording (system prompt, headings, ``rules``, the ICD-10-CM description of every code of the cases
    and of its candidate neighbours), so that, as with Llama-3's 128K vocabulary, the words every
    prompt carries cost about a token each instead of being spelt out in pieces."""
    from nyxmed.dataset import retrieval_text
    from nyxmed.prompts import (
        SYSTEM_PROMPT,
        PromptParts,
        Shot,
        build_user,
        icd_candidate_line,
    )
    from nyxmed.retrieval.candidates import code_system_neighbours

    codes = {code for case in cases for code in case.codes.icd}
    pool = sorted(codes | {n for code in codes for n in code_system_neighbours(code)})
    wording = build_user(PromptParts((Shot("", ""),), (), (), rules, "", ""))
    return ([retrieval_text(case) for case in cases[: cfg.tokenizer_texts]] + [case.codes.render() for case in cases]
            + [SYSTEM_PROMPT, wording] + [icd_candidate_line(code) for code in pool])


def build_base(cfg: DemoConfig, cases, rules: str, progress: bool = True, device: str = "cpu"):
    """The demo's tokenizer (:func:`tokenizer_corpus`) and tiny base pre-trained on
    :func:`pretraining_texts` on ``device``; returns ``(model, tokenizer, pre-training losses)``."""
    from nyxmed.tiny import build_tiny_model, build_tokenizer, pretrain

    tokenizer = build_tokenizer(tokenizer_corpus(cfg, cases, rules), vocab_size=cfg.vocab_size,
                                split=cfg.tokenizer_split)
    model = build_tiny_model(tokenizer, seed=cfg.seed, hidden_size=cfg.hidden_size, layers=cfg.layers,
                             heads=cfg.heads, kv_heads=cfg.kv_heads, intermediate_size=cfg.intermediate_size).to(device)
    texts = pretraining_texts(cfg.pretrain_cases, cfg.seed + 1, cfg.pretrain_chat_share, tokenizer)
    losses = pretrain(model, tokenizer, texts, cfg.pretrain_steps,
                      cfg.pretrain_batch, cfg.pretrain_seq, cfg.pretrain_lr, seed=cfg.seed, progress=progress)
    return model, tokenizer, losses


class Demo:
    """Runs the steps in order, printing tables, and records every artifact's path."""

    def __init__(self, cfg: DemoConfig, console: Console | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out_dir).resolve()
        self.console = console or Console(width=max(Console().width, 110))
        self.artifacts: dict[str, Path] = {}
        self.timings: dict[str, float] = {}
        self.recipe_path = _in_project(cfg.recipe)
        self.recipe = cfgmod.load_recipe(self.recipe_path, self._recipe_overrides())
        if self.recipe.prompt.rules_file:
            self.recipe.prompt.rules_file = str(_in_project(self.recipe.prompt.rules_file))

    def _recipe_overrides(self) -> list[str]:
        return [f"data.out_dir={self.out / 'data'}", f"model.base_model={self.out / 'base'}",
                f"train.output_dir={self.out / 'adapter'}", f"train.dataset_dir={self.out / 'data' / 'dataset'}",
                f"data.seed={self.cfg.seed}", *self.cfg.overrides]

    def step(self, title: str):
        self.console.rule(f"[bold]{title}")
        return _Timer(self.timings, title)

    # ------------------------------------------------------------------ steps
    def cases(self):
        from nyxmed.sources import read_cases, write_cases
        from nyxmed.synth import generate_cases

        with self.step("1. synthetic radiology cases"):
            path = self.out / "cases.jsonl"
            write_cases(generate_cases(self.cfg.cases, self.cfg.seed), path)
            result = read_cases(path, rejects_path=self.out / "cases.rejects.jsonl", progress=False)
            table = Table("read", "accepted", "rejected", title=str(path))
            table.add_row(str(result.counts["read"]), str(result.counts["accepted"]), str(result.counts["rejected"]))
            self.console.print(table)
            self.artifacts["cases"] = path
            return result.cases

    def base(self, cases) -> None:
        from nyxmed import prompts
        from nyxmed.tiny import save_base

        with self.step("2. tiny Llama-3 base: local tokenizer, pre-training on coded reports and report chats"):
            model, tokenizer, losses = build_base(self.cfg, cases, prompts.load_rules(self.recipe.prompt.rules_file))
            save_base(model, tokenizer, self.out / "base")
            n_params = sum(p.numel() for p in model.parameters())
            self.console.print(f"base: {n_params:,} parameters, vocab {len(tokenizer)}, "
                               f"LM loss {losses[0]:.2f} -> {sum(losses[-20:]) / min(20, len(losses)):.2f}")
            self.artifacts["base model"] = self.out / "base"
            self.tokenizer = tokenizer

    def dataset(self, cases, title: str = "3. dataset: retrieval, candidates, leakage defense, splits") -> None:
        from nyxmed.dataset import build_dataset, composition_table

        with self.step(title):
            result = build_dataset(self.recipe, self.tokenizer, cases=cases)
            self.console.print(composition_table(result.manifest))
            self.artifacts["dataset"] = self.out / "data"

    def train(self, title: str | None = None) -> None:
        with self.step(title or f"4. LoRA training: train.py, DeepSpeed ZeRO-3 on {self.cfg.ranks} CPU processes"):
            cmd = train_command(self.cfg, self.recipe_path, self._recipe_overrides())
            self.console.print(" ".join(cmd), style="dim", markup=False)
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            log_path = self.out / "train.log"
            with open(log_path, "w") as log:
                proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
            if proc.returncode != 0:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"training failed (exit {proc.returncode}); log {log_path}:\n{tail}")
            tm = json.loads((self.out / "adapter" / "training_metrics.json").read_text())
            table = Table("step", "eval loss", title="eval-loss curve (validation slice)")
            for point in tm["eval_loss_curve"]:
                table.add_row(str(point["step"]), f"{point['eval_loss']:.4f}")
            self.console.print(table)
            self.console.print(f"stop: {tm['stop_reason']}, best step {tm['best_step']} "
                               f"(eval loss {tm['best_eval_loss']:.4f}), {tm['tokens_seen']:,} tokens")
            self.artifacts["adapter"] = self.out / "adapter"
            self.artifacts["training log"] = log_path

    def evaluate(self) -> dict[str, Any]:
        from nyxmed import evaluation

        with self.step("5. evaluation: untrained base vs trained adapter on a fixed benchmark"):
            bench = self.out / "bench.json"
            evaluation.create_benchmark(self.out / "data", bench, pool="heldout", n=self.cfg.benchmark_n,
                                        seed=self.cfg.seed)
            runs = {}
            for name, adapter in (("base", None), ("adapter", self.out / "adapter")):
                cfg = replace(EvalConfig(), model=str(self.out / "base"), adapter=str(adapter) if adapter else None,
                              data=str(self.out / "data"), benchmark=str(bench), out_dir=str(self.out / f"eval_{name}"),
                              batch_size=self.cfg.eval_batch_size, max_new_tokens=self.cfg.eval_max_new_tokens,
                              device="cpu",
                              training_metrics=str(self.out / "adapter" / "training_metrics.json") if adapter else None)
                evaluation.run(cfg)
                runs[name] = Path(cfg.out_dir)
                self.artifacts[f"evaluation ({name})"] = Path(cfg.out_dir)
            comparison = evaluation.compare_runs(runs["base"], runs["adapter"])
            compare_dir = evaluation.write_comparison(comparison, self.out / "compare", labels=("base", "adapter"))
            self.artifacts["comparison"] = compare_dir
            self.artifacts["benchmark"] = bench
            self.console.print(comparison_table(comparison))
            after = json.loads((runs["adapter"] / "metrics.json").read_text())
            for metric, floor in FLOORS.items():
                ok = after[metric] >= floor
                self.console.print(f"{metric} = {after[metric]:.3f} (floor {floor}): "
                                   + ("[green]met" if ok else "[red]NOT met"))
            return after

    def merge_and_release(self) -> None:
        from nyxmed.merge import merge_adapter
        from nyxmed.releases import LocalRegistry
        from nyxmed.releases.publish import CardInputs, publish

        with self.step("6. merge (verified equal to base + adapter), register and promote"):
            manifest = merge_adapter(str(self.out / "base"), self.out / "adapter", self.out / "merged",
                                     dtype="float32", overwrite=True)
            self.console.print(f"merged: verification {manifest.get('verification', {})}")
            self.artifacts["merged model"] = self.out / "merged"
            registry = LocalRegistry(self.out / "registry")
            inputs = CardInputs(metrics=str(self.out / "eval_adapter" / "metrics.json"),
                                compare=str(self.out / "compare" / "comparison.json"), previous="untrained base",
                                dataset_manifest=str(self.out / "data" / "manifest.json"))
            staged = publish(self.out / "adapter", self.cfg.version, registry, self.out / "staging", inputs=inputs)
            registry.promote(self.cfg.version)
            table = Table("version", "kind", "production", title=f"release registry {registry.root}")
            for rel in registry.versions():
                name = rel.get("version")
                table.add_row(name, rel.get("kind", ""), "yes" if name == registry.production() else "")
            self.console.print(table)
            self.console.print(f"rollback in one command: nyxmed releases --registry {registry.root} rollback")
            self.artifacts["release registry"] = self.out / "registry"
            self.artifacts["model card"] = staged[-1].folder / "README.md"

    def code_new_reports(self) -> list[dict[str, Any]]:
        """Code reports the release never saw (another seed) with the production release: its adapter and
        the preprocessor its training prompts were made with, under the code-line grammar, as
        `nyxmed code --release` does (:func:`nyxmed.coder.load_coder`)."""
        from nyxmed.coder import load_coder
        from nyxmed.constrained import GrammarSettings
        from nyxmed.synth import generate_cases

        with self.step("7. code new reports with the production release (constrained decoding)"):
            coder = load_coder(release=str(self.out / "registry"), batch_size=self.cfg.eval_batch_size,
                               max_new_tokens=self.cfg.eval_max_new_tokens, dtype="float32", device="cpu",
                               grammar=GrammarSettings())
            pre, version = coder.preprocessor, coder.version
            reports = [replace(c, id=f"new-{i + 1}") for i, c in
                       enumerate(generate_cases(self.cfg.new_reports, self.cfg.seed + 2))]
            coded, _ = coder.code(reports)
            gold = {r.id: r for r in reports}
            table = Table("report", "predicted", "gold", "invalid codes",
                          title=f"new reports coded by release {version} (preprocessor {pre.id[:12]})")
            for c in coded:
                table.add_row(gold[c.id].report_text[:60].replace("\n", " ") + "...", c.code_line,
                              gold[c.id].codes.render(), " ".join(c.invalid_codes) or "-")
            self.console.print(table)
            write_atomic(self.out / "coded_new_reports.jsonl", "".join(json.dumps(c.to_dict()) + "\n" for c in coded))
            self.artifacts["coded new reports"] = self.out / "coded_new_reports.jsonl"
            return [c.to_dict() for c in coded]

    def run(self) -> dict[str, Any]:
        started = time.time()
        fresh_output_dir(self.out)
        cases = self.cases()
        self.base(cases)
        self.dataset(cases)
        self.train()
        metrics = self.evaluate()
        self.merge_and_release()
        self.code_new_reports()
        self.console.rule("[bold]8. artifacts")
        table = Table("artifact", "path", title=f"everything is under {self.out}")
        for name, path in self.artifacts.items():
            table.add_row(name, str(path))
        self.console.print(table)
        total = time.time() - started
        timing = Table("step", "seconds", title="wall time")
        for title, secs in [*self.timings.items(), ("total", total)]:
            timing.add_row(title, f"{secs:.0f}")
        self.console.print(timing)
        summary = {"seconds": total, "timings": self.timings, "metrics": {k: metrics[k] for k in FLOORS},
                   "floors_met": all(metrics[k] >= v for k, v in FLOORS.items()),
                   "artifacts": {k: str(v) for k, v in self.artifacts.items()}}
        write_atomic(self.out / "demo_summary.json", json.dumps(summary, indent=2))
        return summary


class _Timer:
    def __init__(self, sink: dict[str, float], title: str):
        self.sink, self.title = sink, title

    def __enter__(self):
        self.t0 = time.time()
        return self

    def __exit__(self, *exc):
        self.sink[self.title] = time.time() - self.t0
        return False


def comparison_table(comparison: dict[str, Any], labels: tuple[str, str] = ("base", "adapter"),
                     title: str = "untrained base vs trained adapter") -> Table:
    """The shown metrics of a comparison: before, after, difference and its paired 95% CI."""
    table = Table("metric", f"before ({labels[0]})", f"after ({labels[1]})", "difference", "95% CI of difference",
                  title=title)
    for name in SHOWN:
        row = comparison["metrics"][name]
        lo, hi = row["diff_ci95"]
        table.add_row(name, _fmt(row["a"]), _fmt(row["b"]), _fmt(row["diff"]),
                      "" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]")
    return table


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else ("" if v is None else str(v))


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole demo; returns timings, the floor metrics and artifact paths."""
    return Demo(cfg).run()
