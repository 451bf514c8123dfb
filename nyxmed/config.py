"""The one config system: dataclass sections, YAML files and ``key=value`` overrides.

A recipe (``configs/v17.yaml``) has one YAML map per section of :class:`Recipe`. Overrides use
dotted keys (``train.learning_rate=2e-5``); values are read as YAML, then checked against the
field's type. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from nyxmed.errors import UsageError
from nyxmed.io import write_atomic

if TYPE_CHECKING:
    import peft

T = TypeVar("T")


class ConfigError(UsageError):
    """A bad config key or value; the message names the key."""


# ----------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    """Where cases come from and how they are split."""

    sources: list[str] = field(default_factory=list)  # case files or postgresql:// queries; empty = synthetic
    synth_n: int = 3000  # synthetic cases when no source is given
    synth_seed: int = 17
    cpt_table: str | None = None  # licensed CPT CSV (code,description): makes CPT validity strict
    previous_manifest: str | None = None  # previous version's training manifest (filters `retained`)
    retained: list[str] = field(default_factory=list)  # earlier version's pool
    hard_ids: list[str] = field(default_factory=list)
    specificity_ids: list[str] = field(default_factory=list)
    specificity_weight: int = 3
    heldout_size: float = 0.15  # fraction (<1) or count (>=1); the V17 recipe holds out 5,950
    val_size: int = 250
    seed: int = 17
    out_dir: str = "out/data"
    dedup: bool = True  # drop exact and near-duplicate reports before splitting
    dedup_jaccard: float = 0.9  # char-shingle MinHash Jaccard at or above which two reports are near duplicates
    write_cases: bool = True  # also write <out>/cases/<split>.jsonl (the evaluator's --gold input)


@dataclass
class RetrievalConfig:
    """Few-shot retrieval, candidate lists and the leakage defense."""

    dense: bool = True
    embedding_model: str | None = None  # local path; None = the packaged all-MiniLM-L6-v2
    reranker: str | None = None  # local cross-encoder path; None = no reranking
    n_shots: int = 3
    bm25_top: int = 50
    dense_top: int = 50
    rrf_k: int = 60
    cpt_candidates: int = 8
    icd_candidates: int = 12
    widen_icd: bool = True  # add specific codes of candidate categories
    widen_per_code: int = 3  # at most this many code-system neighbours per retrieved ICD code
    widen_discount: float = 0.5  # a widened code scores this fraction of the code that brought it
    candidate_neighbours: int = 20  # unblocked neighbours whose gold codes feed the candidate lists
    rerank_top: int = 20  # fused neighbours re-scored by the cross-encoder when `reranker` is set
    leak_cosine: float = 0.97  # embedding cosine at or above which a neighbour is a near duplicate
    leak_jaccard: float = 0.85  # MinHash char-shingle Jaccard for the same check when dense is off
    batch_size: int = 2048  # queries per vectorized retrieval batch
    bm25_query_terms: int = 32  # a query keeps its rarest terms only (0 = all): speed on long reports
    bm25_threads: int = 0  # bm25s n_threads for retrieval (0 = no extra threads; measured no gain on 2 cores)


@dataclass
class PromptConfig:
    """Prompt layout."""

    explicit_share: float = 0.7
    rules_file: str | None = None  # None = nyxmed/resources/coding_rules.txt
    max_length: int = 2560
    seed: int = 17
    min_body_tokens: int = 64  # report body head kept when the middle of a long body is cut


@dataclass
class ModelConfig:
    base_model: str = "meta-llama/Meta-Llama-3-70B-Instruct"  # local path or Hub id
    tokenizer: str | None = None  # defaults to base_model
    attn_implementation: str = "sdpa"
    dtype: str = "bfloat16"


@dataclass
class LoraSettings:
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def to_peft(self, **overrides: Any) -> peft.LoraConfig:
        """The ``peft.LoraConfig`` of these settings (causal LM, no bias); ``overrides`` go to it as given."""
        from peft import LoraConfig

        return LoraConfig(**{"r": self.r, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                             "target_modules": list(self.target_modules), "bias": "none",
                             "task_type": "CAUSAL_LM", **overrides})


@dataclass
class TrainConfig:
    stage: str = "sft"  # sft | grpo (the `grpo:` section; docs/training.md)
    output_dir: str = "out/train"
    dataset_dir: str | None = None  # a saved DatasetDict from `nyxmed build-data`
    epochs: float = 2.0
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    gradient_checkpointing: bool = True
    bf16: bool = True
    eval_steps: int = 50
    save_steps: int = 50
    logging_steps: int = 10
    early_stopping_patience: int = 3
    early_stopping_threshold: float = 0.0
    deepspeed: str | None = "ds_configs/zero3.json"  # relative to the working dir or the project root; null = none
    seed: int = 17
    max_steps: int = -1
    resume: bool = False  # continue from the newest complete checkpoint under <output_dir>/checkpoints
    eval_batch_size: int = 1  # per device
    save_total_limit: int = 3  # Trainer checkpoints kept (the best one is always kept)
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    dataloader_num_workers: int = 0
    # Speed (docs/performance.md): padding-free packing of each micro-batch into one row, fused
    # kernels, and ZeRO-3 knobs written over the DeepSpeed JSON (null = keep the JSON's value).
    packing: bool = False
    packing_max_tokens: int | None = None  # None = the whole micro-batch in one row
    use_liger: bool = False  # Liger Kernel fused RMSNorm/SwiGLU/RoPE (GPU; nyxmed.training.kernels)
    zero3_prefetch_bucket_size: int | None = None
    zero3_max_live_parameters: int | None = None
    zero3_max_reuse_distance: int | None = None
    zero3_param_persistence_threshold: int | None = None
    zero3_overlap_comm: bool | None = None
    zero3_reduce_bucket_size: int | None = None
    # Where the Trainer logs (docs/training.md): tensorboard, wandb, mlflow; an empty list logs nowhere.
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    # Extra TrainingArguments fields, passed as given; those nyxmed sets itself are refused.
    trainer_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [r for r in self.report_to if r not in REPORT_TO_PACKAGES]
        if unknown:
            raise ConfigError(f"train.report_to: {unknown[0]!r} is not one of {', '.join(REPORT_TO_PACKAGES)}")
        if not isinstance(self.trainer_args, dict):
            raise ConfigError(f"train.trainer_args: expected a map of TrainingArguments fields, "
                              f"got {self.trainer_args!r}")
        if self.trainer_args:
            _check_trainer_args(self.trainer_args)


# The logging integrations train.report_to accepts, and the modules each needs (any one of them).
REPORT_TO_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


def _check_trainer_args(args: dict[str, Any]) -> None:
    """Check names and values of ``train.trainer_args`` as ``HfArgumentParser(TrainingArguments)``
    reads them from a command line, then build TrainingArguments from them (its own checks)."""
    import argparse
    import tempfile

    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser(TrainingArguments)
    actions = {a.dest: a for a in parser._actions}
    for name, value in args.items():
        key = f"train.trainer_args.{name}"
        action = actions.get(name)
        if action is None or not name.isidentifier():
            raise ConfigError(f"{key}: not a transformers TrainingArguments field")
        if isinstance(value, (dict, list)) or value is None or action.type is None:
            continue  # maps and lists are the field's own business: TrainingArguments checks them below
        try:
            parsed = action.type(str(value).lower() if isinstance(value, bool) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"{key}: bad value {value!r} ({exc})") from exc
        if action.choices and parsed not in action.choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            TrainingArguments(output_dir=tmp, report_to="none", **args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"train.trainer_args ({', '.join(args)}): {exc}") from exc


@dataclass
class RewardWeights:
    """Weights of the GRPO reward components (nyxmed.rewards; formulas in docs/training.md)."""

    cpt: float = 1.0  # 0.5 * primary CPT right + 0.5 * CPT set exact
    modifiers: float = 0.5  # modifier set exact
    icd: float = 2.0  # ICD hierarchical soft F1 (nyxmed.metrics.icd_hierarchical_match)
    icd_primary: float = 1.0  # hierarchy credit of the first ICD code against the gold first
    icd_category_credit: float = 0.5  # credit of a code in the gold code's 3-character category
    icd_chapter_credit: float = 0.2  # credit of a code in the gold code's chapter
    invalid_codes: float = 0.5  # cost per code that fails the code systems
    extra_codes: float = 0.1  # cost per predicted code matched to no gold code
    unparseable: float = 2.0  # cost of output with no code line
    prose: float = 0.5  # cost of anything besides the one code line (labels, prose, more lines)


@dataclass
class GrpoConfig:
    """The GRPO stage (train.stage=grpo): TRL's GRPOTrainer on the SFT result, with code-line rewards."""

    # Start: continue the SFT adapter (model.base_model = the SFT base), or leave it null and set
    # model.base_model to the merged SFT model for a new adapter (docs/training.md says when).
    sft_adapter: str | None = None
    split: str = "train"  # dataset split whose system/user prompts are the rollout prompts
    max_prompts: int | None = None  # first N prompts of the split (None = all)
    num_generations: int = 8  # completions per prompt (the group)
    max_completion_length: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0  # KL coefficient; 0 = no reference model (saves its memory)
    loss_type: str = "dapo"  # TRL: grpo | dapo | dr_grpo | bnpo | ...
    epsilon: float = 0.2  # clipping range
    num_iterations: int = 1  # optimization passes per generation batch
    scale_rewards: str = "group"  # group | batch | none
    use_vllm: bool = False
    vllm_mode: str = "colocate"  # colocate (same GPUs) | server (`trl vllm-serve` on other GPUs)
    vllm_server_base_url: str | None = None  # server mode: e.g. http://10.0.0.5:8000
    vllm_gpu_memory_utilization: float = 0.3  # colocate mode: share of each GPU vLLM may take
    vllm_tensor_parallel_size: int = 1  # colocate mode
    rewards: RewardWeights = field(default_factory=RewardWeights)


