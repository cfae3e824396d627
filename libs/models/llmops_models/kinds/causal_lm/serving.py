"""How the causal LM is called on Triton: one decoupled model serving the base for every version,
each version a LoRA adapter named per request. Its tensors, finish reasons, error prefixes,
metric names and configuration parameters, plus numpy helpers to build inputs and read outputs.

Shared by the deployment service (writes the model, adapters and smoke test), the gateway (calls
it) and the Triton model itself (this file is copied beside ``model.py``), so none of them can
disagree on a name. At module level it imports only numpy and the standard library: Triton's own
environment imports it too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from llmops_models.kinds.base import ServingOptions, TritonModel

MODEL_NAME = "llmops_causal_lm"
"""Default Triton name of the one model serving the causal-LM base (a setting of the gateway and
the deployment service)."""

# Inputs: each of shape [1]; all but MESSAGES optional.
MESSAGES_INPUT = "MESSAGES"
"""BYTES: JSON array of ``{"role", "content"}`` turns (system/user/assistant), the last one ``user``."""
ADAPTER_INPUT = "ADAPTER"
"""BYTES: the adapter's name (``triton_name(model, version)``); empty means the base model alone."""
MAX_TOKENS_INPUT = "MAX_TOKENS"
"""INT32: at most this many new tokens (at most the model's ``max_new_tokens`` parameter)."""
TEMPERATURE_INPUT = "TEMPERATURE"
"""FP32: sampling temperature; 0 means greedy."""
TOP_P_INPUT = "TOP_P"
"""FP32: nucleus sampling mass, in (0, 1]."""
SEED_INPUT = "SEED"
"""INT64: seed of this sequence's own random generator (sampling only)."""
STOP_INPUT = "STOP"
"""BYTES: JSON array of stop strings; the text ends before the first one found."""
INPUTS = (MESSAGES_INPUT, ADAPTER_INPUT, MAX_TOKENS_INPUT, TEMPERATURE_INPUT, TOP_P_INPUT, SEED_INPUT, STOP_INPUT)

# Outputs: one response per generated chunk, each of shape [1].
TEXT_OUTPUT = "TEXT"
"""BYTES: the new text since the previous response (UTF-8, never a split character)."""
FINISH_REASON_OUTPUT = "FINISH_REASON"
"""BYTES: empty while streaming; one of ``FINISH_REASONS`` in the last response."""
PROMPT_TOKENS_OUTPUT = "PROMPT_TOKENS"
"""INT32: tokens of the rendered prompt."""
COMPLETION_TOKENS_OUTPUT = "COMPLETION_TOKENS"
"""INT32: tokens generated so far."""
OUTPUTS = (TEXT_OUTPUT, FINISH_REASON_OUTPUT, PROMPT_TOKENS_OUTPUT, COMPLETION_TOKENS_OUTPUT)

FINISH_STOP = "stop"
"""End of turn (EOS) or a stop string."""
FINISH_LENGTH = "length"
"""``max_tokens`` reached."""
FINISH_CANCELLED = "cancelled"
"""The client cancelled (or its deadline passed)."""
FINISH_ERROR = "error"
"""The model failed mid-stream (the partial text stands; the message is in the error response)."""
FINISH_REASONS = (FINISH_STOP, FINISH_LENGTH, FINISH_CANCELLED, FINISH_ERROR)

INVALID_ARGUMENT = "invalid argument:"
"""Error messages for bad requests start with this (unknown adapter, limits, bad JSON)."""
RESOURCE_EXHAUSTED = "resource exhausted:"
"""Error messages for a full admission queue start with this."""
ERROR_PREFIXES = (INVALID_ARGUMENT, RESOURCE_EXHAUSTED)

