"""Triton Python-backend model serving the causal-LM base for every deployed version: each version
is a LoRA adapter named per request, streamed token by token (decoupled model).

Runs inside Triton's own environment (``.venv-triton``: numpy<2, torch, transformers, peft), not
the platform's. The causal_lm kind writes this file with ``network.py``, ``batching.py`` and
``serving.py`` into ``<model>/1/``; the base model's weights are a folder named by the
``base_model`` parameter (the dequantized GGUF the platform made), adapters are folders under
``adapters_dir``.

``execute`` hands each request to the continuous-batching scheduler (its own thread) and returns
None; the scheduler sends the request's chunks through its response sender, the last one with
``TRITONSERVER_RESPONSE_COMPLETE_FINAL``. Tensors, parameters, finish reasons and error prefixes
are those of ``serving``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = Path(__file__).resolve().parent
UNKNOWN_ADAPTER_LABEL = "unknown"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        sys.path.insert(0, str(HERE))
        import serving
        import torch
        from batching import Limits, Scheduler  # copied beside this file when the Triton model is written
        from network import compute_dtype, load_base_model, load_tokenizer

        self.serving = serving
        config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}

        def number(key: str, default: int) -> int:
            return int(parameters.get(key) or default)

        on_gpu = args.get("model_instance_kind") == "GPU"
        threads = number(serving.TORCH_THREADS_PARAMETER, 0) or serving.default_torch_threads(on_gpu)
        if threads > 0:
            torch.set_num_threads(threads)
        if on_gpu:
            device = torch.device(f"cuda:{int(args.get('model_instance_device_id') or 0)}")
        else:
            device = torch.device("cpu")
        cache_dir = parameters.get(serving.CACHE_DIR_PARAMETER) or None
        base, folder = load_base_model(
            parameters.get(serving.BASE_MODEL_PARAMETER) or "smollm2",
            cache_dir=Path(cache_dir) if cache_dir else None,
        )
        dtype = compute_dtype(parameters.get(serving.PRECISION_PARAMETER) or "auto", device)
        # Weights in the compute dtype: autocast over float32 weights would cast every weight at every
        # step (measured on 2 AMX cores: 3x slower than bfloat16 weights). Adapters keep theirs.
        base.to(device=device, dtype=dtype).eval()
        adapters_dir = parameters.get(serving.ADAPTERS_DIR_PARAMETER)
        self.limits = Limits(
            max_running=number(serving.MAX_RUNNING_PARAMETER, serving.DEFAULT_MAX_RUNNING),
            max_queued=number(serving.MAX_QUEUED_PARAMETER, serving.DEFAULT_MAX_QUEUED),
            max_new_tokens=number(serving.MAX_NEW_TOKENS_PARAMETER, serving.DEFAULT_MAX_NEW_TOKENS),
            max_prompt_tokens=number(serving.MAX_PROMPT_TOKENS_PARAMETER, serving.DEFAULT_MAX_PROMPT_TOKENS),
            max_adapters=number(serving.MAX_ADAPTERS_PARAMETER, serving.DEFAULT_MAX_ADAPTERS),
            prefill_threads=number(serving.PREFILL_THREADS_PARAMETER, 0),
        )
        self.max_stop_strings = number(serving.MAX_STOP_STRINGS_PARAMETER, serving.DEFAULT_MAX_STOP_STRINGS)
        self.stream_interval_tokens = max(
            1, number(serving.STREAM_INTERVAL_TOKENS_PARAMETER, serving.DEFAULT_STREAM_INTERVAL_TOKENS)
        )
        self.stream_interval_s = number(serving.STREAM_INTERVAL_MS_PARAMETER, serving.DEFAULT_STREAM_INTERVAL_MS) / 1000
        self.scheduler = Scheduler(
            base,
            load_tokenizer(folder),
            adapters_dir=Path(adapters_dir) if adapters_dir else None,
            limits=self.limits,
            device=device,
            dtype=dtype,
        )
        self.scheduler.start()
        # Families are kept: a collected family deletes its metrics.
        self.families = {
            name: pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
            for name, description in (
                (serving.REQUESTS_METRIC, "Generation requests answered: completed, failed or cancelled"),
                (serving.FAILURES_METRIC, "Generation requests answered with an error"),
                (serving.TTFT_SECONDS_METRIC, "Sum of the time from a request to its first token, seconds"),
                (serving.COMPLETION_TOKENS_METRIC, "Tokens generated"),
                (serving.DECODE_SECONDS_METRIC, "Sum of the time from a request's first token to its last, seconds"),
                (serving.CANCELLED_METRIC, "Generation requests the client cancelled"),
            )
        }
        self.metrics: dict[tuple[str, str], Any] = {}

    def execute(self, requests: list) -> None:
        serving = self.serving
        for request in requests:
            sender = request.get_response_sender()
            label = serving.BASE_METRIC_LABEL
            try:
                parameters = self._parameters(request)
                label = self._label(parameters.adapter)
                self.scheduler.submit(parameters, _Stream(self, sender, label).send, is_cancelled=request.is_cancelled)
            except Exception as error:  # refused (bad parameters, full queue): answered at once
                message = str(error) if serving.error_prefix(str(error)) else f"{type(error).__name__}: {error}"
                self._count(serving.REQUESTS_METRIC, label)
                self._count(serving.FAILURES_METRIC, label)
                sender.send(
                    pb_utils.InferenceResponse(error=_error(message)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
        return None

    def finalize(self) -> None:
        self.scheduler.close()

    def _parameters(self, request: Any) -> Any:
        """The request's inputs, checked (``serving.InvalidRequest`` otherwise)."""
        serving = self.serving

        def value(name: str) -> Any:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                return None
            array = tensor.as_numpy().reshape(-1)
            if array.size != 1:
                raise serving.InvalidRequest(f"{name} must hold one value, got {array.size}")
            return array[0]

        def text(name: str) -> str:
            raw = value(name)
            if raw is None:
                return ""
            try:
                return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            except UnicodeDecodeError:
                raise serving.InvalidRequest(f"{name} is not UTF-8") from None

        raw_messages = text(serving.MESSAGES_INPUT)
        if not raw_messages:
            raise serving.InvalidRequest(f"{serving.MESSAGES_INPUT} is required")
        max_tokens, temperature, top_p, seed = (
            value(serving.MAX_TOKENS_INPUT),
            value(serving.TEMPERATURE_INPUT),
            value(serving.TOP_P_INPUT),
            value(serving.SEED_INPUT),
        )
        return serving.GenerationParameters(
            messages=serving.parse_messages(raw_messages),
            adapter=text(serving.ADAPTER_INPUT),
            max_tokens=None if max_tokens is None else int(max_tokens),
            temperature=0.0 if temperature is None else float(temperature),
            top_p=1.0 if top_p is None else float(top_p),
            seed=None if seed is None else int(seed),
            stop=serving.parse_stop(text(serving.STOP_INPUT), max_strings=self.max_stop_strings),
        )

    def _label(self, adapter: str) -> str:
        """The ``adapter`` metric label: the adapter's name when it is deployed, so a request naming
        anything else cannot add a label."""
        if not adapter:
            return self.serving.BASE_METRIC_LABEL
        try:
            self.scheduler.adapters.folder(adapter)
        except Exception:
            return UNKNOWN_ADAPTER_LABEL
        return adapter

    def _count(self, name: str, label: str, amount: float = 1.0) -> None:
        key = (name, label)
        if key not in self.metrics:
            self.metrics[key] = self.families[name].Metric(labels={self.serving.ADAPTER_LABEL: label})
        if amount:
            self.metrics[key].increment(amount)


