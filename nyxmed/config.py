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
    # previous version's training manifest (filters `retained`); None with model.base_model: release:... =
    # that release's training_records.jsonl
    previous_manifest: str | None = None
    retained: list[str] = field(default_factory=list)  # earlier version's pool
    hard_ids: list[str] = field(default_factory=list)
    specificity_ids: list[str] = field(default_factory=list)
    specificity_weight: int = 3
    primary_ids: list[str] = field(default_factory=list)  # primary-ICD corrections besides those original_codes shows
    primary_weight: int = 2
    # Prompts from: "auto" = the parent release's preprocessor when model.base_model is release:... and the
    # release carries all of it, else a new one from the train split; "new"; or a saved preprocessor folder.
    preprocessor: str = "auto"
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


RELEASE_SCHEME = "release:"  # model.base_model: release:REGISTRY[:VERSION] (nyxmed.releases.parent)


def is_release_spec(model: str | None) -> bool:
    """Whether a model reference names a release of a registry rather than a folder or Hub id."""
    return bool(model) and model.startswith(RELEASE_SCHEME)


@dataclass
class ModelConfig:
    # local path, Hub id, or release:REGISTRY[:VERSION] (that release's merged model; production by default)
    base_model: str = "meta-llama/Meta-Llama-3-70B-Instruct"
    merge_cache: str = "out/merged"  # merged release bases, one folder per content hash (reused)
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


def _opt(help_text: str, **meta: Any) -> Any:
    """A field defaulting to None, with its help text (and flag, choices, minimum) as metadata."""
    return field(default=None, metadata={"help": help_text, **meta})


