"""The next version on top of the last (``nyxmed demo --continue``), after ``nyxmed demo`` left its folder.

Production release v1 of the demo registry -> new reviewed cases with primary-ICD corrections (weighted)
and a retained set filtered against what v1 trained on -> dataset with v1's preprocessor -> LoRA on v1
merged (``model.base_model: release:<registry>``, merged once and cached) -> parent vs child on the
demo's fixed benchmark with paired CIs -> v2 released with the comparison in its card and promoted
unless it is worse beyond a CI on a gate metric (:data:`GATE`); the registry shows v1 -> v2.
Everything new lands in ``<out>/continue``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.table import Table

from nyxmed.config import DemoConfig, EvalConfig
from nyxmed.demo import Demo, comparison_table
from nyxmed.errors import UsageError
from nyxmed.io import fresh_output_dir, read_json, write_atomic

CONTINUE_DIR = "continue"
# The release gate: the child is promoted only when none of these is worse than the parent beyond its
# paired 95% CI (the upper end of the CI of child - parent below 0); else it is registered, not promoted.
GATE = ("cpt_exact", "modifier_exact", "icd_exact", "icd_root_overlap", "all_three_exact")
NEEDS = ("registry", "data", "bench.json", "cases.jsonl")  # what `nyxmed demo` left and this reads


def continuation_inputs(cfg: DemoConfig) -> list[Path]:
    """What the continuation reads from the first demo's folder (the output must be none of them)."""
    return [Path(cfg.out_dir).resolve() / n for n in NEEDS if n != "registry"]


