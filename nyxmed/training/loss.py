"""The weighted answer-token loss, wired into the Trainer by a small subclass.

loss = sum_i w_i * sum_t l_it / sum_i w_i * n_i, where i runs over every example of one optimizer
step (all micro-batches and all ranks), t over its answer tokens (labels != -100), n_i is its count
of answer tokens and w_i its ``weight``. A weight of 3 therefore counts exactly like three copies of
the example in the same step. Evaluation uses the same formula per evaluation batch.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer, modeling_utils

IGNORE_INDEX = -100


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, L]``: the positions whose next token is labelled, the only logits the loss reads.

    Passed to the model as ``logits_to_keep`` so the LM head and the softmax run on answer tokens
    only (a 2,560-token prompt with a 128K vocabulary would otherwise make ~1.3 GB of fp32 logits).
    """
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def answer_logits_to_keep(labels: torch.Tensor) -> torch.Tensor | int:
    """``logits_to_keep`` for a forward whose loss reads answer tokens only: the
    :func:`answer_positions` mask where this transformers slices hidden states by a boolean mask
    (``modeling_utils.slice_logits_to_keep``), else 0, every position (older 5.x releases index
    ``hidden_states[:, mask, :]`` and fail). :func:`weighted_lm_loss` takes either shape."""
    return answer_positions(labels) if _MASK_LOGITS_TO_KEEP else 0


_MASK_LOGITS_TO_KEEP = hasattr(modeling_utils, "slice_logits_to_keep")


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                     token_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(sum_t w_t * nll_t, sum_t w_t)`` over labelled tokens, with the causal shift.

    ``labels`` and ``token_weights`` are aligned with ``input_ids`` (unshifted). ``logits`` are
    either every position's ``[B, L, V]`` or only those of :func:`answer_positions` ``[N, V]`` (what
    the model returns for ``logits_to_keep=answer_positions(labels)``). Divide the first by the
    second summed over every micro-batch of an optimizer step to get the loss
    ``sum_i w_i sum_t l_it / sum_i w_i n_i``, the same packed or padded.
    """
    keep = answer_positions(labels)
    if logits.dim() == 3:
        logits = logits[keep]
    targets = labels[:, 1:][keep[:, :-1]]
    weights = token_weights[:, 1:][keep[:, :-1]].float()
    nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return (nll * weights).sum(), weights.sum()


class WeightedLossTrainer(Trainer):
    """A Trainer whose loss is the weighted answer-token mean above; the loop is the Trainer's."""

    # compute_loss divides by the weighted token count of the whole optimizer step.
    loss_is_scaled_for_ga = True

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | None = None):
        token_weights = inputs.pop("token_weights")
        labels = inputs.pop("labels")
        # logits only where the loss reads them (answer tokens): the LM head never sees the prompt
        outputs = model(**inputs, logits_to_keep=answer_logits_to_keep(labels))
        total, count = weighted_lm_loss(outputs.logits, labels, token_weights)
        if num_items_in_batch is None:  # a lone batch: normalise by its own weighted count
            loss = total / count.clamp(min=1e-12)
        else:
            # num_items_in_batch sums over all ranks; the data-parallel gradient mean divides by
            # the number of ranks again, so multiply it back.
            loss = total / num_items_in_batch * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """The step's weighted answer-token count sum_i w_i * n_i, summed over micro-batches and ranks."""
        if not batch_samples or "token_weights" not in batch_samples[0]:
            return None
        count = sum(weighted_token_count(b["labels"], b["token_weights"]) for b in batch_samples)
        count = count.to(device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return count


def weighted_token_count(labels: torch.Tensor, token_weights: torch.Tensor) -> torch.Tensor:
    """sum over predicted tokens of their weight (the causal shift drops each row's first label)."""
    return token_weights[:, 1:][answer_positions(labels)[:, :-1]].float().sum()