def _val(default: Any, help_text: str, **meta: Any) -> Any:
    """A field with a default, with its help text (and flag, choices, minimum) as metadata."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help_text, **meta})
    return field(default=default, metadata={"help": help_text, **meta})


BACKENDS = ("transformers", "vllm", "openai")
DTYPES = ("auto", "bfloat16", "float16", "float32")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DecodingConfig:
    """Constrained decoding under the code-line grammar, for every command that generates."""

    constrained: bool = _val(False, "decode under the code-line grammar (docs/codeline.md): no code outside the code "
                             "systems can be generated; CPT codes from cpt_table when given; needs "
                             "nyxmed[constrained] (xgrammar) for transformers")
    constrained_icd: str = _val("billable", "ICD-10-CM codes the grammar allows: billable (leaves) | valid (any "
                                "category or subcategory)", choices=("billable", "valid"))
    constrained_cpt: str = _val("radiology", "procedure codes the grammar allows without a cpt_table: radiology "
                                "(the public radiology ranges, Category III, HCPCS Level II) | any (every CPT/HCPCS "
                                "shape)", choices=("radiology", "any"))
    constrained_max_cpt: int = _val(4, "most procedure codes in a constrained line", minimum=1)
    constrained_max_modifiers: int = _val(3, "most modifiers in a constrained line", minimum=0)
    constrained_max_icd: int = _val(8, "most diagnosis codes in a constrained line", minimum=1)


@dataclass(frozen=True)
class EvalConfig(DecodingConfig):
    """One evaluation run (docs/metrics.md): a model and a benchmark, or saved predictions to rescore."""

    model: str | None = _opt("base or merged model folder (the served model name for --backend openai)")
    adapter: str | None = _opt("PEFT adapter folder applied on top of --model")
    data: str | None = _opt("built dataset folder (<data>/dataset with system/user prompts and gold)")
    split: str = _val("heldout", "dataset split to evaluate")
    benchmark: str | None = _opt("benchmark manifest (nyxmed benchmark create); refuses missing/changed records")
    predictions: str | None = _opt("rescore saved outputs (JSONL lines {id, output}); no model runs")
    gold: str | None = _opt("gold for --predictions: a case file (JSONL/CSV/Parquet) or a built dataset folder")
    training_metrics: str | None = _opt("training_metrics.json: adds the eval-loss curve to the chart")
    out_dir: str = _val("out/eval", "output folder (predictions.jsonl, metrics.json, report.md, metrics.png)",
                        flag="--out")
    batch_size: int = _val(4, "prompts per generate call / parallel HTTP requests", minimum=1)
    max_new_tokens: int = _val(64, "new tokens per output", minimum=1)
    backend: str = _val("transformers", "transformers | vllm | openai", choices=BACKENDS)
    endpoint: str | None = _opt("OpenAI-compatible base URL for --backend openai (e.g. http://127.0.0.1:8000/v1)")
    api_key_env: str = _val("OPENAI_API_KEY", "environment variable holding the endpoint's key, if any")
    dtype: str = _val("auto", "auto | bfloat16 | float16 | float32", choices=DTYPES)
    device: str = _val("auto", "auto | cpu | cuda", choices=DEVICES)
    tensor_parallel_size: int = _val(1, "vLLM tensor parallel GPUs", minimum=1)
    cpt_table: str | None = _opt("licensed CPT table (CSV): strict CPT validity for invalid_code_rate")
    bootstrap: int = _val(1000, "bootstrap resamples for the 95% CIs", minimum=1)
    seed: int = _val(17, "bootstrap seed")


@dataclass(frozen=True)
class DemoConfig:
    """`nyxmed demo`: the main job on the embedded synthetic data, at a size a 2-core CPU runs in minutes."""

    recipe: str = _val("configs/demo.yaml", "data/retrieval/prompt/lora/train sections of the run")
    out_dir: str = _val("out/demo", "output folder", flag="--out")
    cases: int = _val(3000, "synthetic cases of the run")
    seed: int = _val(17, "seed of the cases, splits and models")
    vocab_size: int = _val(6144, "the locally built Llama-3-style tokenizer (its corpus saturates at ~5.6K)")
    tokenizer_texts: int = _val(1000, "reports the tokenizer is trained on")
    tokenizer_split: str = _val("llama3", "pre-tokenizer: 'digits' (one by one) or 'llama3' (groups of up to 3)")
    hidden_size: int = _val(128, "tiny Llama hidden size")
    layers: int = _val(4, "tiny Llama layers")
    heads: int = _val(4, "attention heads")
    kv_heads: int = _val(2, "key/value heads")
    intermediate_size: int = _val(384, "MLP size")
    # Full pre-training of the base, standing in for the previous version, on a separate synthetic set
    # (seed + 1): coded reports ("<report>\nCodes: <code line>") and, a pretrain_chat_share of them,
    # chats about a report (which exam, what impression); never a coding chat. A pre-training step
    # costs a sixth of a LoRA step on the CPU, so most of the budget goes here (docs/performance.md).
    pretrain_cases: int = _val(3000, "synthetic cases the stand-in base is pre-trained on (seed + 1)")
    pretrain_chat_share: float = _val(0.25, "share of pre-training texts that are chats about a report")
    pretrain_steps: int = _val(1000, "pre-training steps")
    pretrain_batch: int = _val(8, "pre-training batch")
    pretrain_seq: int = _val(384, "a report and its code line fit")
    pretrain_lr: float = _val(3e-3, "pre-training learning rate")
    benchmark_n: int = _val(200, "benchmark records")
    ranks: int = _val(2, "DeepSpeed ZeRO-3 processes (gloo on CPU); 0 = one process without DeepSpeed")
    eval_batch_size: int = _val(16, "prompts per generate call")
    eval_max_new_tokens: int = _val(32, "the longest synthetic code line is ~25 tokens")
    version: str = _val("v1", "release version of the trained adapter")
    new_reports: int = _val(5, "new reports coded with the production release at the end (another seed)", minimum=0)
    # `nyxmed demo --continue`: the next version on top of the production release the demo left in out_dir
    continuation: bool = _val(False, "train, compare and release the next version on top of the production "
                              "release in --out (run the demo there first); writes <out>/continue",
                              flag="--continue")
    continue_cases: int = _val(600, "new reviewed cases of the next version (another seed), with primary-ICD "
                               "corrections", minimum=20)
    continue_retained: int = _val(200, "retained cases, half of them ones the parent trained on (filtered out)",
                                  minimum=0)
    continue_primary_weight: float = _val(3.0, "loss weight of the primary-ICD corrections (data.primary_weight)",
                                          minimum=0)
    continue_steps: int = _val(30, "LoRA steps on the merged parent", minimum=1)
    # 2e-3 (the first demo's rate for a fresh LoRA) made the child worse than its parent on the demo's
    # benchmark (icd_root_overlap -0.075, CI [-0.14, -0.01]); 5e-4 made it better (docs/training.md)
    continue_learning_rate: float = _val(5e-4, "LoRA learning rate on the merged parent", minimum=0)
    continue_version: str = _val("v2", "release version of the next adapter")
    overrides: list[str] = field(default_factory=list, metadata={"cli": False})  # key=value for the recipe


@dataclass(frozen=True)
class ValidateConfig:
    """`nyxmed validate SOURCE`: read a case source, print counts and reject reasons."""

    query: str | None = _opt("SQL query for a PostgreSQL source (or @file.sql)")
    map: list[str] = _val([], "rename a source column to a case field: COLUMN=FIELD (repeatable)")
    batch_size: int = _val(1000, "rows per PostgreSQL fetch", minimum=1)
    rejects: str | None = _opt("write rejects here (JSONL) and counts beside it (<name>.counts.json)")
    cpt_table: str | None = _opt("licensed CPT table (CSV code,description): strict CPT validity")
    show: int = _val(20, "reject reasons to print (the file has all)", minimum=0)


@dataclass(frozen=True)
class SynthConfig:
    """`nyxmed synth`: synthetic radiology cases (the embedded default data set)."""

    n: int = _val(3000, "number of cases", minimum=0)
    seed: int = _val(17, "same seed, same cases")
    out: str | None = _opt("case file: .jsonl, .csv or .parquet (written atomically)", required=True)


@dataclass(frozen=True)
class BenchmarkConfig:
    """`nyxmed benchmark create`: sample records (seeded) and pin their ids and content hashes."""

    data: str | None = _opt("built dataset folder or a case file", required=True)
    pool: str = _val("heldout", "dataset split to sample from")
    n: int = _val(500, "records to sample", minimum=1)
    seed: int = _val(17, "sampling seed")
    name: str | None = _opt("benchmark name (default: the file name)")
    out: str | None = _opt("manifest JSON to write", required=True)


@dataclass(frozen=True)
class CompareConfig:
    """`nyxmed compare A B`: differences, paired bootstrap CIs, McNemar."""

    out: str | None = _opt("write comparison.json and comparison.md here")
    bootstrap: int = _val(1000, "paired bootstrap resamples", minimum=1)
    seed: int = _val(17, "bootstrap seed")


@dataclass(frozen=True)
class MergeConfig:
    """`nyxmed merge`: merge a LoRA adapter into its base, verify, save sharded safetensors."""

    base: str | None = _opt("base model folder or Hub id (must be the adapter's base)", required=True)
    adapter: str | None = _opt("PEFT adapter folder (e.g. out/train or out/train/frozen/epoch-1)", required=True)
    out: str | None = _opt("folder for the merged model (written atomically)", required=True)
    dtype: str = _val("bfloat16", "bfloat16 | float16 | float32", choices=DTYPES[1:])
    revision: str | None = _opt("base revision when --base is a Hub id")
    max_shard_size: str = _val("5GB", "largest safetensors shard")
    device_map: str | None = _opt("e.g. auto to merge on GPUs; default: CPU")
    probes: str | None = _opt("JSONL of {system, user} probe prompts (default: built-in synthetic ones)")
    max_new_tokens: int = _val(16, "new tokens per probe", minimum=1)
    overwrite: bool = _val(False, "replace an existing merged folder")


@dataclass(frozen=True)
class PublishConfig:
    """`nyxmed publish PATH`: push an adapter, merged model or frozen checkpoint to a Hub repo, tagged."""

    repo: str | None = _opt("Hub model repo ORG/NAME (created if needed, private)", required=True)
    version: str | None = _opt("tag, e.g. v17", required=True)
    metrics: str | None = _opt("the evaluator's metrics.json for the card")
    compare: str | None = _opt("comparison.json against the previous version for the card")
    previous: str | None = _opt("name of the previous version (comparison table header)")
    dataset_manifest: str | None = _opt("the dataset builder's manifest.json (composition counts)")
    license: str = _val("other", "license id for the model card")
    out: str | None = _opt("staging folder (default: out/publish/<ORG--NAME>)")
    dry_run: bool = _val(False, "write the exact folders and cards, upload nothing")


@dataclass(frozen=True)
class ReleaseConfig:
    """`nyxmed releases`: which registry holds the versions."""

    registry: str | None = _opt("local registry folder (default: $NYXMED_REGISTRY, then out/registry)")
    repo: str | None = _opt("Hub model repo ORG/NAME instead of a local registry")


@dataclass(frozen=True)
class CoderConfig(DecodingConfig):
    """The coder of `nyxmed code` and `nyxmed serve`: a release, or a model, adapter and preprocessor."""

    # On for coding (measured on the demo: invalid codes 0.025 -> 0, no metric worse, 0.84x the time per
    # record; docs/codeline.md, "Which default"); evaluate keeps it off so benchmark numbers stay comparable.
    constrained: bool = _val(True, "decode under the code-line grammar (docs/codeline.md): no code outside the "
                             "code systems can be generated; --no-constrained (constrained=false) to turn it off; "
                             "needs xgrammar for transformers (in nyxmed[serve] and nyxmed[constrained])")
    release: str | None = _opt("local release registry folder: code with its production version (or --version), "
                               "its adapter and its preprocessor")
    model: str | None = _opt("base or merged model folder (the served model name for --backend openai); "
                             "default with --release: the release's base")
    adapter: str | None = _opt("PEFT adapter folder applied on top of --model (default with --release: the release)")
    preprocessor: str | None = _opt("the preprocessor folder the adapter was trained with (<data.out_dir>/"
                                    "preprocessor); default with --release: the release's, which it must equal")
    tokenizer: str | None = _opt("tokenizer for the prompts (default: the release, --adapter or --model)")
    version: str | None = _opt("with --release: the version to code with (default production); else the "
                               "version recorded with each coded report")
    backend: str = _val("transformers", "transformers | vllm | openai", choices=BACKENDS)
    endpoint: str | None = _opt("OpenAI-compatible base URL for --backend openai")
    api_key_env: str = _val("OPENAI_API_KEY", "environment variable holding the endpoint's key, if any")
    batch_size: int = _val(4, "prompts per generate call / parallel HTTP requests", minimum=1)
    max_new_tokens: int = _val(64, "new tokens per output", minimum=1)
    dtype: str = _val("auto", "auto | bfloat16 | float16 | float32", choices=DTYPES)
    device: str = _val("auto", "auto | cpu | cuda", choices=DEVICES)
    tensor_parallel_size: int = _val(1, "vLLM tensor parallel GPUs", minimum=1)
    cpt_table: str | None = _opt("licensed CPT table (CSV): strict CPT validity for invalid_codes")


@dataclass(frozen=True)
class CodeConfig(CoderConfig):
    """`nyxmed code`: code new reports with a model, an adapter and the preprocessor it was trained with."""

    text: str | None = _opt("one report given as text instead of SOURCE")
    query: str | None = _opt("SQL query for a PostgreSQL source (or @file.sql)")
    map: list[str] = _val([], "rename a source column to a report field: COLUMN=FIELD (repeatable)")
    out: str | None = _opt("coded reports, one JSON line each (written atomically)")
    rejects: str | None = _opt("reports that could not be coded (JSONL id/line/field/reason) and counts beside it")


@dataclass(frozen=True)
class ServeConfig(CoderConfig):
    """`nyxmed serve`: the HTTP JSON API in front of a coder (docs/coding.md)."""

    host: str = _val("127.0.0.1", "address to bind (loopback by default)")
    port: int = _val(8080, "port to listen on", minimum=1)
    token_env: str | None = _opt("environment variable holding the bearer token every request must carry")
    max_request_bytes: int = _val(1 << 20, "largest request body accepted (413 beyond)", minimum=1)
    max_reports: int = _val(256, "most reports in one request", minimum=1)


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
    data = _yaml_map(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return from_dict(cls, data)


def _yaml_map(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"--config: no file at {str(path)!r}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML map at the top level")
    return data


def load_recipe(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Recipe:
    return load(Recipe, path, overrides)


def save(obj: Any, path: str | os.PathLike) -> Path:
    """Write the fully resolved config as YAML, atomically."""
    text = yaml.safe_dump(to_dict(obj), sort_keys=False)
    return write_atomic(path, text)


# ----------------------------------------------------------------------------- commands
def check(cfg: T, prefix: str = "") -> T:
    """Check ``cfg``'s fields against their metadata (choices, minimum); returns ``cfg``."""
    for f in dataclasses.fields(cfg):
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None:
            continue
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(f"{prefix}{f.name}: {value!r} is not one of {', '.join(meta['choices'])}")
        if "minimum" in meta and value < meta["minimum"]:
            raise ConfigError(f"{prefix}{f.name}: must be >= {meta['minimum']}, got {value!r}")
    return cfg