BASE_ADAPTER = ""
"""ADAPTER value selecting the base model alone."""
BASE_METRIC_LABEL = "base"
"""The ``adapter`` label of metrics for requests on the base model alone."""
ADAPTER_LABEL = "adapter"
REQUESTS_METRIC = "llmops_generation_requests_total"
"""Requests answered (completed, failed or cancelled), counted with their final response so that
per-request means never divide by requests still in flight."""
FAILURES_METRIC = "llmops_generation_failures_total"
TTFT_SECONDS_METRIC = "llmops_generation_ttft_seconds_total"
"""Sum over requests of the time to first token."""
COMPLETION_TOKENS_METRIC = "llmops_generation_completion_tokens_total"
DECODE_SECONDS_METRIC = "llmops_generation_decode_seconds_total"
"""Sum over requests of the time from the first to the last token (tokens/s = tokens / this)."""
CANCELLED_METRIC = "llmops_generation_cancelled_total"
"""Requests that ended ``cancelled`` (the client went away or cancelled): not failures."""
METRICS = (
    REQUESTS_METRIC,
    FAILURES_METRIC,
    TTFT_SECONDS_METRIC,
    COMPLETION_TOKENS_METRIC,
    DECODE_SECONDS_METRIC,
    CANCELLED_METRIC,
)

# Model configuration parameters (``parameters { key: ... value { string_value: ... } }``).
BASE_MODEL_PARAMETER = "base_model"
"""``smollm2`` (the packaged GGUF), a ``.gguf`` file or a model folder: as ``network.resolve_base_model``."""
BASE_MODEL_HASH_PARAMETER = "base_model_hash"
"""The base weights' identity (``network.base_model_hash``): an adapter trained on other weights
must not be deployed onto this model."""
ADAPTERS_DIR_PARAMETER = "adapters_dir"
"""Folder holding one ``<adapter name>/`` PEFT folder per deployed version."""
MAX_ADAPTERS_PARAMETER = "max_adapters"
"""Adapters kept loaded at most; the least recently used idle one is evicted."""
MAX_RUNNING_PARAMETER = "max_running"
"""Sequences decoded together at most (the batch)."""
MAX_QUEUED_PARAMETER = "max_queued"
"""Requests waiting for a slot at most; more are refused (``resource exhausted:``)."""
MAX_NEW_TOKENS_PARAMETER = "max_new_tokens"
"""Upper bound of a request's ``MAX_TOKENS`` (and its default)."""
MAX_PROMPT_TOKENS_PARAMETER = "max_prompt_tokens"
"""Longer prompts are refused (``invalid argument:``)."""
MAX_STOP_STRINGS_PARAMETER = "max_stop_strings"
TORCH_THREADS_PARAMETER = "torch_threads"
"""Threads per instance; 0: ``default_torch_threads`` (on CPU, every core)."""
PREFILL_THREADS_PARAMETER = "prefill_threads"
"""Threads of a prefill (the forward pass over new prompts, compute-bound, nothing decodes
meanwhile); 0: the decoding threads. Lets a node that decodes on fewer cores, to leave some to
other processes, still prefill on every core."""
PRECISION_PARAMETER = "precision"
"""``auto`` (bfloat16 where native: CUDA, AMX CPUs), ``float32`` or ``bfloat16``."""
CACHE_DIR_PARAMETER = "cache_dir"
"""Where the dequantized GGUF base is cached; empty: ``network.default_cache_dir()``."""

DEFAULT_MAX_ADAPTERS = 8
DEFAULT_MAX_RUNNING = 16
DEFAULT_MAX_QUEUED = 64
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_MAX_PROMPT_TOKENS = 1024
DEFAULT_MAX_STOP_STRINGS = 4
STREAM_INTERVAL_TOKENS_PARAMETER = "stream_interval_tokens"
"""After a stream's first token (sent at once), text is sent when this many tokens are pending …"""
STREAM_INTERVAL_MS_PARAMETER = "stream_interval_ms"
"""… or this long after the previous message (checked at each token); the last chunk goes at once.
Fewer messages through Triton, tritonserver's gRPC stream and the gateway per generated token."""
DEFAULT_STREAM_INTERVAL_TOKENS = 1
DEFAULT_STREAM_INTERVAL_MS = 0
ROLES = frozenset({"system", "user", "assistant"})


