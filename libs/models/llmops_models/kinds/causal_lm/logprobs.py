"""Log-probabilities of whole answers under a causal LM: what DPO optimises (the policy's and the
reference's log p(answer | prompt)) and what the evaluation gate's preference accuracy compares
(log p(chosen) - log p(rejected) > 0).

An answer's log-probability is the sum over its tokens (and the end-of-turn token after it) of
log p(token | everything before), with the prompt rendered by the chat template exactly as in
training; only the final answer counts (earlier assistant turns of the prompt are the same for
both answers of a pair). Like ``network.answer_logits``, the output layer runs on the answer
positions only.

Imports only torch and the kind's own modules, like ``network``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from llmops_models.kinds.causal_lm.network import Message, autocast, encode_for_training, prompt_messages

Encoded = tuple[list[int], list[int]]
"""Token ids of a conversation and its labels (-100 outside the final answer)."""


def final_answer_only(labels: Sequence[int]) -> list[int]:
    """``labels`` with every run of answer tokens but the last set to -100."""
    kept = list(labels)
    end = len(kept)
    while end and kept[end - 1] == -100:
        end -= 1
    start = end
    while start and kept[start - 1] != -100:
        start -= 1
    return [-100] * start + kept[start:end] + [-100] * (len(kept) - end)


def encode_answer(tokenizer: Any, prompt: Sequence[Message], answer: str, *, max_length: int) -> Encoded | None:
    """The prompt with ``answer`` as the assistant's final turn, labels on that answer only; a
    conversation longer than ``max_length`` keeps its last tokens. None when no answer token is left."""
    messages = [*prompt_messages(prompt), {"role": "assistant", "content": answer}]
    encoded = encode_for_training(tokenizer, messages, max_length=max_length)
    if encoded is None:
        return None
    ids, labels = encoded
    return ids, final_answer_only(labels)


def pad_right(examples: Sequence[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, attention mask and labels of a batch, padded on the right to its longest row."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, targets) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[row, : len(ids)] = torch.tensor(targets, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask, labels


def answer_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Per row, the sum of the log-probabilities of its labelled tokens (float32, differentiable).
    ``model`` is a causal LM or a PEFT model around one (its adapters as they are set)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    mask = targets != -100
    logits = causal.get_output_embeddings()(hidden[:, :-1][mask]).float()
    chosen = torch.log_softmax(logits, dim=-1).gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
    per_token = torch.zeros(targets.shape, dtype=chosen.dtype, device=chosen.device)
    per_token = per_token.masked_scatter(mask, chosen)
    return per_token.sum(dim=1)


@torch.inference_mode()
def score_answers(
    model: Any,
    examples: Sequence[Encoded],
    *,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    check: Callable[[str], None] | None = None,
) -> list[float]:
    """``answer_logprobs`` of every example, in batches of similar lengths (no gradients);
    ``check`` is called before each batch (a job clock)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    scores = [0.0] * len(examples)
    for start in range(0, len(order), batch_size):
        if check is not None:
            check(f"scoring answers ({start}/{len(order)})")
        indices = order[start : start + batch_size]
        input_ids, attention_mask, labels = pad_right([examples[i] for i in indices], pad_id)
        with autocast(device, dtype):
            values = answer_logprobs(model, input_ids.to(device), attention_mask.to(device), labels.to(device))
        for i, value in zip(indices, values.tolist(), strict=True):
            scores[i] = float(value)
    return scores
