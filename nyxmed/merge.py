"""Merge a LoRA adapter into its base, verify the merge, and save a plain transformers folder.

Memory: the base is loaded once (transformers 5 loads straight into the final tensors), reference
logits of base+adapter are computed on a few probe prompts BEFORE merging, then PEFT merges module
by module in place (one LoRA delta at a time) and the merged model is checked against those stored
logits. There is never a second copy of the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nyxmed.codes import icd10cm
from nyxmed.errors import NyxmedError, VerificationError
from nyxmed.io import atomic_dir, sha256_file, utc_now, write_json
from nyxmed.provenance import base_fingerprint

log = logging.getLogger(__name__)

MANIFEST = "merge_manifest.json"

# Logit tolerance per dtype, relative to max(1, max |reference logit|). Merging rounds W + s*B@A once
# into the storage dtype, while the unmerged model adds the LoRA path in the activations; the gap
# is a few ulps of the logit scale, so the bound scales with the dtype's epsilon.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}

# Probe prompts: fixed synthetic reports (never records from the data) in the product's prompt shape.
PROBES = [
    {"system": "You are a certified radiology coder. Answer with one code line: CPT, MOD, ICD codes.",
     "user": "Exam: CT abdomen and pelvis with contrast\nReason for exam: right lower quadrant pain\n"
             "Report: No acute abnormality. Appendix normal. Small hiatal hernia."},
    {"system": "You are a certified radiology coder. Answer with one code line: CPT, MOD, ICD codes.",
     "user": "Exam: MRI left knee without contrast\nReason for exam: knee pain after twisting injury\n"
             "Report: Complex tear of the posterior horn of the medial meniscus. Joint effusion."},
    {"system": "You are a certified radiology coder. Answer with one code line: CPT, MOD, ICD codes.",
     "user": "Exam: Duplex ultrasound bilateral lower extremity veins\nReason for exam: leg swelling\n"
             "Report: No deep venous thrombosis. Superficial varicosities on the right."},
    {"system": "You are a certified radiology coder. Answer with one code line: CPT, MOD, ICD codes.",
     "user": "Exam: Chest radiograph two views\nReason for exam: cough and fever\n"
             "Report: Right lower lobe consolidation consistent with pneumonia. No effusion."},
]


class MergeError(NyxmedError, RuntimeError):
    """The merge cannot run (bad inputs); raised before any heavy work."""


class BaseMismatchError(MergeError, VerificationError):
    """The adapter was trained on a different base than the one given."""


class MergeVerificationError(MergeError, VerificationError):
    """The merged model does not reproduce base+adapter on the probes; nothing was saved."""


@dataclass(frozen=True)
class Verification:
    """How the merged model compared with base+adapter on the probe prompts."""

    probes: int
    positions: int
    max_abs_diff: float
    tolerance: float
    greedy_identical: bool
    mismatched_probes: tuple[int, ...]
    ties: int = 0  # positions whose reference top-2 gap is within tolerance (not judged)

    @property
    def ok(self) -> bool:
        return self.greedy_identical and self.max_abs_diff <= self.tolerance


# ----------------------------------------------------------------------------- identities
def adapter_checksum(adapter_dir: str | os.PathLike) -> str:
    """sha256 over the adapter's weights and config (what defines the adapter)."""
    adapter_dir = Path(adapter_dir)
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        path = adapter_dir / name
        if not path.is_file():
            raise MergeError(f"{adapter_dir}: missing {name} (not a PEFT adapter folder)")
        h.update(f"{name}\0{sha256_file(path)}\0".encode())
    return "sha256:" + h.hexdigest()


_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})/?$")


@dataclass(frozen=True)
class BaseRef:
    """A base model resolved to a local folder, with the id and revision it came from."""

    given: str
    local_dir: Path
    repo_id: str | None
    revision: str | None
    fingerprint: str