def default_torch_threads(on_gpu: bool, cores: int | None = None) -> int:
    """Torch threads when the configuration says 0: on CPU every core, on a GPU torch's default
    (the host threads barely matter there). Measured on 2 cores (AMD EPYC, float32, 2026-12-02),
    straight on Triton in alternating pairs: two threads decode 113 and 136 tokens/s at
    concurrency 16 where one decodes 91 and 88, and 18.1 and 19.9 tokens/s for one stream against
    16.8 and 16.5, although tritonserver and its clients share those cores (an earlier small run
    on an Intel VM with AMX had found the opposite, 151 against 179: ``TORCH_THREADS`` sets it)."""
    available = cores if cores is not None else len(os.sched_getaffinity(0))
    return 0 if on_gpu else available


SOURCES = Path(__file__).resolve().parent
MODEL_FILE = SOURCES / "triton" / "model.py"
NETWORK_FILE = SOURCES / "network.py"
BATCHING_FILE = SOURCES / "batching.py"
SERVING_FILE = Path(__file__).resolve()


def default_adapters_dir(model_repository: Path, model_name: str = MODEL_NAME) -> Path:
    """``<model_repository>/../adapters/<model_name>``: where deployment writes adapters by default."""
    return Path(model_repository).parent / "adapters" / model_name


class InvalidRequest(ValueError):
    """A request the model refuses; ``str()`` starts with ``invalid argument:``."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{INVALID_ARGUMENT} {message}")


@dataclass(frozen=True, slots=True)
class GenerationParameters:
    """One request's parameters, checked."""

    messages: list[dict[str, str]]
    adapter: str = BASE_ADAPTER
    max_tokens: int | None = None
    """None: the model's limit."""
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


def parse_messages(raw: str | bytes) -> list[dict[str, str]]:
    """The MESSAGES JSON as turns; ``InvalidRequest`` unless it is a non-empty list of
    ``{"role", "content"}`` objects with known roles whose last turn is the user's."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest(f"{MESSAGES_INPUT} is not JSON: {error}") from None
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{MESSAGES_INPUT} must be a non-empty JSON array of turns")
    turns: list[dict[str, str]] = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or not all(isinstance(turn.get(key), str) for key in ("role", "content")):
            raise InvalidRequest(f"{MESSAGES_INPUT}[{i}] must be an object with string 'role' and 'content'")
        if turn["role"] not in ROLES:
            raise InvalidRequest(f"{MESSAGES_INPUT}[{i}] has role {turn['role']!r}; expected one of {sorted(ROLES)}")
        turns.append({"role": turn["role"], "content": turn["content"]})
    if turns[-1]["role"] != "user":
        raise InvalidRequest(f"the last turn of {MESSAGES_INPUT} must be the user's")
    return turns


def parse_stop(raw: str | bytes, *, max_strings: int = DEFAULT_MAX_STOP_STRINGS) -> tuple[str, ...]:
    """The STOP JSON as stop strings (empty input: none)."""
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest(f"{STOP_INPUT} is not JSON: {error}") from None
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise InvalidRequest(f"{STOP_INPUT} must be a JSON array of non-empty strings")
    if len(value) > max_strings:
        raise InvalidRequest(f"{STOP_INPUT} has {len(value)} strings; at most {max_strings}")
    return tuple(value)


def check_sampling(temperature: float, top_p: float, max_tokens: int | None, max_new_tokens: int) -> None:
    """``InvalidRequest`` for values out of range."""
    if not math.isfinite(temperature) or temperature < 0:
        raise InvalidRequest(f"{TEMPERATURE_INPUT} must be >= 0, got {temperature}")
    if not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise InvalidRequest(f"{TOP_P_INPUT} must be in (0, 1], got {top_p}")
    if max_tokens is not None and not 1 <= max_tokens <= max_new_tokens:
        raise InvalidRequest(f"{MAX_TOKENS_INPUT} must be between 1 and {max_new_tokens}, got {max_tokens}")


def generation_inputs(
    messages: Sequence[Mapping[str, str]],
    *,
    adapter: str = BASE_ADAPTER,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Input name → numpy tensor for one generation request (optional inputs left out when unset)."""
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    tensors: dict[str, np.ndarray] = {
        MESSAGES_INPUT: np.array([json.dumps(turns, ensure_ascii=False).encode()], dtype=np.object_),
        ADAPTER_INPUT: np.array([adapter.encode()], dtype=np.object_),
    }
    if max_tokens is not None:
        tensors[MAX_TOKENS_INPUT] = np.array([max_tokens], dtype=np.int32)
    if temperature is not None:
        tensors[TEMPERATURE_INPUT] = np.array([temperature], dtype=np.float32)
    if top_p is not None:
        tensors[TOP_P_INPUT] = np.array([top_p], dtype=np.float32)
    if seed is not None:
        tensors[SEED_INPUT] = np.array([seed], dtype=np.int64)
    if stop:
        tensors[STOP_INPUT] = np.array([json.dumps(list(stop), ensure_ascii=False).encode()], dtype=np.object_)
    return tensors