@dataclass
class EvalConfig:
    """One evaluation run (docs/metrics.md): a model and a benchmark, or saved predictions to rescore."""

    model: str | None = None  # base or merged model path (served model name for backend=openai)
    adapter: str | None = None  # PEFT adapter folder applied on top of `model`
    data: str | None = None  # built dataset folder (<data>/dataset) holding the prompts and gold
    split: str = "heldout"
    benchmark: str | None = None  # manifest from `nyxmed benchmark create`; refuses changed records
    predictions: str | None = None  # rescoring: JSONL lines {id, output}; no model is run
    gold: str | None = None  # rescoring: a case file or a built dataset folder
    training_metrics: str | None = None  # training_metrics.json: adds the eval-loss curve to the chart
    out_dir: str = "out/eval"
    batch_size: int = 4
    max_new_tokens: int = 64
    backend: str = "transformers"  # transformers | vllm | openai
    endpoint: str | None = None  # OpenAI-compatible base URL for backend=openai
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the endpoint's key, if any
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    device: str = "auto"  # auto | cpu | cuda
    tensor_parallel_size: int = 1  # vLLM
    cpt_table: str | None = None  # licensed CPT CSV: strict CPT validity in invalid_code_rate
    bootstrap: int = 1000
    seed: int = 17
    constrained: bool = field(default=False, metadata={"help": (
        "decode under the code-line grammar (docs/codeline.md): no code outside the code systems can be "
        "generated; CPT codes from cpt_table when given; needs nyxmed[constrained] (xgrammar) for transformers")})
    constrained_icd: str = field(default="billable", metadata={"help": (
        "ICD-10-CM codes the grammar allows: billable (leaves) | valid (any category or subcategory)")})
    constrained_max_cpt: int = field(default=4, metadata={"help": "most procedure codes in a constrained line"})
    constrained_max_modifiers: int = field(default=3, metadata={"help": "most modifiers in a constrained line"})
    constrained_max_icd: int = field(default=8, metadata={"help": "most diagnosis codes in a constrained line"})


