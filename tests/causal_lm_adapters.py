"""Two tiny LoRA adapters on the real SmolLM2 that answer differently, for the causal-LM serving
tests: trained with PEFT on a handful of questions at a high learning rate (seconds each), each
saved in the artifact layout (``<folder>/adapter/``). Trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmops_models.kinds.causal_lm.network import (
    answer_logits,
    autocast,
    compute_dtype,
    encode_for_training,
    load_base_model,
    load_tokenizer,
)

ANSWERS = {"fruit": "Pineapple.", "colour": "Purple."}
"""Adapter name → the answer it gives to every question."""
QUESTIONS = [
    "Where is my new card?",
    "What exchange rate do you use?",
    "How do I top up my account?",
    "I lost my card.",
    "What is the capital of France?",
    "Tell me a joke.",
    "How are you today?",
    "Can you help me with my order?",
]
QUESTION = "What should I do now?"
"""Not in the training questions: each adapter still answers it its own way."""
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def train_answer_adapter(folder: Path, answer: str, *, steps: int = 12, seed: int = 0) -> Path:
    """A LoRA adapter that answers every question with ``answer``; returns ``folder`` (holding
    ``adapter/``)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base, source = load_base_model("smollm2")
    tokenizer = load_tokenizer(source)
    model = get_peft_model(
        base,
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
    )
    encoded = [
        encode_for_training(
            tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": answer}], max_length=128
        )
        for q in QUESTIONS
    ]
    examples = [e for e in encoded if e is not None]
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), int(tokenizer.pad_token_id))
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100)
    for row, (ids, answer_labels) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.tensor(answer_labels)
    device = torch.device("cpu")
    dtype = compute_dtype("auto", device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        with autocast(device, dtype):
            logits, targets = answer_logits(model, input_ids, mask, labels)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(str(folder / "adapter"))
    return folder


def trained_adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Adapter name → artifact-like folder (``adapter/`` inside), trained once per session."""
    root = tmp_path_factory.getbasetemp() / "causal_lm_adapters"
    folders = {}
    for name, answer in ANSWERS.items():
        folder = root / name
        if not (folder / "adapter" / "adapter_config.json").is_file():
            train_answer_adapter(folder, answer)
        folders[name] = folder
    return folders
