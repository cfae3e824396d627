"""Direct preference optimisation (DPO) of a causal LM's LoRA adapter on preference pairs, the
phase after SFT (``LoraCausalLmTrainer``).

The loss is DPO's sigmoid loss (Rafailov et al. 2023), as TRL's ``DPOTrainer`` computes it by
default: with ``log p`` the sum of an answer's token log-probabilities given the prompt,

    loss = -log sigmoid(beta * ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))))

plus, with ``dpo_sft_weight`` w > 0, w times the per-token negative log-likelihood of the chosen
answer (RPO, TRL's ``rpo_alpha``): plain DPO may widen the margin by making *both* answers less
likely, and a user's correction should become more likely, not only the bad answer less.

**The reference is the SFT adapter, frozen**: its log-probabilities of every pair are computed
once, before the first DPO step (TRL's ``precompute_ref_log_probs``), then the same adapter
trains on. That is DPO as published (the reference is the SFT model), costs one forward pass per
answer and no second copy of the model; the alternative, the base with the adapter switched off,
would pull the policy back towards the untuned base and undo what SFT taught.

**Our loop, not ``DPOTrainer``.** TRL 1.16 installs and runs with our transformers 5.23 and PEFT
0.21, and ``services/fine_tuning/bench/bench_dpo_trl_vs_loop.py`` runs both on the same 16 pairs,
4 steps of 4 pairs, LoRA and bfloat16 autocast (measured 2026-12-01 on the 2-core machine while
other jobs loaded it, one torch thread, so the numbers are noisy): this loop took 79 s in all
(29 s tokenising and scoring the reference *and* the after-DPO margins, 50 s for the steps),
``DPOTrainer`` 93 s (25 s building the trainer and its Arrow dataset, 68 s training including
its reference pass); both started at a loss of about log 2 and ended near 0.58. Speed is no
reason to prefer either; the loop wins on fit:

* it shares the SFT loop's machinery: the job's time limit checked between steps (and between
  scoring batches), ``training.progressed`` on the same clock with steps counted across both
  phases, deterministic algorithms and seeded, length-bucketed batches, the output layer on the
  answer tokens only; a Hugging Face ``Trainer`` would need a callback for each and writes
  checkpoints and logs of its own;
* the reference is the SFT adapter without loading a second copy of it (``DPOTrainer`` with a
  PEFT model and no reference model uses the base with the adapter disabled);
* no ``datasets``/Arrow preprocessing pass and no second tokenisation with another template logic.

Dropout is off during DPO (the model in eval mode, gradients still flowing), as ``DPOTrainer``
does by default (``disable_dropout``): the policy and the reference then agree before the first
step, up to bfloat16 rounding (the reference is scored in other batch shapes: a first loss of
0.703 was measured against log 2 = 0.693, DPOTrainer's 0.699).

Metrics (into ``metrics.json``, ``training.completed``): on the validation pairs, ``dpo_loss``,
``dpo_reward_margin`` (mean of beta*(chosen - rejected) log-ratio gaps) and
``dpo_preference_accuracy`` (share of pairs whose chosen reward is the larger); on the training
pairs, the log-probability margin log p(chosen) - log p(rejected) and the mean log p(chosen),
before (the SFT adapter) and after DPO.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from llmops_fine_tuning.adapters.data_parallel import DataParallel
from llmops_fine_tuning.adapters.training_loop import (
    JobClock,
    ProgressMeter,
    endless_batches,
    warmup_then_linear_decay,
)
from llmops_fine_tuning.domain.ports import ProgressCallback
from llmops_fine_tuning.domain.preferences import dpo_steps
from llmops_fine_tuning.domain.request import CausalLmTrainerPolicy
from llmops_models.kinds.causal_lm.logprobs import Encoded, answer_logprobs, encode_answer, pad_right, score_answers
from llmops_models.kinds.causal_lm.network import autocast
from llmops_models.kinds.causal_lm.preferences import PreferencePair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedPairs:
    chosen: list[Encoded]
    rejected: list[Encoded]
    dropped: int
    """Pairs left out: an answer with no token left within ``max_length``."""

    def __len__(self) -> int:
        return len(self.chosen)

    def lengths(self) -> list[int]:
        """The longer of each pair's two conversations (what a batch is padded to)."""
        return [max(len(c[0]), len(r[0])) for c, r in zip(self.chosen, self.rejected, strict=True)]


def encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair], *, max_length: int) -> EncodedPairs:
    chosen: list[Encoded] = []
    rejected: list[Encoded] = []
    dropped = 0
    for pair in pairs:
        good = encode_answer(tokenizer, pair.prompt, pair.chosen, max_length=max_length)
        bad = encode_answer(tokenizer, pair.prompt, pair.rejected, max_length=max_length)
        if good is None or bad is None:
            dropped += 1
            continue
        chosen.append(good)
        rejected.append(bad)
    return EncodedPairs(chosen, rejected, dropped)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair: the sigmoid DPO loss and the implicit rewards beta*log(pi/ref) of both answers."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    losses = -torch.nn.functional.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards, rejected_rewards


def preference_metrics(
    policy_chosen: Sequence[float],
    policy_rejected: Sequence[float],
    reference_chosen: Sequence[float],
    reference_rejected: Sequence[float],
    *,
    beta: float,
) -> dict[str, float]:
    """DPO's loss, reward margin and preference accuracy (ties count as wrong, as in TRL), and the
    policy's log-probability margin, averaged over pairs."""
    losses, chosen, rejected = dpo_loss(
        torch.tensor(policy_chosen, dtype=torch.float64),
        torch.tensor(policy_rejected, dtype=torch.float64),
        torch.tensor(reference_chosen, dtype=torch.float64),
        torch.tensor(reference_rejected, dtype=torch.float64),
        beta=beta,
    )
    margin = torch.tensor(policy_chosen, dtype=torch.float64) - torch.tensor(policy_rejected, dtype=torch.float64)
    return {
        "loss": float(losses.mean()),
        "reward_margin": float((chosen - rejected).mean()),
        "preference_accuracy": float((chosen > rejected).double().mean()),
        "logp_margin": float(margin.mean()),
    }