def resolve_base(base: str, revision: str | None = None) -> BaseRef:
    """Resolve ``base`` (folder or Hub id) to a local folder; Hub ids come from the local cache or
    a download (``HF_HUB_OFFLINE=1``: cache only)."""
    path = Path(base).expanduser()
    if path.is_dir():
        local = path.resolve()
        m = _SNAPSHOT.search(local.as_posix())
        repo_id = f"{m['org']}/{m['name']}" if m else None
        rev = m["rev"] if m else revision
        return BaseRef(base, local, repo_id, rev, base_fingerprint(local))
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(base, revision=revision, allow_patterns=[
            "*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]))
    except Exception as exc:
        raise MergeError(f"--base {base!r}: not a folder, and not resolvable as a Hub model "
                         f"(revision {revision!r}): {exc}") from exc
    m = _SNAPSHOT.search(local.as_posix())
    return BaseRef(base, local, base, m["rev"] if m else revision, base_fingerprint(local))


def _recorded_base(adapter_dir: Path) -> tuple[str | None, str | None, str | None]:
    """(base_model_name_or_path, revision, fingerprint) the adapter folder recorded at training."""
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file():
        raise MergeError(f"{adapter_dir}: missing adapter_config.json (not a PEFT adapter folder)")
    cfg = json.loads(cfg_path.read_text())
    fingerprint = cfg.get("base_model_fingerprint")
    for meta in (adapter_dir / "training_metrics.json", adapter_dir / "frozen.json"):  # a run, or frozen/epoch-N
        if fingerprint is None and meta.is_file():
            fingerprint = json.loads(meta.read_text()).get("base_model_fingerprint")
    return cfg.get("base_model_name_or_path"), cfg.get("revision"), fingerprint


def check_adapter_base(adapter_dir: str | os.PathLike, base: BaseRef) -> None:
    """Raise :class:`BaseMismatchError` unless ``base`` is the base the adapter was trained on.

    Same when: a recorded fingerprint equals the base's (names may then differ, e.g. a copied
    folder); else the recorded name equals the given one, names the same folder, or names the
    Hub id whose cached snapshot was given. A recorded revision must equal the base's revision.
    """
    adapter_dir = Path(adapter_dir)
    name, revision, fingerprint = _recorded_base(adapter_dir)
    where = f"{adapter_dir}/adapter_config.json"
    if fingerprint is not None:
        if fingerprint != base.fingerprint:
            raise BaseMismatchError(
                f"{where}: adapter was trained on base fingerprint {fingerprint} ({name!r}), "
                f"but --base {base.given!r} has fingerprint {base.fingerprint}")
        return
    log.warning("%s: no base_model_fingerprint recorded (adapter trained before nyxmed recorded it); "
                "checking the base by name only", adapter_dir)
    if not name:
        raise BaseMismatchError(f"{where}: base_model_name_or_path is empty; cannot check the base")
    same = name == base.given or (base.repo_id is not None and name == base.repo_id)
    recorded_path = Path(name).expanduser()
    if not same and recorded_path.is_dir():
        same = recorded_path.resolve() == base.local_dir or base_fingerprint(recorded_path) == base.fingerprint
    if not same:
        raise BaseMismatchError(
            f"{where}: base_model_name_or_path is {name!r}, but --base is {base.given!r}"
            + (f" (Hub id {base.repo_id!r})" if base.repo_id else "")
            + "; merge the adapter into the base it was trained on")
    if revision and base.revision and revision != base.revision:
        raise BaseMismatchError(f"{where}: revision is {revision!r}, but --base resolves to revision "
                                f"{base.revision!r}")


# ----------------------------------------------------------------------------- probes
def load_probes(path: str | os.PathLike | None) -> list[dict[str, str]]:
    """Probe messages: the built-in synthetic ones, or a JSONL of {"system", "user"} lines."""
    if path is None:
        return PROBES
    probes = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("user"), str):
            raise MergeError(f"{path}:{i}: field 'user': expected text, got {row!r:.80}")
        probes.append({"system": str(row.get("system", "")), "user": row["user"]})
    if not probes:
        raise MergeError(f"{path}: no probe prompts")
    return probes


def _probe_ids(tokenizer, probes: list[dict[str, str]]) -> list[torch.Tensor]:
    """Each probe's chat-rendered prompt ids (the template already writes <|begin_of_text|>)."""
    texts = [tokenizer.apply_chat_template(
        [{"role": "system", "content": p["system"]}, {"role": "user", "content": p["user"]}],
        tokenize=False, add_generation_prompt=True) for p in probes]
    return [torch.tensor(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


@torch.no_grad()
def _reference(model, prompts: list[torch.Tensor], max_new_tokens: int,
               pad_id: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Greedy continuation of each probe and the logits that chose it (float32).

    One probe at a time: no padding, and the activations of one sequence at most (a batch made the
    verification's transient memory 0.26x of a 272 MB model's bytes). Returns the full sequences,
    the continuations ``[probes, max_new_tokens]`` (``pad_id`` after a short one's end of turn) and
    their logits ``[probes, max_new_tokens, vocab]``.
    """
    device = next(model.parameters()).device
    seqs = []
    for ids in prompts:
        ids = ids[None].to(device)
        seqs.append(model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=max_new_tokens, pad_token_id=pad_id)[0].cpu())
    generated = torch.full((len(seqs), max_new_tokens), pad_id, dtype=torch.long)
    for row, (seq, ids) in enumerate(zip(seqs, prompts)):
        generated[row, : len(seq) - len(ids)] = seq[len(ids):]
    return seqs, generated, _answer_logits(model, seqs, prompts, max_new_tokens)


@torch.no_grad()
def _answer_logits(model, seqs: list[torch.Tensor], prompts: list[torch.Tensor], width: int) -> torch.Tensor:
    """Teacher-forced logits at the positions that predict each generated token (those after the
    probe's prompt), one sequence at a time, zero-padded to ``width`` positions."""
    device = next(model.parameters()).device
    rows = []
    for seq, prompt in zip(seqs, prompts):
        logits = model(input_ids=seq[None].to(device)).logits[0, len(prompt) - 1:-1].float().cpu()
        rows.append(torch.cat([logits, logits.new_zeros(width - len(logits), logits.shape[-1])]))
    return torch.stack(rows)


def _valid_positions(generated: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """True up to and including each row's first end-of-turn token (later slots are padding)."""
    is_eos = torch.zeros_like(generated, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= generated == e
    ended_before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    return ended_before == 0


def compare(reference: torch.Tensor, merged: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> Verification:
    """Compare teacher-forced logits on the reference's greedy continuation: max |diff| within the
    dtype's tolerance, and the same greedy token wherever the reference is decisive.

    Where the reference's top-2 gap is itself within tolerance the choice is a numerical tie of the
    dtype (two runs of the same unmerged model may flip it); those positions are counted, not failed.
    """
    tolerance = TOLERANCE[dtype] * max(1.0, reference.abs().amax().item())
    diff = (merged - reference).abs().amax(dim=-1)[valid]
    top2 = reference.topk(2, dim=-1).values
    decisive = valid & ((top2[..., 0] - top2[..., 1]) > tolerance)
    same = (merged.argmax(-1) == reference.argmax(-1)) | ~decisive
    bad = tuple(int(i) for i in torch.nonzero(~same.all(dim=1)).flatten())
    return Verification(probes=int(reference.shape[0]), positions=int(valid.sum()),
                        max_abs_diff=float(diff.max()) if diff.numel() else 0.0, tolerance=tolerance,
                        greedy_identical=not bad, mismatched_probes=bad,
                        ties=int((valid & ~decisive).sum()))


# ----------------------------------------------------------------------------- merge
def _merge_in_place(peft_model):
    """PEFT merge, module by module: each LoRA delta is added to its base weight and dropped."""
    return peft_model.merge_and_unload(progressbar=True)


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("nyxmed", "torch", "transformers", "peft", "safetensors", "accelerate")}


def _parse_dtype(dtype: str) -> torch.dtype:
    value = getattr(torch, dtype, None)
    if value not in TOLERANCE:
        raise MergeError(f"--dtype {dtype!r}: expected one of float32, float16, bfloat16")
    return value


def _fixed_mmap_threshold(threshold: int = 1 << 17) -> None:
    """Keep glibc from raising its mmap threshold: otherwise each freed per-layer temporary (the
    fp32 LoRA delta, activations) moves the threshold up and later ones stay on the heap, which is
    never returned (measured: 1.63x -> 1.33x model bytes on a 272 MB model). No-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        log.debug("mallopt unavailable (%s); default allocator behaviour", name)


def merge_adapter(base: str, adapter: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "bfloat16",
                  revision: str | None = None, max_shard_size: str | int = "5GB", device_map: str | None = None,
                  probes: str | os.PathLike | None = None, max_new_tokens: int = 16,
                  overwrite: bool = False) -> dict[str, Any]:
    """Merge ``adapter`` into ``base``, verify on probe prompts, save sharded safetensors to ``out``.

    Returns the merge manifest. Raises :class:`BaseMismatchError` (before loading weights) and
    :class:`MergeVerificationError` (nothing saved) on failure.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, out = Path(adapter), Path(out)
    torch_dtype = _parse_dtype(dtype)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MergeError(f"--out {out}: folder exists and is not empty (pass --overwrite to replace it)")
    base_ref = resolve_base(base, revision)
    check_adapter_base(adapter, base_ref)  # cheap checks first: nothing heavy has been loaded yet
    adapter_sum = adapter_checksum(adapter)
    probe_msgs = load_probes(probes)

    _fixed_mmap_threshold()
    tok_dir = adapter if (adapter / "tokenizer_config.json").is_file() else base_ref.local_dir
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    t0 = time.time()
    log.info("loading base %s (%s)", base_ref.local_dir, dtype)
    model = AutoModelForCausalLM.from_pretrained(base_ref.local_dir, dtype=torch_dtype, device_map=device_map)
    model = PeftModel.from_pretrained(model, adapter)
    model.eval()

    prompts = _probe_ids(tokenizer, probe_msgs)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tokenizer.eos_token_id])
    seqs, generated, ref_logits = _reference(model, prompts, max_new_tokens, tokenizer.pad_token_id)

    merged = _merge_in_place(model)
    merged.eval()
    merged_logits = _answer_logits(merged, seqs, prompts, max_new_tokens)
    check = compare(ref_logits, merged_logits, _valid_positions(generated, eos_ids), torch_dtype)
    log.info("verification: max |logit diff| %.3g (tolerance %.3g), greedy identical: %s (%d of %d positions "
             "are ties)", check.max_abs_diff, check.tolerance, check.greedy_identical, check.ties, check.positions)
    if not check.ok:
        raise MergeVerificationError(
            f"merged model differs from base+adapter on the probes: max |logit diff| {check.max_abs_diff:.4g} "
            f"(tolerance {check.tolerance:.4g} for {dtype}), greedy outputs identical: {check.greedy_identical}"
            f" (mismatched probes: {list(check.mismatched_probes)}); nothing was written to {out}")

    manifest = {
        "base": {"given": base_ref.given, "local_dir": str(base_ref.local_dir), "repo_id": base_ref.repo_id,
                 "revision": base_ref.revision, "fingerprint": base_ref.fingerprint},
        "adapter": {"path": str(adapter.resolve()), "checksum": adapter_sum},
        "icd10cm_release": icd10cm.release_name(),
        "dtype": dtype,
        "max_shard_size": max_shard_size,
        "verification": {**check.__dict__, "mismatched_probes": list(check.mismatched_probes), "ok": check.ok,
                         "max_new_tokens": max_new_tokens, "probe_source": str(probes) if probes else "builtin"},
        "versions": _library_versions(),
        "merged_at": utc_now(),
        "seconds": round(time.time() - t0, 2),
    }
    _save_merged(merged, tokenizer, out, manifest, max_shard_size, overwrite)
    return manifest


def _save_merged(model, tokenizer, out: Path, manifest: dict[str, Any], max_shard_size: str | int,
                 overwrite: bool) -> None:
    """Write everything into a sibling temp folder, then rename it into place (readers never see half)."""
    try:
        with atomic_dir(out, replace=overwrite) as tmp:
            model.save_pretrained(tmp, max_shard_size=max_shard_size)
            tokenizer.save_pretrained(tmp)
            files = sorted(p for p in tmp.iterdir() if p.is_file())
            manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}
            write_json(tmp / MANIFEST, manifest)
    except FileExistsError as exc:
        raise MergeError(f"--out {out}: appeared while merging; not replacing it") from exc
