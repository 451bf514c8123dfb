"""The weighted answer-token loss, wired into the Trainer by a small subclass.

loss = sum_i w_i * sum_t l_it / sum_i w_i * n_i, where i runs over every example of one optimizer
step (all micro-batches and all ranks), t over its answer tokens (labels != -100), n_i is its count
of answer tokens and w_i its ``weight``. A weight of 3 therefore counts exactly like three copies of
the example in the same step. Evaluation uses the same formula per evaluation batch.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from nyxmed.packing import answer_logits_to_keep, answer_positions, weighted_lm_loss


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