TRITON_DATATYPES = {
    MESSAGES_INPUT: "BYTES",
    ADAPTER_INPUT: "BYTES",
    MAX_TOKENS_INPUT: "INT32",
    TEMPERATURE_INPUT: "FP32",
    TOP_P_INPUT: "FP32",
    SEED_INPUT: "INT64",
    STOP_INPUT: "BYTES",
}
"""Input name → KServe v2 datatype (``tritonclient``'s ``InferInput(name, [1], datatype)``)."""


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """One streamed response."""

    text: str
    finish_reason: str
    """Empty while streaming."""
    prompt_tokens: int
    completion_tokens: int

    @property
    def final(self) -> bool:
        return bool(self.finish_reason)


def read_chunk(output: Callable[[str], np.ndarray | None]) -> GenerationChunk:
    """One response as a chunk; ``output(name)`` returns an output as numpy (``InferResult.as_numpy``)."""

    def first(name: str) -> Any:
        value = output(name)
        return None if value is None or value.size == 0 else value.reshape(-1)[0]

    def text(name: str) -> str:
        value = first(name)
        if value is None:
            return ""
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    prompt_tokens, completion_tokens = first(PROMPT_TOKENS_OUTPUT), first(COMPLETION_TOKENS_OUTPUT)
    return GenerationChunk(
        text=text(TEXT_OUTPUT),
        finish_reason=text(FINISH_REASON_OUTPUT),
        prompt_tokens=0 if prompt_tokens is None else int(prompt_tokens),
        completion_tokens=0 if completion_tokens is None else int(completion_tokens),
    )


def error_prefix(message: str) -> str | None:
    """``INVALID_ARGUMENT`` or ``RESOURCE_EXHAUSTED`` when a Triton error message carries one
    (Triton may put its own words before the model's message), else None."""
    for prefix in ERROR_PREFIXES:
        if prefix in message:
            return prefix
    return None