class ContinuationDemo(Demo):
    """v2 on top of production v1: the demo's steps with the parent release as base."""

    def __init__(self, cfg: DemoConfig, console=None):
        first = Path(cfg.out_dir).resolve()
        missing = [n for n in NEEDS if not (first / n).exists()]
        if missing:
            raise UsageError(f"demo --continue: {first} has no {', '.join(missing)}: run `nyxmed demo "
                             f"--out {cfg.out_dir}` first")
        self.first = first
        self.registry_dir = first / "registry"
        super().__init__(replace(cfg, out_dir=str(first / CONTINUE_DIR)), console)

    def _recipe_overrides(self) -> list[str]:
        # continuation defaults first, so that the user's recipe keys (cfg.overrides) win
        return [f"data.out_dir={self.out / 'data'}", f"model.base_model=release:{self.registry_dir}",
                f"model.merge_cache={self.out / 'merged'}", f"train.output_dir={self.out / 'adapter'}",
                f"train.dataset_dir={self.out / 'data' / 'dataset'}", f"data.seed={self.cfg.seed}",
                f"data.primary_weight={self.cfg.continue_primary_weight}",
                f"data.retained=[{self.out / 'retained.jsonl'}]", f"train.max_steps={self.cfg.continue_steps}",
                f"train.learning_rate={self.cfg.continue_learning_rate}",
                # parent and child are compared on the first demo's benchmark: a small held-out split here
                "data.heldout_size=0.1",
                *self.cfg.overrides]

    # ------------------------------------------------------------------ steps
    def check_version_is_new(self) -> None:
        from nyxmed.releases import LocalRegistry

        if self.cfg.continue_version in {r["version"] for r in LocalRegistry(self.registry_dir).versions()}:
            raise UsageError(f"{self.registry_dir} already has {self.cfg.continue_version}: pass "
                             f"continue_version=<another> (or rerun `nyxmed demo` for a fresh registry)")

    def parent(self):
        from nyxmed.releases.parent import resolve_parent

        with self.step("1. the parent: production release, merged once (verified) and cached by content hash"):
            m = self.recipe.model
            self.parent_release = resolve_parent(m.base_model, m.merge_cache, m.dtype)
            p = self.parent_release
            self.console.print(f"parent {p.version} ({p.kind}) from {p.registry}; merged model {p.model_dir}; "
                               f"preprocessor {p.preprocessor_id[:12] if p.preprocessor_id else None}")
            self.artifacts["parent merged model"] = p.model_dir

    def new_cases(self):
        """Reviewed cases of another seed with primary-ICD corrections, and a retained set: production cases
        the parent trained on (filtered out by its training records) and others (kept)."""
        from nyxmed.sources import read_cases, write_cases
        from nyxmed.synth import generate_cases
        from nyxmed.synth.corrections import with_primary_corrections

        with self.step("2. new reviewed cases with primary-ICD corrections, retained cases"):
            reviewed = with_primary_corrections(generate_cases(self.cfg.continue_cases, self.cfg.seed + 3),
                                                share=0.8, seed=self.cfg.seed)
            records = [json.loads(line) for line in (self.first / "data" / "records.jsonl").open()]
            trained = {r["id"] for r in records if r.get("split") == "train"}
            first_cases = read_cases(self.first / "cases.jsonl", progress=False).cases
            rng = random.Random(self.cfg.seed)
            seen_by_parent = rng.sample([c for c in first_cases if c.id in trained],
                                        min(self.cfg.continue_retained // 2, len(trained)))
            others = generate_cases(self.cfg.continue_retained - len(seen_by_parent), self.cfg.seed + 4)
            write_cases(seen_by_parent + others, self.out / "retained.jsonl")
            self.artifacts["retained cases"] = self.out / "retained.jsonl"
            self.console.print(f"{len(reviewed)} reviewed cases; retained: {len(seen_by_parent)} the parent "
                               f"trained on + {len(others)} others")
            return reviewed

    def dataset(self, cases) -> None:
        from transformers import AutoTokenizer

        from nyxmed.releases.parent import tokenizer_source

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(self.recipe.model))  # the release's own
        super().dataset(cases, title="3. dataset: the parent's preprocessor, primary corrections weighted, "
                                     "retained set filtered by the parent's training records")

    def compare(self) -> dict[str, Any]:
        from nyxmed.releases.parent import compare_with_parent

        with self.step(f"5. parent {self.parent_release.version} vs child on the demo's fixed benchmark"):
            cfg = replace(EvalConfig(), data=str(self.first / "data"), benchmark=str(self.first / "bench.json"),
                          batch_size=self.cfg.eval_batch_size, max_new_tokens=self.cfg.eval_max_new_tokens,
                          device="cpu")
            comparison = compare_with_parent(self.parent_release, self.out / "adapter", cfg, self.out / "compare")
            self.console.print(comparison_table(comparison, (self.parent_release.version, self.cfg.continue_version),
                                                f"parent {self.parent_release.version} vs child"))
            self.artifacts["parent comparison"] = self.out / "compare"
            return comparison

    @staticmethod
    def regressions(comparison: dict[str, Any]) -> list[str]:
        """The gate metrics the child is worse at beyond the CI."""
        return [m for m in GATE if (hi := comparison["metrics"][m]["diff_ci95"][1]) is not None and hi < 0]

    def release(self, comparison: dict[str, Any]) -> list[str]:
        """Register the child; promote it unless the gate finds a regression. Returns the regressions."""
        from nyxmed.releases import LocalRegistry
        from nyxmed.releases.publish import CardInputs, publish
        from nyxmed.releases.views import versions_table

        version, parent = self.cfg.continue_version, self.parent_release.version
        with self.step(f"6. release {version} with the comparison in its card; promote if no regression"):
            registry = LocalRegistry(self.registry_dir)
            inputs = CardInputs(metrics=str(self.out / "compare" / "child" / "metrics.json"),
                                compare=str(self.out / "compare" / "comparison.json"), previous=parent,
                                dataset_manifest=str(self.out / "data" / "manifest.json"))
            staged = publish(self.out / "adapter", version, registry, self.out / "staging", inputs=inputs)
            worse = self.regressions(comparison)
            if not worse:
                registry.promote(version)
            self.console.print(versions_table(registry))
            if worse:
                self.console.print(f"[yellow]{version} is registered, not promoted[/]: worse than {parent} beyond "
                                   f"the 95% CI on {', '.join(worse)}; production stays {parent}. Promote it "
                                   f"anyway: nyxmed releases --registry {registry.root} promote {version}",
                                   highlight=False)
            else:
                self.console.print(f"roll back in one command: nyxmed releases --registry {registry.root} rollback "
                                   f"(production -> {parent}, coding with its adapter and preprocessor)",
                                   markup=False)
            self.artifacts["model card"] = staged[-1].folder / "README.md"
            return worse

    def run(self) -> dict[str, Any]:
        started = time.time()
        self.check_version_is_new()  # before anything is replaced
        fresh_output_dir(self.out)
        self.parent()
        cases = self.new_cases()
        self.dataset(cases)
        self.train(title=f"4. LoRA on {self.parent_release.version} merged: train.py, DeepSpeed ZeRO-3 on "
                         f"{self.cfg.ranks} CPU processes")
        comparison = self.compare()
        regressions = self.release(comparison)
        manifest = read_json(self.out / "data" / "manifest.json")
        summary = {"seconds": time.time() - started, "timings": self.timings,
                   "parent": self.parent_release.version, "child": self.cfg.continue_version,
                   "promoted": not regressions, "regressions": regressions,
                   "counts": {k: manifest["counts"].get(k) for k in ("by_role", "retained_filtered_by_previous_manifest")},
                   "comparison": {k: {f: v[f] for f in ("a", "b", "diff", "diff_ci95")}
                                  for k, v in comparison["metrics"].items()},
                   "artifacts": {k: str(v) for k, v in self.artifacts.items()}}
        write_atomic(self.out / "continue_summary.json", json.dumps(summary, indent=2))
        return summary


def run_continuation(cfg: DemoConfig) -> dict[str, Any]:
    """Train, compare and release the next version on top of the demo's production release."""
    return ContinuationDemo(cfg).run()


__all__ = ["ContinuationDemo", "continuation_inputs", "run_continuation"]