def train_dpo(
    model: Any,
    tokenizer: Any,
    *,
    train_pairs: Sequence[PreferencePair],
    validation_pairs: Sequence[PreferencePair],
    policy: CausalLmTrainerPolicy,
    max_length: int,
    seed: int,
    trainable_parameters: list[torch.nn.Parameter],
    device: torch.device,
    dtype: torch.dtype,
    clock: JobClock,
    on_progress: ProgressCallback,
    progress_interval_s: float,
    step_offset: int = 0,
    scores: Any = None,
    parallel: DataParallel | None = None,
    replay: Callable[[], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Train the adapter of ``model`` (a PEFT model, after SFT) on ``train_pairs`` and return the
    ``dpo_*`` metrics. Progress is reported with steps after ``step_offset`` (the SFT steps), so
    one job's steps count up across both phases.

    ``scores``: the trainer's ``AnswerScores`` around ``model`` (in ``DistributedDataParallel``
    under ``torchrun``), through which the training passes go; ``parallel``: this process's rank.
    Every rank scores the reference on every pair (the same numbers everywhere, no exchange) and
    trains on its share of each batch; rank 0 alone scores the result and reports.

    ``replay``: the SFT loss of the next batch of training conversations (this rank's share,
    weighted like SFT's), added to every step times ``dpo_replay_weight``, so what SFT taught is
    held while DPO pushes the rejected answers down (InstructGPT's PPO-ptx mixes pretraining
    gradients in for the same reason). A rejected answer is often the right answer to another
    prompt (a wrong intent is someone else's right one): without replay, DPO taught the model to
    avoid those answers everywhere."""
    parallel = parallel or DataParallel()
    began = time.monotonic()
    train = encode_pairs(tokenizer, train_pairs, max_length=max_length)
    validation = encode_pairs(tokenizer, validation_pairs, max_length=max_length)
    metrics: dict[str, float] = {
        "dpo_pairs": float(len(train)),
        "dpo_dropped_pairs": float(train.dropped + validation.dropped),
        "dpo_validation_pairs": float(len(validation)),
        "dpo_beta": policy.dpo_beta,
    }
    if not len(train):
        return metrics
    pad_id = int(tokenizer.pad_token_id)
    model.eval()  # no dropout: the policy equals the reference before the first step

    def score(examples: list[Encoded]) -> list[float]:
        if not examples:
            return []
        return score_answers(
            model,
            examples,
            pad_id=pad_id,
            batch_size=policy.eval_batch_size,
            device=device,
            dtype=dtype,
            check=clock.check,
        )

    # The reference: the SFT adapter's log-probabilities, before any DPO step.
    reference = score(train.chosen + train.rejected + validation.chosen + validation.rejected)
    n, v = len(train), len(validation)
    ref_chosen, ref_rejected = reference[:n], reference[n : 2 * n]
    ref_val_chosen, ref_val_rejected = reference[2 * n : 2 * n + v], reference[2 * n + v :]
    ref_train = torch.tensor(ref_chosen), torch.tensor(ref_rejected)

    # Steps as planned from the pairs selected (the job's progress total counts them), even if a
    # pair too long to keep an answer token was dropped since.
    total_steps = dpo_steps(len(train_pairs), policy)
    steps_per_epoch = math.ceil(n / policy.dpo_batch_size)
    optimizer = torch.optim.AdamW(trainable_parameters, lr=policy.dpo_learning_rate, weight_decay=policy.weight_decay)
    scheduler = warmup_then_linear_decay(optimizer, total_steps=total_steps, warmup_ratio=policy.warmup_ratio)
    batches = endless_batches(
        train.lengths(), batch_size=policy.dpo_batch_size, bucket_batches=policy.bucket_batches, seed=seed
    )
    meter = ProgressMeter(total_steps=total_steps, steps_per_epoch=steps_per_epoch, interval_s=progress_interval_s)
    loss_sum = replay_sum = 0.0
    replay_weight = policy.dpo_replay_weight if replay is not None else 0.0
    for step, batch in enumerate(batches, start=1):
        if step > total_steps:
            break
        parallel.check_time(clock, f"at DPO step {step}/{total_steps}", device)
        share, weight = parallel.share(batch)
        rows = [train.chosen[i] for i in share] + [train.rejected[i] for i in share]
        input_ids, attention_mask, labels = pad_right(rows, pad_id)
        with autocast(device, dtype):
            inputs = input_ids.to(device), attention_mask.to(device), labels.to(device)
            logps = scores(*inputs, logprobs=True) if scores is not None else answer_logprobs(model, *inputs)
        index = torch.tensor(share)
        losses, _, _ = dpo_loss(
            logps[: len(share)],
            logps[len(share) :],
            ref_train[0][index].to(device),
            ref_train[1][index].to(device),
            beta=policy.dpo_beta,
        )
        loss = losses.mean()
        if policy.dpo_sft_weight > 0:
            chosen_tokens = (labels[: len(share), 1:] != -100).sum(dim=1).clamp(min=1).to(device)
            loss = loss + policy.dpo_sft_weight * (-logps[: len(share)] / chosen_tokens).mean()
        loss = loss * weight  # a mean over this rank's pairs, weighted by its share of the batch
        if replay is not None and replay_weight > 0:
            replayed = replay()
            replay_sum += float(replayed.detach())
            loss = loss + replay_weight * replayed
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable_parameters, policy.max_grad_norm)
        optimizer.step()
        scheduler.step()
        batch_loss, tokens = parallel.reduce_step(
            float(loss.detach()), int(attention_mask.sum()) if weight else 0, device
        )
        loss_sum += batch_loss
        progress = meter.record(step, loss=batch_loss, examples=len(batch), tokens=tokens)
        if progress is not None and parallel.is_main:
            progress = replace(progress, step=step_offset + step, total_steps=step_offset + total_steps)
            logger.info("DPO progressed", extra=vars(progress))
            on_progress(progress)
    train_seconds = meter.elapsed()
    if not parallel.is_main:
        return metrics

    after = score(train.chosen + train.rejected)
    before_metrics = preference_metrics(ref_chosen, ref_rejected, ref_chosen, ref_rejected, beta=policy.dpo_beta)
    after_metrics = preference_metrics(after[:n], after[n:], ref_chosen, ref_rejected, beta=policy.dpo_beta)
    metrics.update(
        dpo_steps=float(total_steps),
        dpo_train_loss=loss_sum / total_steps,
        dpo_replay_weight=replay_weight,
        dpo_replay_loss=replay_sum / total_steps,
        dpo_train_logp_margin_before=before_metrics["logp_margin"],
        dpo_train_logp_margin_after=after_metrics["logp_margin"],
        dpo_train_preference_accuracy=after_metrics["preference_accuracy"],
        # DPO can widen the margin by pushing both answers down; a falling chosen log-probability
        # is the sign (the answer users wanted becomes less likely).
        dpo_train_chosen_logp_before=sum(ref_chosen) / n,
        dpo_train_chosen_logp_after=sum(after[:n]) / n,
        dpo_train_seconds=train_seconds,
        dpo_pairs_per_second=meter.seen / max(train_seconds, 1e-9),
    )
    if v:
        scored = score(validation.chosen + validation.rejected)
        on_validation = preference_metrics(
            scored[:v], scored[v:], ref_val_chosen, ref_val_rejected, beta=policy.dpo_beta
        )
        metrics.update(
            dpo_loss=on_validation["loss"],
            dpo_reward_margin=on_validation["reward_margin"],
            dpo_preference_accuracy=on_validation["preference_accuracy"],
            dpo_validation_logp_margin=on_validation["logp_margin"],
            dpo_validation_logp_margin_before=preference_metrics(
                ref_val_chosen, ref_val_rejected, ref_val_chosen, ref_val_rejected, beta=policy.dpo_beta
            )["logp_margin"],
        )
    metrics["dpo_seconds"] = time.monotonic() - began
    return metrics