class _Stream:
    """One request's response sender, fed by the scheduler's chunks. The first chunk goes at once
    (time to first token); later text waits until ``stream_interval_tokens`` tokens are pending or
    ``stream_interval_s`` (when > 0) passed since the previous message; the last chunk carries
    what waits."""

    def __init__(self, model: TritonPythonModel, sender: Any, label: str) -> None:
        self.model = model
        self.sender = sender
        self.label = label
        self.sent_at: float | None = None
        self.sent_tokens = 0
        self.pending: list[str] = []

    def send(self, chunk: Any) -> None:
        serving = self.model.serving
        count = self.model._count
        self.pending.append(chunk.text)
        if not chunk.finish_reason and self.sent_at is not None:
            interval_s = self.model.stream_interval_s
            due = chunk.completion_tokens - self.sent_tokens >= self.model.stream_interval_tokens
            if not due and not (interval_s > 0 and time.monotonic() - self.sent_at >= interval_s):
                return
        text, self.pending = "".join(self.pending), []
        self.sent_at, self.sent_tokens = time.monotonic(), chunk.completion_tokens
        outputs = [
            pb_utils.Tensor(serving.TEXT_OUTPUT, np.array([text.encode("utf-8")], dtype=np.object_)),
            pb_utils.Tensor(serving.FINISH_REASON_OUTPUT, np.array([chunk.finish_reason.encode()], dtype=np.object_)),
            pb_utils.Tensor(serving.PROMPT_TOKENS_OUTPUT, np.array([chunk.prompt_tokens], dtype=np.int32)),
            pb_utils.Tensor(serving.COMPLETION_TOKENS_OUTPUT, np.array([chunk.completion_tokens], dtype=np.int32)),
        ]
        if not chunk.finish_reason:
            self.sender.send(pb_utils.InferenceResponse(output_tensors=outputs))
            return
        # Counted when answered, not when received: the canary's means (tokens, time to first
        # token per request) must not divide by requests still in flight.
        count(serving.REQUESTS_METRIC, self.label)
        count(serving.COMPLETION_TOKENS_METRIC, self.label, chunk.completion_tokens)
        if chunk.ttft_s is not None:
            count(serving.TTFT_SECONDS_METRIC, self.label, chunk.ttft_s)
            count(serving.DECODE_SECONDS_METRIC, self.label, chunk.decode_s)
        if chunk.finish_reason == serving.FINISH_CANCELLED:
            count(serving.CANCELLED_METRIC, self.label)
        if chunk.finish_reason == serving.FINISH_ERROR:
            count(serving.FAILURES_METRIC, self.label)
            if chunk.completion_tokens == 0:  # nothing was streamed: an error response says why
                response = pb_utils.InferenceResponse(error=_error(chunk.error or "generation failed"))
                self.sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
        self.sender.send(
            pb_utils.InferenceResponse(output_tensors=outputs), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        )


def _error(message: str) -> Any:
    """A Triton error with the status code its prefix names, where this Triton supports codes."""
    codes = {"invalid argument:": "INVALID_ARG", "resource exhausted:": "UNAVAILABLE"}
    code = next((getattr(pb_utils.TritonError, c, None) for p, c in codes.items() if message.startswith(p)), None)
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
