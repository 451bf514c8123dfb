"""The model card of a release: what it does, evaluation, comparison, training, data composition, use.

Every input is read defensively (a missing key leaves its row out) and only numbers and known short
labels are taken from it: the card never carries report text or any record from the data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from nyxmed.io import markdown_table

# Metrics in the order a reader wants them; other numeric top-level keys of metrics.json follow.
HEADLINE = ("all_three_exact", "cpt_exact", "cpt_primary", "modifier_exact", "icd_exact", "icd_any_overlap",
            "icd_root_overlap", "icd_recall_mean", "icd_precision_mean", "icd_micro_f1", "cpt_micro_f1",
            "icd_macro_f1_chapter", "icd_macro_f1_category", "icd_macro_f1_code", "invalid_code_rate",
            "parse_failure_rate")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_.]{1,64}$")  # metric names: identifiers, never free text
_LABEL = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")  # benchmark names and splits in the model-index
_SHA = re.compile(r"^[0-9a-f]{16,64}$")
TASK = ("text-generation", "Radiology billing-code assignment")  # the model-index task (type, name)


def _read_json(path: str | Path | None) -> dict[str, Any]:
    if not path:
        return {}
    value = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, got {type(value).__name__}")
    return value


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fmt(value: Any) -> str:
    v = _num(value)
    if v is None:
        return "–"
    return str(value) if isinstance(value, int) else f"{v:.4f}"  # counts stay counts, rates get 4 places


def _ci(value: Any) -> str:
    if isinstance(value, dict):
        value = [value.get("low", value.get("lo")), value.get("high", value.get("hi"))]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_num(v) is not None for v in value):
        return f"[{_num(value[0]):.4f}, {_num(value[1]):.4f}]"
    return "–"


def _metric_names(metrics: dict[str, Any]) -> list[str]:
    rest = sorted(k for k, v in metrics.items() if k not in HEADLINE and _num(v) is not None and _NAME.match(k))
    return [k for k in HEADLINE if _num(metrics.get(k)) is not None] + [k for k in rest if k != "n"]


def evaluation_section(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "No evaluation was attached to this release (`--metrics`)."
    cis = metrics.get("ci95") or metrics.get("ci") or {}
    rows = [(f"`{k}`", _fmt(metrics[k]), _ci(cis.get(k) if isinstance(cis, dict) else None))
            for k in _metric_names(metrics)]
    boot = metrics.get("bootstrap") if isinstance(metrics.get("bootstrap"), dict) else {}
    note = f"Records scored: {_fmt(metrics.get('n'))}."
    if _num(boot.get("resamples")) is not None:
        note += f" 95% CIs: percentile bootstrap, {_fmt(boot['resamples'])} resamples over records."
    return note + "\n\n" + markdown_table(["metric", "value", "95% CI"], rows)


def eval_results(metrics: dict[str, Any]) -> list:
    """huggingface_hub ``EvalResult`` rows (the card's model-index) for every metric the evaluation table shows."""
    from huggingface_hub import EvalResult

    run = metrics.get("run") if isinstance(metrics.get("run"), dict) else {}
    bench = run.get("benchmark") if isinstance(run.get("benchmark"), dict) else {}
    def label(value: Any, pattern: re.Pattern) -> str | None:
        return value if isinstance(value, str) and pattern.match(value) else None

    split, name = label(run.get("split"), _LABEL), label(bench.get("name"), _LABEL)
    revision = label(bench.get("manifest_hash"), _SHA)  # pins the benchmark's records
    dataset_type = f"nyxmed-benchmark-{name}" if name else "nyxmed-heldout"
    dataset_name = f"nyxmed benchmark {name}" if name else f"nyxmed {split or 'held-out'} split"
    return [EvalResult(task_type=TASK[0], task_name=TASK[1], dataset_type=dataset_type, dataset_name=dataset_name,
                       dataset_split=split, dataset_revision=revision, metric_type=k, metric_name=k,
                       metric_value=_num(metrics[k])) for k in _metric_names(metrics)]


def comparison_section(compare: dict[str, Any], previous: str | None, version: str) -> str:
    table = compare.get("metrics") if isinstance(compare.get("metrics"), dict) else {}
    rows = []
    for name in [k for k in HEADLINE if k in table] + sorted(k for k in table if k not in HEADLINE):
        r = table[name]
        if not isinstance(r, dict) or not _NAME.match(name):
            continue
        p = r.get("mcnemar", {}).get("p_value") if isinstance(r.get("mcnemar"), dict) else None
        rows.append((f"`{name}`", _fmt(r.get("a")), _fmt(r.get("b")), _fmt(r.get("diff")), _ci(r.get("diff_ci95")),
                     _fmt(p)))
    if not rows:
        return ""
    prev = previous or "previous version"
    return (f"## Comparison with {prev}\n\nSame records scored for both (n = {_fmt(compare.get('n'))}); "
            f"paired bootstrap CI of the difference; McNemar exact test for exact-match metrics.\n\n"
            + markdown_table(["metric", prev, version, "difference", "95% CI", "McNemar p"], rows))


def training_section(config: dict[str, Any], training: dict[str, Any]) -> str:
    model, lora, train = (config.get(k) if isinstance(config.get(k), dict) else {} for k in ("model", "lora", "train"))
    facts = [
        ("LoRA rank / alpha / dropout", f"{lora.get('r', '–')} / {lora.get('alpha', '–')} / {lora.get('dropout', '–')}"),
        ("LoRA target modules", ", ".join(str(m) for m in lora.get("target_modules", []) if _NAME.match(str(m))) or "–"),
        ("learning rate, schedule", f"{train.get('learning_rate', '–')}, {train.get('lr_scheduler', '–')}"),
        ("epochs", _fmt(train.get("epochs"))),
        ("micro batch x grad. accumulation", f"{train.get('micro_batch_size', '–')} x "
                                              f"{train.get('gradient_accumulation_steps', '–')}"),
        ("effective batch size", _fmt(training.get("effective_batch_size"))),
        ("precision", str(model.get("dtype", "–")) if _NAME.match(str(model.get("dtype", "–"))) else "–"),
        ("steps", _fmt(training.get("global_step"))),
        ("best step / best eval loss", f"{_fmt(training.get('best_step'))} / {_fmt(training.get('best_eval_loss'))}"),
        ("stop reason", str(training.get("stop_reason")) if _NAME.match(str(training.get("stop_reason"))) else "–"),
        ("tokens seen", _fmt(training.get("tokens_seen"))),
    ]
    out = "## Training\n\n" + markdown_table(["", ""], facts)
    curve = [r for r in training.get("eval_loss_curve", []) if isinstance(r, dict)]
    if curve:
        out += "\n\nEvaluation loss during training:\n\n" + markdown_table(
            ["step", "eval loss"], ((_fmt(r.get("step")), _fmt(r.get("eval_loss"))) for r in curve))
    return out


def data_section(manifest: dict[str, Any]) -> str:
    counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
    by_role = counts.get("by_role_split") if isinstance(counts.get("by_role_split"), dict) else {}
    if not counts:
        return "## Data\n\nNo dataset manifest was attached to this release (`--dataset-manifest`)."
    splits = sorted({s for row in by_role.values() if isinstance(row, dict) for s in row if _NAME.match(s)},
                    key=lambda s: ("train", "validation", "heldout").index(s) if s in ("train", "validation", "heldout") else 9)
    rows = [(role, *(_fmt(row.get(s)) for s in splits)) for role, row in by_role.items()
            if isinstance(row, dict) and _NAME.match(str(role))]
    dup = counts.get("duplicates_removed") if isinstance(counts.get("duplicates_removed"), dict) else {}
    weights = manifest.get("weights") if isinstance(manifest.get("weights"), dict) else {}
    return ("## Data\n\nCounts of records (no record content is published). "
            f"Input {_fmt(counts.get('input'))}, after de-duplication {_fmt(counts.get('after_dedup'))} "
            f"({_fmt(dup.get('exact'))} exact and {_fmt(dup.get('near'))} near duplicates removed), "
            f"dropped as too long {_fmt(counts.get('too_long_dropped'))}. Loss weight of specificity pairs: "
            f"{_fmt(weights.get('specificity'))}, of primary-ICD corrections: {_fmt(weights.get('primary'))}.\n\n" + markdown_table(["role", *splits], rows))


def preprocessor_section(settings: dict[str, Any] | None, preprocessor: dict[str, Any] | None) -> str:
    """The preprocessor the release codes with: its id and the settings that decide a prompt (no pool text)."""
    if not preprocessor:
        return ("## Preprocessor\n\nThis release carries no preprocessor: prompts for `nyxmed code` must be made "
                "with the one its training data was built with.")
    settings = settings or {}
    retrieval, prompt = settings.get("retrieval") or {}, settings.get("prompt") or {}
    facts = [("preprocessor id", f"`{preprocessor['id']}`"),
             ("in this release", "all of it" if preprocessor.get("complete") else
              "manifest and settings only (its retrieval pool holds training reports)")]
    facts += [(k, _fmt(v)) for k, v in (
        ("few-shot examples", retrieval.get("n_shots")), ("CPT candidates", retrieval.get("cpt_candidates")),
        ("ICD candidates", retrieval.get("icd_candidates")), ("dense retrieval", retrieval.get("dense")),
        ("reranker", retrieval.get("reranker")), ("explicit share", prompt.get("explicit_share")),
        ("max prompt tokens", prompt.get("max_length")), ("pool size", settings.get("pool_size")),
        ("ICD-10-CM release", settings.get("icd10cm_release"))) if v is not None]
    return "## Preprocessor\n\n" + markdown_table(["", ""], facts)


def lineage_section(parent: dict[str, Any] | None, version: str) -> str:
    """Which release this version was trained on and how its model is put together (empty for a first version)."""
    if not parent or not _LABEL.match(str(parent.get("version"))):
        return ""
    prev = parent["version"]
    facts = [("parent release", f"`{prev}`"), ("parent adapter sha256", f"`{parent.get('adapter_sha256') or '–'}`"),
             ("parent's base fingerprint", f"`{parent.get('base_model_fingerprint') or '–'}`"),
             ("merged parent fingerprint (this adapter's base)", f"`{parent.get('merged_fingerprint') or '–'}`")]
    return (f"## Lineage\n\n`{version}` is a LoRA adapter trained on `{prev}` merged into its base. To load it: "
            f"base + adapter, i.e. merge `{prev}`'s adapter into `{prev}`'s base (`nyxmed merge`, or train with "
            f"`model.base_model: release:REGISTRY:{prev}`, which merges and caches it) and apply this adapter on "
            f"top; or merge this adapter into that merged model and publish the result as a merged release.\n\n"
            + markdown_table(["", ""], facts))


def build_card(*, repo_id: str | None, version: str, kind: str, base_model: str | None, license: str,
               metrics_path=None, compare_path=None, previous: str | None = None, config_path=None,
               training_metrics_path=None, dataset_manifest_path=None, preprocessor: dict[str, Any] | None = None,
               preprocessor_settings: dict[str, Any] | None = None, parent: dict[str, Any] | None = None) -> str:
    """The README.md of a release: YAML metadata (with the model-index from ``metrics_path``) via
    huggingface_hub's ModelCardData, then Markdown."""
    from huggingface_hub import ModelCard, ModelCardData

    metrics, compare = _read_json(metrics_path), _read_json(compare_path)
    training, manifest = _read_json(training_metrics_path), _read_json(dataset_manifest_path)
    config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) if config_path else {}
    hub_base = base_model if base_model and HUB_ID.match(base_model) and not Path(base_model).exists() else None
    name = repo_id or "nyxmed"
    results = eval_results(metrics) or None  # model_name is only the model-index's name: unset without results
    data = ModelCardData(base_model=hub_base, library_name="transformers" if kind == "merged" else "peft",
                         license=license, pipeline_tag="text-generation",
                         tags=["nyxmed", "radiology", "medical-coding", "cpt", "icd-10-cm", "lora", kind],
                         model_name=name if results else None, eval_results=results)
    load = (f'AutoModelForCausalLM.from_pretrained("{name}", revision="{version}")' if kind == "merged" else
            f'AutoPeftModelForCausalLM.from_pretrained("{name}", revision="{version}")')
    body = "\n\n".join(s for s in [
        f"# {name} — {version}",
        "Given a radiology report (exam description, reason for exam, findings), this model writes the "
        "billing codes a certified coder would assign, as one line: `CPT[ CPT2], MOD, ICD1, ICD2, ...` "
        "(CPT/HCPCS procedure codes, modifiers, ICD-10-CM diagnosis codes in order).",
        f"Release `{version}` is a {'merged model' if kind == 'merged' else 'LoRA adapter'}"
        + (f" for `{hub_base}`" if hub_base else "") + f" ({kind}). Every file's sha256 is in `release.json`.\n\n"
        f"```python\n{load}\n```",
        "## Evaluation\n\n" + evaluation_section(metrics),
        comparison_section(compare, previous, version),
        lineage_section(parent, version),
        training_section(config if isinstance(config, dict) else {}, training),
        data_section(manifest),
        preprocessor_section(preprocessor_settings, preprocessor),
        "## Intended use\n\nDrafting billing codes for radiology reports for review by certified coders, in "
        "the prompt format of the nyxmed training recipe (the same chat template and system prompt).",
        "## Limitations\n\nCodes are suggestions, not billing decisions: a certified coder must review every "
        "line. Accuracy is measured on the held-out set above and drops on modalities, sites or report styles "
        "unlike the training data. ICD-10-CM and CPT change every year: codes retired after the training "
        "data's code release can be produced. CPT validity depends on a licensed CPT table. Not for "
        "clinical decisions.",
    ] if s)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n"))
