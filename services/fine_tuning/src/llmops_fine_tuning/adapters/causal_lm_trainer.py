"""LoRA supervised fine-tuning of a causal LM on conversations (PEFT on torch/transformers), the
``Trainer`` port for task ``causal-lm``.

A plain loop, like the classifier's:

* each conversation of an instructions snapshot goes through the tokenizer's **chat template**;
  the labels are the token ids of the assistant's turns (each answer and its end-of-turn token) and
  -100 everywhere else, so the loss is on the answers only; a conversation longer than
  ``max_length`` keeps its last tokens (its final answer);
* **length-bucketed batches** (``training_loop``, shared with the classifier trainer), padded on
  the right with the EOS token to the batch's longest conversation;
* only the LoRA weights get gradients; AdamW, linear warm-up and decay, gradient clipping;
* the loss is computed where it is needed: the output layer (a 49,152-word vocabulary for
  SmolLM2) runs on the answer positions only (``answer_logits``), not on every token;
* forward passes run in the policy's ``precision`` (bfloat16 autocast where the device has native
  bfloat16: AMX on a CPU, a recent GPU), with the LoRA weights and AdamW in float32; attention is
  the policy's kernel (``eager`` by default: faster on CPU for short conversations).

Then **DPO** (``adapters/dpo.py``), when the snapshot's training split has at least the policy's
``dpo_min_pairs`` preference pairs (at most ``dpo_max_pairs``, a seeded sample): the same adapter
trains on, against the SFT adapter's frozen log-probabilities; its steps follow SFT's in the
job's progress. Corrected answers need nothing of their own: ingestion writes them as ordinary
conversations (``source=feedback``), so SFT learns them like any other. **DPO's guard**: the SFT
adapter's validation exact match is measured before DPO and its LoRA weights kept in memory; if
DPO lowers it by more than the policy's ``dpo_max_exact_match_drop``, the SFT weights are restored
and the artifact is the SFT adapter (``dpo_kept`` 0 in the metrics, the reason in
``training_config.json``). Measured in ``make demo`` (issue 16): 408 pairs whose rejected answers
were intent names right for other prompts, 2 epochs at a learning rate of 5e-4, took validation
exact match from 1.0 to 0.0 while DPO's own metrics (preference accuracy 1.0) looked perfect.

Validation (of the final adapter): the teacher-forced loss, perplexity and token accuracy on every validation
conversation (cheap), and ``exact_match`` of greedily generated answers on the first
``generation_eval_examples`` of them (the evaluation gate's normalisation).

Time limit, determinism and devices as in the classifier trainer: the job clock is checked
between steps and evaluation chunks; one seed drives initialisation and dropout, a separate
generator the data order, deterministic algorithms are on. Under ``torchrun`` (several processes)
SFT and DPO steps are data parallel as in the classifier trainer (``data_parallel``: the same
global batches, each rank its share, gradients averaged by ``DistributedDataParallel``); rank 0
alone validates, generates and writes.

Artifacts: the adapter only (no base weights), the tokenizer with its chat template,
``training_config.json`` (base model and its hash, max length, hyperparameters, trainer policy),
``metrics.json``. The lineage's ``base_model_weights_hash`` is the base GGUF file's sha256.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmops_fine_tuning.adapters.data_parallel import DataParallel
from llmops_fine_tuning.adapters.dpo import train_dpo
from llmops_fine_tuning.adapters.training_loop import (
    JobClock,
    ProgressMeter,
    endless_batches,
    make_deterministic,
    warmup_then_linear_decay,
)
from llmops_fine_tuning.domain.ports import (
    Conversations,
    InstructionData,
    ProgressCallback,
    TrainingData,
    TrainingResult,
)
from llmops_fine_tuning.domain.preferences import dpo_steps, select_pairs
from llmops_fine_tuning.domain.request import CausalLmTrainerPolicy, TrainingJob
from llmops_fine_tuning.errors import TrainingRejected
from llmops_models.kinds.causal_lm.answers import exact_match
from llmops_models.kinds.causal_lm.logprobs import answer_logprobs
from llmops_models.kinds.causal_lm.network import (
    ADAPTER_DIR,
    METRICS_FILE,
    TOKENIZER_DIR,
    TRAINING_CONFIG_FILE,
    BaseModelNotFound,
    LoadedCausalLm,
    answer_logits,
    autocast,
    base_model_hash,
    compute_dtype,
    encode_for_training,
    load_base_model,
    load_tokenizer,
    resolve_base_model,
)

logger = logging.getLogger(__name__)

Encoded = tuple[list[int], list[int]]


def _pad_right(examples: Sequence[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, targets) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[row, : len(ids)] = torch.tensor(targets, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask, labels


def top_layers(model: Any, count: int | None) -> list[int] | None:
    """The indices of the top ``count`` decoder layers of ``model`` (None, or a model with no more
    layers than that: every layer)."""
    layers = int(model.config.num_hidden_layers)
    if count is None or count >= layers:
        return None
    return list(range(layers - count, layers))


class AnswerScores(nn.Module):
    """The passes that train, as one module's ``forward``: the answer logits (SFT) or the answers'
    log-probabilities (DPO). ``answer_logits`` runs the decoder and the output layer itself rather
    than the model's ``forward``, so this is what ``DistributedDataParallel`` wraps: its forward
    is what arms the gradient all-reduce of the backward pass after it."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, *, logprobs: bool = False
    ) -> Any:
        if logprobs:
            return answer_logprobs(self.model, input_ids, attention_mask, labels)
        return answer_logits(self.model, input_ids, attention_mask, labels)