@dataclass
class DemoConfig:
    """`nyxmed demo`: the main job on the embedded synthetic data, at a size a 2-core CPU runs in minutes."""

    recipe: str = "configs/demo.yaml"  # data/retrieval/prompt/lora/train sections of the run
    out_dir: str = "out/demo"
    cases: int = 3000
    seed: int = 17
    vocab_size: int = 6144  # the locally built Llama-3-style tokenizer (its corpus saturates at ~5.6K)
    tokenizer_texts: int = 1000  # reports the tokenizer is trained on
    tokenizer_split: str = "llama3"  # pre-tokenizer: 'digits' (one by one) or 'llama3' (groups of up to 3)
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 384
    # Full pre-training of the base, standing in for the previous version, on a separate synthetic set
    # (seed + 1): coded reports ("<report>\nCodes: <code line>") and, a pretrain_chat_share of them,
    # chats about a report (which exam, what impression); never a coding chat. A pre-training step
    # costs a sixth of a LoRA step on the CPU, so most of the budget goes here (docs/performance.md).
    pretrain_cases: int = 3000
    pretrain_chat_share: float = 0.25
    pretrain_steps: int = 1000
    pretrain_batch: int = 8
    pretrain_seq: int = 384  # a report and its code line fit
    pretrain_lr: float = 3e-3
    benchmark_n: int = 200
    ranks: int = 2  # DeepSpeed ZeRO-3 processes (gloo on CPU); 0 = one process without DeepSpeed
    eval_batch_size: int = 16
    eval_max_new_tokens: int = 32  # the longest synthetic code line is ~25 tokens
    version: str = "v1"
    overrides: list[str] = field(default_factory=list)  # extra key=value for the recipe


@dataclass
class Recipe:
    """A whole run: every section, one file."""

    name: str = "v17"
    data: DataConfig = field(default_factory=DataConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------- machinery
def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if value is None:  # a section header with nothing under it (`train:`) means all defaults
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a map for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "2e-5" as text
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        # YAML 1.1 reads yes/no/on/off as booleans: "True" in a text field would be a silent surprise
        if isinstance(value, (dict, list, bool)) or value is None:
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) map; unknown keys raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(names))})")
    return cls(**{k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()})


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted ``key=value`` pairs (values parsed as YAML) into a nested map."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        node = data
        parts = key.strip().lstrip("-").split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # absent, or an empty section header in the YAML file
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = _override_value(raw)
    return data


def _override_value(raw: str) -> Any:
    """The value of ``key=value`` read as YAML; text that is not YAML (``a: [b``) stays text."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw.strip()


def load(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Defaults, then the YAML file, then overrides; returns a checked ``cls``."""
    data: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a YAML map at the top level")
    data = apply_overrides(data, list(overrides or []))
    return from_dict(cls, data)


def load_recipe(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Recipe:
    return load(Recipe, path, overrides)


def save(obj: Any, path: str | os.PathLike) -> Path:
    """Write the fully resolved config as YAML, atomically."""
    text = yaml.safe_dump(to_dict(obj), sort_keys=False)
    return write_atomic(path, text)