def check_required(cfg: Any) -> None:
    """Raise :class:`ConfigError` naming the first field marked required that is still unset."""
    for f in dataclasses.fields(cfg):
        if f.metadata.get("required") and getattr(cfg, f.name) is None:
            raise ConfigError(f"{f.name} is required ({flag_of(f)} or {f.name}=...)")


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of field ``f``: its metadata's ``flag`` or ``--field-name``."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line flags (all but those marked ``cli: False``)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def load_command(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                 flags: dict[str, Any] | None = None) -> T:
    """A command's config: defaults, the YAML file, ``key=value`` overrides, then flags; checked."""
    data: dict[str, Any] = _yaml_map(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    data.update(flags or {})
    cfg = check(from_dict(cls, data))
    check_required(cfg)
    return cfg


def load_eval_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                     flags: dict[str, Any] | None = None) -> EvalConfig:
    """`nyxmed evaluate`: a recipe's ``eval`` section (its ``model.base_model`` and ``data.cpt_table``
    as defaults), recipe overrides (``eval.backend=vllm``), then flags; checked."""
    return eval_config_of(load_recipe(path, overrides), flags, from_file=path is not None)


def eval_config_of(recipe: Recipe, flags: dict[str, Any] | None = None, from_file: bool = True) -> EvalConfig:
    """The checked EvalConfig of a loaded recipe (see :func:`load_eval_config`); ``from_file``: the recipe
    came from a file, so its ``model.base_model`` is the default model."""
    cfg = dataclasses.replace(recipe.eval, **(flags or {}))
    if from_file and cfg.model is None and not cfg.predictions:
        cfg = dataclasses.replace(cfg, model=recipe.model.base_model)
    if cfg.cpt_table is None:
        cfg = dataclasses.replace(cfg, cpt_table=recipe.data.cpt_table)
    return check(from_dict(EvalConfig, to_dict(cfg)), "eval.")


def load_demo_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DemoConfig:
    """`nyxmed demo`: DemoConfig keys (``cases=1000``) set the demo, recipe keys (``train.epochs=2``)
    go to its recipe; both checked now, an unknown key named."""
    sections = {f.name for f in dataclasses.fields(Recipe)}
    recipe_keys = [o for o in overrides if o.partition("=")[0].strip().split(".")[0] in sections]
    load(Recipe, None, recipe_keys)  # names a bad recipe key before the demo starts
    demo_keys = [o for o in overrides if o not in recipe_keys]
    cfg = load_command(DemoConfig, path, demo_keys)
    return dataclasses.replace(cfg, overrides=[*cfg.overrides, *recipe_keys])