def encode_all(tokenizer: Any, conversations: Conversations, max_length: int) -> tuple[list[Encoded], int]:
    """Every conversation that keeps an answer token within ``max_length``, and how many did not."""
    encoded: list[Encoded] = []
    dropped = 0
    for messages in conversations.messages:
        example = encode_for_training(tokenizer, messages, max_length=max_length)
        if example is None:
            dropped += 1
        else:
            encoded.append(example)
    return encoded, dropped


class LoraCausalLmTrainer:
    """Trains LoRA adapters of a causal LM on conversations; writes the artifact files."""

    def __init__(
        self,
        *,
        num_threads: int = 2,
        progress_interval_s: float = 5.0,
        device: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._num_threads = num_threads
        self._progress_interval_s = progress_interval_s
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._cache_dir = cache_dir

    def train(
        self, job: TrainingJob, data: TrainingData | InstructionData, output: Path, *, on_progress: ProgressCallback
    ) -> TrainingResult:
        from peft import LoraConfig, TaskType, get_peft_model

        if not isinstance(data, InstructionData):
            raise TrainingRejected("dataset_content_mismatch", "task causal-lm trains on instructions snapshots")
        policy = job.trainer
        if not isinstance(policy, CausalLmTrainerPolicy):
            raise TrainingRejected("invalid_trainer_policy", "the causal-lm trainer needs a causal-lm trainer policy")
        clock = JobClock(job.time_limit_s)
        started = clock.started
        hp = job.hyperparameters
        parallel = DataParallel.current()
        if self._num_threads > 0:
            torch.set_num_threads(self._num_threads)
        make_deterministic(hp.seed)

        try:
            source = resolve_base_model(job.base_model)
            weights_hash = base_model_hash(source)
            base, base_folder = load_base_model(job.base_model, cache_dir=self._cache_dir)
            tokenizer = load_tokenizer(base_folder)
        except (BaseModelNotFound, OSError) as error:
            raise TrainingRejected(
                "base_model_not_found", f"cannot load base model {job.base_model!r}: {error}"
            ) from error
        base.set_attn_implementation(policy.attention)
        dtype = compute_dtype(policy.precision, self._device)
        lora = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=hp.lora_rank,
            lora_alpha=hp.lora_alpha,  # type: ignore[arg-type]  # peft accepts floats
            lora_dropout=hp.lora_dropout,
            target_modules=list(hp.target_modules),
            layers_to_transform=top_layers(base, policy.lora_top_layers),
        )
        try:
            model: Any = get_peft_model(base, lora)
        except ValueError as error:  # target modules the architecture does not have
            raise TrainingRejected("invalid_hyperparameters", f"target_modules {hp.target_modules}: {error}") from error
        model.to(self._device)
        trainable_parameters = [p for p in model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in trainable_parameters)
        total = sum(p.numel() for p in model.parameters())
        scores = parallel.wrap(AnswerScores(model), self._device)
        if parallel.rank:  # the same initial weights everywhere, but each rank its own dropout masks
            torch.manual_seed(hp.seed + parallel.rank)

        examples, dropped = encode_all(tokenizer, data.train, hp.max_length)
        if not examples:
            raise TrainingRejected(
                "too_few_examples", f"no training conversation keeps an answer token within max_length={hp.max_length}"
            )
        lengths = [len(ids) for ids, _ in examples]
        answer_tokens = [sum(1 for target in targets[1:] if target != -100) for _, targets in examples]
        steps_per_epoch = math.ceil(len(examples) / hp.batch_size)
        total_steps = max(1, math.ceil(hp.epochs * steps_per_epoch))
        optimizer = torch.optim.AdamW(trainable_parameters, lr=hp.learning_rate, weight_decay=policy.weight_decay)
        scheduler = warmup_then_linear_decay(optimizer, total_steps=total_steps, warmup_ratio=policy.warmup_ratio)
        batches = endless_batches(lengths, batch_size=hp.batch_size, bucket_batches=policy.bucket_batches, seed=hp.seed)
        # DPO after SFT when the snapshot has enough preference pairs; its steps are part of the
        # job's progress from the start, so the reported total never jumps.
        dpo_pairs = select_pairs(
            data.preferences_train, min_pairs=policy.dpo_min_pairs, max_pairs=policy.dpo_max_pairs, seed=hp.seed
        )
        planned_dpo_steps = dpo_steps(len(dpo_pairs), policy)

        logger.info(
            "training started",
            extra={
                "model_name": job.model_name,
                "examples": len(examples),
                "dropped_examples": dropped,
                "total_steps": total_steps,
                "device": str(self._device),
                "dtype": str(dtype).removeprefix("torch."),
                "trainable": trainable,
                "rank": parallel.rank,
                "world_size": parallel.world_size,
            },
        )
        pad_id = int(tokenizer.pad_token_id)
        model.train()
        meter = ProgressMeter(
            total_steps=total_steps, steps_per_epoch=steps_per_epoch, interval_s=self._progress_interval_s
        )
        for step, batch in enumerate(batches, start=1):
            if step > total_steps:
                break
            parallel.check_time(clock, f"at step {step}/{total_steps}", self._device)
            share, weight = parallel.share(batch, answer_tokens)
            input_ids, attention_mask, labels = _pad_right([examples[i] for i in share], pad_id)
            with autocast(self._device, dtype):
                logits, targets = scores(
                    input_ids.to(self._device), attention_mask.to(self._device), labels.to(self._device)
                )
            # The mean over this rank's answer tokens, weighted by its share of the batch's answer
            # tokens: the average over ranks is the mean over the whole batch's answer tokens.
            loss = torch.nn.functional.cross_entropy(logits, targets) * weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable_parameters, policy.max_grad_norm)
            optimizer.step()
            scheduler.step()
            batch_loss, tokens = parallel.reduce_step(
                float(loss.detach()), int(attention_mask.sum()) if weight else 0, self._device
            )
            progress = meter.record(step, loss=batch_loss, examples=len(batch), tokens=tokens)
            if progress is not None and parallel.is_main:
                progress = replace(progress, total_steps=total_steps + planned_dpo_steps)
                logger.info("training progressed", extra={"model_name": job.model_name, **vars(progress)})
                on_progress(progress)
        train_seconds = meter.elapsed()

        dpo_metrics: dict[str, float] = {
            "preference_pairs": float(len(data.preferences_train)),
            "preference_pairs_validation": float(len(data.preferences_validation)),
            "invalid_preference_pairs": float(data.invalid_pairs),
            "dpo_pairs": 0.0,
        }
        # DPO's guard: the SFT adapter's answers (kept for validation if DPO is undone) and weights.
        sft_generation: dict[str, float] = {}
        sft_weights: dict[str, torch.Tensor] = {}
        if dpo_pairs and policy.dpo_max_exact_match_drop is not None and parallel.is_main:
            clock.check("generating validation answers before DPO")
            model.eval()
            sft_generation = self._generation_metrics(
                model, tokenizer, data.validation, hp.max_length, policy, dtype=dtype
            )
            if sft_generation:
                sft_weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        sft_exact_match = sft_generation.get("exact_match")
        if dpo_pairs:
            replay_batches = endless_batches(
                lengths, batch_size=policy.dpo_batch_size, bucket_batches=policy.bucket_batches, seed=hp.seed + 1
            )

            def replay() -> torch.Tensor:
                """SFT's loss on the next batch of training conversations, as an SFT step computes it."""
                share, weight = parallel.share(next(replay_batches), answer_tokens)
                input_ids, attention_mask, labels = _pad_right([examples[i] for i in share], pad_id)
                with autocast(self._device, dtype):
                    logits, targets = scores(
                        input_ids.to(self._device), attention_mask.to(self._device), labels.to(self._device)
                    )
                return torch.nn.functional.cross_entropy(logits, targets) * weight

            dpo_metrics.update(
                train_dpo(
                    model,
                    tokenizer,
                    train_pairs=dpo_pairs,
                    validation_pairs=data.preferences_validation,
                    policy=policy,
                    max_length=hp.max_length,
                    seed=hp.seed,
                    trainable_parameters=trainable_parameters,
                    device=self._device,
                    dtype=dtype,
                    clock=clock,
                    on_progress=on_progress,
                    progress_interval_s=self._progress_interval_s,
                    step_offset=total_steps,
                    scores=scores,
                    parallel=parallel,
                    replay=replay,
                )
            )
        if not parallel.is_main:  # rank 0 validates and writes; the others only computed gradients
            return TrainingResult(
                metrics={"train_seconds": train_seconds},
                trainable_parameter_share=trainable / total,
                wall_time_seconds=time.monotonic() - started,
                base_model_weights_hash=weights_hash,
            )

        model.eval()
        metrics = self._validate(
            model, tokenizer, data.validation, hp.max_length, policy, dtype=dtype, check_time=clock.check
        )
        dpo_verdict = self._judge_dpo(metrics, sft_exact_match, policy)
        if dpo_verdict is not None:
            dpo_metrics.update(
                sft_exact_match=float(sft_exact_match or 0.0),
                dpo_exact_match=metrics["exact_match"],
                dpo_kept=float(dpo_verdict == ""),
            )
        if dpo_verdict:
            logger.warning(
                "DPO undone: the SFT adapter is kept", extra={"model_name": job.model_name, "reason": dpo_verdict}
            )
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if name in sft_weights:
                        parameter.copy_(sft_weights[name])
            # The restored weights answer as they did before DPO: their answers are not generated again.
            metrics = self._validate(
                model,
                tokenizer,
                data.validation,
                hp.max_length,
                policy,
                dtype=dtype,
                check_time=clock.check,
                generation=sft_generation,
            )
        metrics.update(
            train_seconds=train_seconds,
            train_examples_per_second=meter.seen / max(train_seconds, 1e-9),
            train_tokens_per_second=meter.seen_tokens / max(train_seconds, 1e-9),
            train_examples=float(len(examples)),
            dropped_examples=float(dropped + data.invalid_rows),
            **dpo_metrics,
        )

        output.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(output / ADAPTER_DIR))
        tokenizer.save_pretrained(str(output / TOKENIZER_DIR))
        config: dict[str, Any] = {
            "model_name": job.model_name,
            "task": job.task.value,
            "base_model": job.base_model,
            "base_model_weights_hash": weights_hash,
            "base_model_file": source.path.name,
            "max_length": hp.max_length,
            "hyperparameters": hp.model_dump(mode="json"),
            "trainer": policy.model_dump(mode="json"),
            "torch_version": torch.__version__,
            "device": str(self._device),
            "compute_dtype": str(dtype).removeprefix("torch."),
            "num_threads": torch.get_num_threads(),
            "data_parallel_processes": parallel.world_size,
            "dpo": {
                "ran": bool(dpo_pairs),
                "kept": bool(dpo_pairs) and not dpo_verdict,
                "undone_because": dpo_verdict or None,
                "pairs": len(dpo_pairs),
                "pair_ids": [pair.pair_id for pair in dpo_pairs],
                "reference": "the SFT adapter, frozen (its log-probabilities computed before the first DPO step)",
            },
        }
        (output / TRAINING_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        (output / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return TrainingResult(
            metrics=metrics,
            trainable_parameter_share=trainable / total,
            wall_time_seconds=time.monotonic() - started,
            base_model_weights_hash=weights_hash,
        )

    @staticmethod
    def _judge_dpo(
        metrics: dict[str, float], sft_exact_match: float | None, policy: CausalLmTrainerPolicy
    ) -> str | None:
        """None: no guard ran; "": DPO's adapter is kept; else why the SFT adapter is restored."""
        if sft_exact_match is None or "exact_match" not in metrics or policy.dpo_max_exact_match_drop is None:
            return None
        drop = sft_exact_match - metrics["exact_match"]
        if drop <= policy.dpo_max_exact_match_drop:
            return ""
        return (
            f"DPO lowered validation exact match by {drop:.4f} "
            f"({sft_exact_match:.4f} -> {metrics['exact_match']:.4f}); "
            f"the policy's dpo_max_exact_match_drop is {policy.dpo_max_exact_match_drop}"
        )

    @torch.inference_mode()
    def _generation_metrics(
        self,
        model: Any,
        tokenizer: Any,
        validation: Conversations,
        max_length: int,
        policy: CausalLmTrainerPolicy,
        *,
        dtype: torch.dtype,
    ) -> dict[str, float]:
        """Exact match of greedy answers on the first ``generation_eval_examples`` validation
        conversations, and the generation speed (empty: there are none)."""
        sample = list(validation.messages[: policy.generation_eval_examples])
        if not sample:
            return {}
        generator = LoadedCausalLm(model, tokenizer, max_prompt_tokens=max_length, device=self._device, dtype=dtype)
        began = time.monotonic()
        generations = generator.generate(
            sample, max_new_tokens=policy.max_new_tokens, batch_size=policy.eval_batch_size
        )
        seconds = time.monotonic() - began
        return {
            "exact_match": sum(
                exact_match(g.text, messages[-1]["content"]) for g, messages in zip(generations, sample, strict=True)
            )
            / len(sample),
            "generation_examples": float(len(sample)),
            "generation_tokens_per_second": sum(g.output_tokens for g in generations) / max(seconds, 1e-9),
        }

    @torch.inference_mode()
    def _validate(
        self,
        model: Any,
        tokenizer: Any,
        validation: Conversations,
        max_length: int,
        policy: CausalLmTrainerPolicy,
        *,
        dtype: torch.dtype,
        check_time: Callable[[str], None],
        generation: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Teacher-forced loss, perplexity and token accuracy on the answers of every validation
        conversation; exact match of greedy answers on the first ``generation_eval_examples``
        (``generation``: those already measured on these weights)."""
        examples, _ = encode_all(tokenizer, validation, max_length)
        if not examples:
            return {"loss": 0.0, "perplexity": 1.0, "token_accuracy": 0.0, "examples": 0.0}
        order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
        pad_id = int(tokenizer.pad_token_id)
        loss_sum, correct, counted = 0.0, 0, 0
        for start in range(0, len(order), policy.eval_batch_size):
            check_time(f"validating ({start}/{len(order)} conversations)")
            input_ids, attention_mask, labels = _pad_right(
                [examples[i] for i in order[start : start + policy.eval_batch_size]], pad_id
            )
            with autocast(self._device, dtype):
                logits, targets = answer_logits(
                    model, input_ids.to(self._device), attention_mask.to(self._device), labels.to(self._device)
                )
            loss_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(dim=-1) == targets).sum())
            counted += int(targets.numel())
        loss = loss_sum / max(counted, 1)
        metrics = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "token_accuracy": correct / max(counted, 1),
            "examples": float(len(examples)),
        }
        if generation is None:
            check_time("generating validation answers")
            generation = self._generation_metrics(model, tokenizer, validation, max_length, policy, dtype=dtype)
        metrics.update(generation)
        return metrics
