"""DPO on CPU: TRL's ``DPOTrainer`` against the service's own loop (``adapters/dpo.py``), the same
pairs, steps, batch size, LoRA and precision, on SmolLM2-135M-Instruct.

Both start from the same freshly initialised LoRA adapter; both precompute the reference's
log-probabilities (TRL: ``precompute_ref_log_probs=True``, reference = the adapter disabled; ours:
the adapter as it is before the first step, the same weights here since a fresh LoRA adapter adds
zero). Prints one JSON object: seconds to prepare (tokenising, the reference pass) and to train,
for each, and the losses of the first and last steps (they must agree at the first step: log 2).

Environment: ``LLMOPS_BENCH_PAIRS`` (32), ``LLMOPS_BENCH_STEPS`` (8), ``LLMOPS_BENCH_BATCH`` (8),
``LLMOPS_BENCH_THREADS`` (2), ``LLMOPS_BENCH_MAX_LENGTH`` (256), ``LLMOPS_BENCH_ONLY`` (``loop`` or
``trl``: one of the two).

    .venv/bin/python services/fine_tuning/bench/bench_dpo_trl_vs_loop.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import torch

from llmops_fine_tuning.adapters.dpo import train_dpo
from llmops_fine_tuning.adapters.training_loop import JobClock, make_deterministic
from llmops_fine_tuning.domain.request import CausalLmTrainerPolicy
from llmops_models.kinds.causal_lm.network import compute_dtype, load_base_model, load_tokenizer
from llmops_models.kinds.causal_lm.preferences import PreferencePair

INTENTS = {
    "card_arrival": ["Where is my new card?", "My card has not arrived yet.", "When will my card be delivered?"],
    "exchange_rate": ["What exchange rate do you use?", "Is your currency rate fair?", "How is the FX rate set?"],
    "lost_card": ["I lost my card.", "My card was stolen yesterday.", "I cannot find my bank card."],
    "top_up": ["How do I top up my account?", "My top-up did not go through.", "Where do I add funds?"],
}
SYSTEM = "You classify customer messages of a bank. Answer with the intent name only."


def pairs(count: int) -> list[PreferencePair]:
    names = sorted(INTENTS)
    result = []
    for i in range(count):
        intent = names[i % len(names)]
        phrase = INTENTS[intent][(i // len(names)) % 3] + f" (case {i})"
        wrong = names[(names.index(intent) + 1) % len(names)]
        result.append(
            PreferencePair(
                pair_id=f"p{i:04d}",
                prompt=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": phrase}],
                chosen=intent,
                rejected=wrong,
            )
        )
    return result


def fresh_model(seed: int) -> tuple[Any, Any]:
    from peft import LoraConfig, TaskType, get_peft_model

    make_deterministic(seed)
    base, folder = load_base_model("smollm2")
    base.set_attn_implementation("eager")
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    return get_peft_model(base, lora), load_tokenizer(folder)


def run_loop(data: list[PreferencePair], *, steps: int, batch: int, max_length: int) -> dict[str, Any]:
    model, tokenizer = fresh_model(42)
    device = torch.device("cpu")
    dtype = compute_dtype("auto", device)
    policy = CausalLmTrainerPolicy(
        dpo_batch_size=batch, dpo_epochs=steps * batch / len(data), dpo_learning_rate=5e-4, eval_batch_size=16
    )
    losses: list[float] = []
    began = time.monotonic()
    metrics = train_dpo(
        model,
        tokenizer,
        train_pairs=data,
        validation_pairs=[],
        policy=policy,
        max_length=max_length,
        seed=42,
        trainable_parameters=[p for p in model.parameters() if p.requires_grad],
        device=device,
        dtype=dtype,
        clock=JobClock(None),
        on_progress=lambda progress: losses.append(progress.loss),
        progress_interval_s=0.0,
    )
    total = time.monotonic() - began
    return {
        "steps": metrics["dpo_steps"],
        "train_seconds": round(metrics["dpo_train_seconds"], 2),
        "total_seconds": round(total, 2),
        "prepare_and_score_seconds": round(total - metrics["dpo_train_seconds"], 2),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
        "dtype": str(dtype),
    }


def run_trl(data: list[PreferencePair], *, steps: int, batch: int, max_length: int) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = fresh_model(42)
    dataset = Dataset.from_list(
        [
            {
                "prompt": pair.prompt,
                "chosen": [{"role": "assistant", "content": pair.chosen}],
                "rejected": [{"role": "assistant", "content": pair.rejected}],
            }
            for pair in data
        ]
    )
    losses: list[float] = []

    class Losses(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as output:
        config = DPOConfig(
            output_dir=output,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=5e-4,
            lr_scheduler_type="linear",
            warmup_steps=0,
            beta=0.1,
            max_length=max_length,
            precompute_ref_log_probs=True,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            bf16=compute_dtype("auto", torch.device("cpu")) == torch.bfloat16,
            disable_tqdm=True,
            seed=42,
            dataloader_num_workers=0,
        )
        began = time.monotonic()
        trainer = DPOTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[Losses()]
        )
        prepared = time.monotonic() - began
        trained = time.monotonic()
        trainer.train()
        train_seconds = time.monotonic() - trained
    return {
        "steps": steps,
        "construct_seconds": round(prepared, 2),
        "train_seconds_including_reference_pass": round(train_seconds, 2),
        "total_seconds": round(time.monotonic() - began, 2),
        "first_loss": round(losses[0], 4) if losses else None,
        "last_loss": round(losses[-1], 4) if losses else None,
    }


def main() -> None:
    count = int(os.environ.get("LLMOPS_BENCH_PAIRS", "32"))
    steps = int(os.environ.get("LLMOPS_BENCH_STEPS", "8"))
    batch = int(os.environ.get("LLMOPS_BENCH_BATCH", "8"))
    max_length = int(os.environ.get("LLMOPS_BENCH_MAX_LENGTH", "256"))
    torch.set_num_threads(int(os.environ.get("LLMOPS_BENCH_THREADS", "2")))
    data = pairs(count)
    result: dict[str, Any] = {"pairs": count, "steps": steps, "batch_pairs": batch, "threads": torch.get_num_threads()}
    only = os.environ.get("LLMOPS_BENCH_ONLY", "")
    if only in ("", "loop"):
        result["loop"] = run_loop(data, steps=steps, batch=batch, max_length=max_length)
        print(json.dumps({"loop": result["loop"]}), flush=True)
    if only in ("", "trl"):
        result["trl_dpo_trainer"] = run_trl(data, steps=steps, batch=batch, max_length=max_length)
    print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