def model_config(
    options: ServingOptions,
    *,
    name: str = MODEL_NAME,
    adapters_dir: Path,
    base_model: str = "smollm2",
    base_model_hash: str = "",
    max_adapters: int = DEFAULT_MAX_ADAPTERS,
    max_running: int = DEFAULT_MAX_RUNNING,
    max_queued: int = DEFAULT_MAX_QUEUED,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    max_stop_strings: int = DEFAULT_MAX_STOP_STRINGS,
    stream_interval_tokens: int = DEFAULT_STREAM_INTERVAL_TOKENS,
    stream_interval_ms: int = DEFAULT_STREAM_INTERVAL_MS,
    prefill_threads: int = 0,
    precision: str = "auto",
    cache_dir: Path | None = None,
) -> Any:
    """The Triton model configuration of the causal-LM base (decoupled, one request per call)."""
    from tritonclient.grpc import model_config_pb2 as mc

    kinds = {"KIND_CPU": mc.ModelInstanceGroup.KIND_CPU, "KIND_GPU": mc.ModelInstanceGroup.KIND_GPU}
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=0,
        input=[
            mc.ModelInput(name=MESSAGES_INPUT, data_type=mc.TYPE_STRING, dims=[1]),
            mc.ModelInput(name=ADAPTER_INPUT, data_type=mc.TYPE_STRING, dims=[1], optional=True),
            mc.ModelInput(name=MAX_TOKENS_INPUT, data_type=mc.TYPE_INT32, dims=[1], optional=True),
            mc.ModelInput(name=TEMPERATURE_INPUT, data_type=mc.TYPE_FP32, dims=[1], optional=True),
            mc.ModelInput(name=TOP_P_INPUT, data_type=mc.TYPE_FP32, dims=[1], optional=True),
            mc.ModelInput(name=SEED_INPUT, data_type=mc.TYPE_INT64, dims=[1], optional=True),
            mc.ModelInput(name=STOP_INPUT, data_type=mc.TYPE_STRING, dims=[1], optional=True),
        ],
        output=[
            mc.ModelOutput(name=TEXT_OUTPUT, data_type=mc.TYPE_STRING, dims=[1]),
            mc.ModelOutput(name=FINISH_REASON_OUTPUT, data_type=mc.TYPE_STRING, dims=[1]),
            mc.ModelOutput(name=PROMPT_TOKENS_OUTPUT, data_type=mc.TYPE_INT32, dims=[1]),
            mc.ModelOutput(name=COMPLETION_TOKENS_OUTPUT, data_type=mc.TYPE_INT32, dims=[1]),
        ],
        instance_group=[mc.ModelInstanceGroup(count=options.instance_count, kind=kinds[options.instance_kind])],
    )
    config.model_transaction_policy.decoupled = True
    parameters = {
        BASE_MODEL_PARAMETER: base_model,
        BASE_MODEL_HASH_PARAMETER: base_model_hash,
        ADAPTERS_DIR_PARAMETER: str(adapters_dir),
        MAX_ADAPTERS_PARAMETER: str(max_adapters),
        MAX_RUNNING_PARAMETER: str(max_running),
        MAX_QUEUED_PARAMETER: str(max_queued),
        MAX_NEW_TOKENS_PARAMETER: str(max_new_tokens),
        MAX_PROMPT_TOKENS_PARAMETER: str(max_prompt_tokens),
        MAX_STOP_STRINGS_PARAMETER: str(max_stop_strings),
        STREAM_INTERVAL_TOKENS_PARAMETER: str(stream_interval_tokens),
        STREAM_INTERVAL_MS_PARAMETER: str(stream_interval_ms),
        TORCH_THREADS_PARAMETER: str(options.torch_threads),
        PREFILL_THREADS_PARAMETER: str(prefill_threads),
        PRECISION_PARAMETER: precision,
        CACHE_DIR_PARAMETER: "" if cache_dir is None else str(cache_dir),
    }
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def triton_model(options: ServingOptions, **config: Any) -> TritonModel:
    """The base model's Triton folder: ``model_config`` and the Python files ``model.py`` imports."""
    from llmops_models.kinds.base import TritonModel

    return TritonModel(
        config=model_config(options, **config),
        files={
            "model.py": MODEL_FILE,
            "network.py": NETWORK_FILE,
            "batching.py": BATCHING_FILE,
            "serving.py": SERVING_FILE,
        },
    )
