"""Streaming generation through the gateway against generation without the platform (issue 15).

Method, all in one run on the same machine:

1. **No platform** (``libs/models/bench/bench_causal_lm_reference.py``, a subprocess): the base
   model (SmolLM2-135M-Instruct from the packaged GGUF, weights in the serving dtype: bfloat16
   where native) generates with plain transformers ``generate()``: greedy, left-padded batches of
   ``CONCURRENCY`` prompts, then one prompt at a time; the same prompts (rendered with the chat
   template as the Triton model renders them) and the same ``max_tokens`` as the gateway run. It
   also measures the machine's matrix-multiply rate on the model's own weight shapes at
   ``CONCURRENCY`` rows, the ceiling of a decoding step, and writes two LoRA adapters (the
   trainer's causal-lm configuration: rank 16 on every projection).
2. **The platform**: a private tritonserver with the decoupled causal-LM model (continuous
   batching, ``max_running`` = ``CONCURRENCY``, the platform's default torch threads), a private Kafka broker, and
   the gateway as its own process (``python -m llmops_gateway``, in plaintext:
   ``LLMOPS_TLS_INSECURE=true``, as the references have no network hop to encrypt). An asyncio gRPC client calls
   ``GenerateStream`` over a socket on the gateway's base-model alias (the base alone: the same
   model as the references), greedy: at concurrency 1 (``REQUESTS`` streams one after another) and
   at concurrency ``CONCURRENCY`` (``WAVES`` x ``CONCURRENCY`` streams, each worker starting its next
   stream when one ends), in ``ROUNDS`` rounds alternating the two. Time to first token: from the
   call to the first streamed message. Tokens: the usage of each stream's last message.
   Aggregate tokens/s: all streams' completion tokens over the wall time of the load.
3. **Adapters**: a long stream on adapter A (the first adapter, already loaded) is running when
   adapter B is requested for the first time: the extra resident memory is the Python-backend
   stub's RSS (``/proc/<pid>/status``) after B answered minus before; the load time is B's first
   time to first token minus its second (both while A streams). A's longest pause between
   messages shows what the load costs a running stream. Then ``CONCURRENCY`` streams over the two
   adapters (half each) at once: the mixed-adapter batch against the base alone.
4. **llama.cpp** (``libs/models/bench/bench_causal_lm_llama_cpp.py``, run with the Python of the
   throw-away environment ``make bench-setup`` creates): the very same GGUF file (Q4_1), the same
   prompt token ids, one stream and ``CONCURRENCY`` parallel sequences. Without that environment
   its rows say SKIP and why.

Environment (full-size defaults): ``LLMOPS_BENCH_GENERATION_MAX_TOKENS`` (128),
``LLMOPS_BENCH_GENERATION_CONCURRENCY`` (16), ``LLMOPS_BENCH_GENERATION_REQUESTS`` (streams at
concurrency 1 per round, 8), ``LLMOPS_BENCH_GENERATION_WAVES`` (4), ``LLMOPS_BENCH_GENERATION_ROUNDS``
(2), ``LLMOPS_BENCH_GENERATION_THREADS`` (torch threads everywhere; default: the cores in the
references, the platform's default in Triton: on CPU every core),
``LLMOPS_BENCH_GENERATION_STREAM_INTERVAL_TOKENS`` (default: the platform's),
``LLMOPS_BENCH_GENERATION_INSTANCES`` (Triton model instances, 1; the deployment's
``LLMOPS_DEPLOYMENT_INSTANCE_COUNT``),
``LLMOPS_BENCH_GENERATION_GEMM_SECONDS`` (5), ``LLMOPS_BENCH_GENERATION_LLAMA_PYTHON`` (default
``var/bench/llama-cpp/bin/python``).

Everything shares the machine's cores (Triton, the gateway, the client), as a single-node
deployment does; the references run alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.framework import BenchContext, Benchmark, Unmeasurable, free_port
from bench.results import BenchResult, Figure, Target
from bench.script import run_script
from llmops_config.kafka import kafka_environment

NAME = "generation"
MAX_TOKENS_ENV = "LLMOPS_BENCH_GENERATION_MAX_TOKENS"
CONCURRENCY_ENV = "LLMOPS_BENCH_GENERATION_CONCURRENCY"
REQUESTS_ENV = "LLMOPS_BENCH_GENERATION_REQUESTS"
WAVES_ENV = "LLMOPS_BENCH_GENERATION_WAVES"
ROUNDS_ENV = "LLMOPS_BENCH_GENERATION_ROUNDS"
THREADS_ENV = "LLMOPS_BENCH_GENERATION_THREADS"
GEMM_SECONDS_ENV = "LLMOPS_BENCH_GENERATION_GEMM_SECONDS"
STREAM_INTERVAL_ENV = "LLMOPS_BENCH_GENERATION_STREAM_INTERVAL_TOKENS"
INSTANCES_ENV = "LLMOPS_BENCH_GENERATION_INSTANCES"
LLAMA_PYTHON_ENV = "LLMOPS_BENCH_GENERATION_LLAMA_PYTHON"
PLAN_ENV = "LLMOPS_BENCH_GENERATION_PLAN"
"""Read by both scripts: the JSON plan this benchmark writes."""
SCRIPTS = Path("libs") / "models" / "bench"
REFERENCE_SCRIPT = SCRIPTS / "bench_causal_lm_reference.py"
LLAMA_SCRIPT = SCRIPTS / "bench_causal_lm_llama_cpp.py"
LLAMA_VENV = Path("var") / "bench" / "llama-cpp"
TRITON_MODEL = "llmops_bench_generation"
BASE_ALIAS = "bench-smollm2-base"
ADAPTER_MODELS = ("bench-gen-a", "bench-gen-b")
"""Two causal_lm models, version 1 each: their adapters are ``<model>__v1``."""
API_KEY = "bench-key"
LONG_STREAM_TOKENS = 512
"""Adapter A's stream while B loads: long enough to outlast B's two requests."""
ADAPTER_PROBE_TOKENS = 8
STREAM_TIMEOUT_S = 300.0
LORA = {  # the trainer's causal-lm defaults (deploy/training/defaults.yaml)
    "rank": 16,
    "alpha": 32,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
PROMPTS = [  # questions whose answers run long: most streams end at max_tokens, as in a throughput test
    "Write a long story about a dragon who learns to fly.",
    "Explain in detail how a bank transfer between two countries works.",
    "Describe, step by step, how to bake a loaf of bread.",
    "Write a detailed travel guide for a week in Lisbon.",
    "Explain how a credit card payment is authorised, cleared and settled.",
    "Write a long letter to a friend about your summer holidays.",
    "Describe the history of the bicycle in detail.",
    "Explain how vaccines train the immune system, with examples.",
    "Write a detailed recipe for a vegetable curry and explain each step.",
    "Explain how compound interest works, with several worked examples.",
    "Write a long poem about the sea and the people who live by it.",
    "Describe how a modern city manages its water supply.",
    "Explain the rules of chess to a beginner, piece by piece.",
    "Write a detailed plan for learning a new language in six months.",
    "Describe how an airplane stays in the air, in detail.",
    "Write a long story about a robot who opens a bakery.",
    "Explain how a refrigerator works, step by step.",
    "Describe the life cycle of a star in detail.",
    "Write a detailed guide to saving money on groceries.",
    "Explain how the internet delivers a web page to a browser.",
    "Write a long story about two friends crossing a desert.",
    "Describe how coffee is grown, processed and roasted.",
    "Explain how a mortgage works and what affects its cost.",
    "Write a detailed description of a busy market in the morning.",
    "Explain photosynthesis in detail to a curious teenager.",
    "Write a long diary entry of a lighthouse keeper during a storm.",
    "Describe how a football team prepares for a match during a week.",
    "Explain how electric cars work and how they are charged.",
    "Write a detailed guide to planting a vegetable garden.",
    "Describe the journey of a letter through the postal system.",
    "Explain how to prepare for a job interview, step by step.",
    "Write a long fairy tale about a clever fox and a proud crow.",
]
LONG_PROMPT = "Count from 1 to 1000, separated by commas."

TTFT_C1_P50 = Figure(benchmark=NAME, name="GenerateStream time to first token p50, gateway, concurrency 1", unit="ms")
TTFT_C1_P99 = Figure(benchmark=NAME, name="GenerateStream time to first token p99, gateway, concurrency 1", unit="ms")
TTFT_C16_P50 = Figure(benchmark=NAME, name="GenerateStream time to first token p50, gateway, concurrency 16", unit="ms")
TTFT_C16_P99 = Figure(benchmark=NAME, name="GenerateStream time to first token p99, gateway, concurrency 16", unit="ms")
C1 = Figure(
    benchmark=NAME,
    name="GenerateStream output tokens/s, gateway, concurrency 1 (one stream)",
    unit="tokens/s",
    reference_name="plain generate(), one prompt at a time",
)
C16 = Figure(
    benchmark=NAME,
    name="GenerateStream aggregate output tokens/s, gateway, concurrency 16 vs concurrency 1",
    unit="tokens/s",
    reference_name="the same at concurrency 1",
    target=Target(comparison=">=", threshold=4.0, subject="ratio"),
)
VS_PLAIN = Figure(
    benchmark=NAME,
    name="GenerateStream aggregate output tokens/s, gateway, concurrency 16 vs plain generate() batch 16",
    unit="tokens/s",
    reference_name="plain transformers generate(), batch 16, no Triton, no gateway",
    target=Target(comparison=">=", threshold=0.8, subject="ratio"),
)
VS_LLAMA_SINGLE = Figure(
    benchmark=NAME,
    name="GenerateStream output tokens/s, concurrency 1 vs llama.cpp one stream (same GGUF)",
    unit="tokens/s",
    reference_name="llama-cpp-python, one stream, same Q4_1 GGUF",
)
VS_LLAMA_PARALLEL = Figure(
    benchmark=NAME,
    name="GenerateStream aggregate output tokens/s, concurrency 16 vs llama.cpp 16 parallel sequences",
    unit="tokens/s",
    reference_name="llama-cpp-python, 16 sequences in one batch, same Q4_1 GGUF",
)
GEMM = Figure(
    benchmark=NAME,
    name="matrix-multiply rate of the model's weight shapes at 16 rows (decode ceiling)",
    unit="GFLOP/s",
)
CEILING = Figure(
    benchmark=NAME,
    name="GenerateStream concurrency 16 decode FLOP rate as a fraction of that ceiling",
    unit="",
    reference_name="plain generate() batch 16, the same fraction",
)
ADAPTER_MEMORY = Figure(
    benchmark=NAME,
    name="second adapter: extra resident memory of the Triton model when first requested (rank 16)",
    unit="MiB",
    reference_name="the base model's weights",
    target=Target(comparison="<", threshold=0.05, subject="ratio"),
)
ADAPTER_LOAD = Figure(
    benchmark=NAME,
    name="second adapter: load time (first time to first token minus a loaded one's, another stream running)",
    unit="ms",
)
ADAPTER_STALL = Figure(
    benchmark=NAME,
    name="second adapter: longest pause of the running stream while it loads",
    unit="ms",
    reference_name="that stream's median pause",
)
MIXED = Figure(
    benchmark=NAME,
    name="GenerateStream aggregate output tokens/s, concurrency 16 over two adapters vs the base alone",
    unit="tokens/s",
    reference_name="base alone, concurrency 16",
)
FIGURES = (
    TTFT_C1_P50,
    TTFT_C1_P99,
    TTFT_C16_P50,
    TTFT_C16_P99,
    C1,
    C16,
    VS_PLAIN,
    VS_LLAMA_SINGLE,
    VS_LLAMA_PARALLEL,
    GEMM,
    CEILING,
    ADAPTER_MEMORY,
    ADAPTER_LOAD,
    ADAPTER_STALL,
    MIXED,
)
LLAMA_FIGURES = (VS_LLAMA_SINGLE, VS_LLAMA_PARALLEL)


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True, slots=True)
class Sizes:
    max_tokens: int
    concurrency: int
    requests: int
    waves: int
    rounds: int
    threads: int
    """The references' torch threads."""
    platform_threads: int
    """The Triton model's torch threads; 0: the platform's default (``default_torch_threads``)."""
    stream_interval_tokens: int
    """0: the platform's default."""
    instances: int
    """Triton model instances (each its own scheduler, base model and torch threads)."""
    gemm_seconds: float

    @classmethod
    def from_environment(cls) -> Sizes:
        return cls(
            max_tokens=_int(MAX_TOKENS_ENV, 128),
            concurrency=_int(CONCURRENCY_ENV, 16),
            requests=_int(REQUESTS_ENV, 8),
            waves=_int(WAVES_ENV, 4),
            rounds=max(1, _int(ROUNDS_ENV, 2)),
            threads=_int(THREADS_ENV, os.cpu_count() or 2),
            platform_threads=_int(THREADS_ENV, 0),
            stream_interval_tokens=_int(STREAM_INTERVAL_ENV, 0),
            instances=max(1, _int(INSTANCES_ENV, 1)),
            gemm_seconds=float(os.environ.get(GEMM_SECONDS_ENV) or 5),
        )


@dataclass(frozen=True, slots=True)
class Stream:
    """One GenerateStream call as the client saw it."""

    ttft_s: float
    seconds: float
    completion_tokens: int
    finish_reason: str
    pauses_s: tuple[float, ...]
    """Between consecutive messages."""


@dataclass(frozen=True, slots=True)
class Load:
    streams: tuple[Stream, ...]
    errors: int
    seconds: float
    first_error: str = ""

    @property
    def tokens(self) -> int:
        return sum(s.completion_tokens for s in self.streams)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def ttft_ms(self, share: float) -> float:
        values = sorted(s.ttft_s * 1000 for s in self.streams)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(len(values) * share))]


def combine(loads: Sequence[Load]) -> Load:
    return Load(
        streams=tuple(s for load in loads for s in load.streams),
        errors=sum(load.errors for load in loads),
        seconds=sum(load.seconds for load in loads),
        first_error=next((load.first_error for load in loads if load.first_error), ""),
    )


class Client:
    """An asyncio gRPC client of the gateway's ``GenerateStream``, over a socket."""

    def __init__(self, address: str) -> None:
        import grpc

        from llmops.inference.v1 import inference_pb2_grpc

        self.channel = grpc.aio.insecure_channel(address)
        self.stub = inference_pb2_grpc.InferenceServiceStub(self.channel)

    async def stream(self, model: str, prompt: str, max_tokens: int) -> Stream:
        from llmops.inference.v1 import inference_pb2

        request = inference_pb2.GenerateStreamRequest(
            model=model,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=0.0,
            request_id=f"bench-{uuid.uuid4().hex}",
        )
        started = time.perf_counter()
        first = last = None
        pauses: list[float] = []
        tokens, reason = 0, ""
        call = self.stub.GenerateStream(
            request, metadata=(("authorization", f"Bearer {API_KEY}"),), timeout=STREAM_TIMEOUT_S
        )
        async for message in call:
            now = time.perf_counter()
            if first is None:
                first = now
            elif last is not None:
                pauses.append(now - last)
            last = now
            if message.finish_reason:
                reason, tokens = message.finish_reason, message.usage.completion_tokens
        if first is None or last is None or reason not in ("stop", "length"):
            raise RuntimeError(f"the stream ended without tokens or with finish reason {reason!r}")
        return Stream(first - started, last - started, tokens, reason, tuple(pauses))

    async def load(self, models: Sequence[str], *, concurrency: int, total: int, max_tokens: int) -> Load:
        """``total`` streams by ``concurrency`` workers, stream i on ``models[i % len(models)]``
        with prompt i (cycling)."""
        streams: list[Stream] = []
        failures: list[str] = []
        counter = iter(range(total))

        async def worker() -> None:
            for i in counter:
                try:
                    streams.append(await self.stream(models[i % len(models)], PROMPTS[i % len(PROMPTS)], max_tokens))
                except Exception as error:
                    failures.append(f"{type(error).__name__}: {error}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        if not streams:
            raise RuntimeError(f"no stream succeeded ({len(failures)} failed; the first: {failures[0][:300]})")
        return Load(tuple(streams), len(failures), elapsed, failures[0] if failures else "")

    async def close(self) -> None:
        await self.channel.close()


# --- processes -------------------------------------------------------------------------------


def _stub_rss_mib(model: str) -> float:
    """Resident memory of the Python-backend stub serving the Triton model ``model`` (its command
    line names the model's folder and instance)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "triton_python_backend_stub" not in command or model not in command:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            continue
    raise RuntimeError(f"no Python-backend stub process found for the Triton model {model}")


async def _rss_mib(model: str, samples: int = 3) -> float:
    values = []
    for _ in range(samples):
        values.append(_stub_rss_mib(model))
        await asyncio.sleep(0.2)
    return statistics.median(values)


async def _start_gateway(context: BenchContext, platform: Any, port: int, max_tokens: int) -> Any:
    """``python -m llmops_gateway`` on ``port``, serving generations on the bench's Triton model;
    returns the process once its health check says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("LLMOPS_")},
        **kafka_environment(platform),
        "LLMOPS_TRITON_HOST": platform.triton_host,
        "LLMOPS_TRITON_GRPC_PORT": str(platform.triton_grpc_port),
        "LLMOPS_VAR_DIR": str(context.scratch("generation-gateway-var")),
        "LLMOPS_LOG_LEVEL": "WARNING",
        "LLMOPS_GATEWAY_PORT": str(port),
        "LLMOPS_GATEWAY_HOST": "127.0.0.1",
        "LLMOPS_GATEWAY_METRICS_PORT": str(free_port()),
        "LLMOPS_GATEWAY_API_KEYS": API_KEY,
        "LLMOPS_TLS_INSECURE": "true",  # plaintext on purpose: see the method (the baselines are plaintext)
        "LLMOPS_GATEWAY_CAUSAL_LM_MODEL": TRITON_MODEL,
        "LLMOPS_GATEWAY_BASE_MODEL_ALIAS": BASE_ALIAS,
        "LLMOPS_GATEWAY_GENERATE_MAX_TOKENS": str(max_tokens),
        "LLMOPS_GATEWAY_GENERATE_DEFAULT_MAX_TOKENS": str(min(128, max_tokens)),
        "LLMOPS_GATEWAY_GENERATE_MAX_DEADLINE_S": str(STREAM_TIMEOUT_S),
    }
    log = context.scratch("generation-gateway-log") / "gateway.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            context.python, "-m", "llmops_gateway", env=env, stdout=output, stderr=output, cwd=str(context.repo_root)
        )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 180
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the gateway exited with {process.returncode} (log {log})")
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return process
            if time.monotonic() > deadline:
                await _stop(process)
                raise RuntimeError(f"the gateway did not become healthy within 180 s (log {log})")
            await asyncio.sleep(0.5)


async def _stop(process: Any) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.contextmanager
def _plan_in_environment(plan: Path) -> Any:
    """The scripts find the plan in their environment (``run_script`` passes this process's on)."""
    os.environ[PLAN_ENV] = str(plan)
    try:
        yield
    finally:
        os.environ.pop(PLAN_ENV, None)


def _llama_python(context: BenchContext) -> Path:
    return Path(os.environ.get(LLAMA_PYTHON_ENV) or context.repo_root / LLAMA_VENV / "bin" / "python")


# --- the benchmark ---------------------------------------------------------------------------


async def _adapters(client: Client, reporter: Any) -> dict[str, float]:
    """Adapter B requested for the first time while a long stream on adapter A runs."""
    first, second = ADAPTER_MODELS
    await client.stream(first, PROMPTS[0], 4)  # A loaded (the base becomes a PEFT model here)
    long_stream = asyncio.create_task(client.stream(first, LONG_PROMPT, LONG_STREAM_TOKENS))
    await asyncio.sleep(1.5)
    before = await _rss_mib(TRITON_MODEL)
    loading = await client.stream(second, PROMPTS[1], ADAPTER_PROBE_TOKENS)
    after = await _rss_mib(TRITON_MODEL)
    loaded = await client.stream(second, PROMPTS[1], ADAPTER_PROBE_TOKENS)
    still_running = not long_stream.done()
    running = await long_stream
    reporter.step(
        f"  adapters: stub RSS {before:.1f} -> {after:.1f} MiB; B's first TTFT {loading.ttft_s * 1000:.0f} ms, "
        f"loaded {loaded.ttft_s * 1000:.0f} ms; A streamed {running.completion_tokens} tokens"
        f" ({running.finish_reason}), {'still running' if still_running else 'ENDED before'} B's second answer"
    )
    pauses = sorted(running.pauses_s) or [0.0]
    return {
        "memory_mib": after - before,
        "load_ms": (loading.ttft_s - loaded.ttft_s) * 1000,
        "stall_ms": pauses[-1] * 1000,
        "median_pause_ms": statistics.median(pauses) * 1000,
    }


async def _platform(context: BenchContext, sizes: Sizes, adapters_dir: Path) -> dict[str, Any]:
    """Triton + Kafka + the gateway process; every gateway measurement."""
    import tritonclient.grpc as grpcclient

    from bench.framework import _ProgressAdapter
    from llmops_events.v1 import DeploymentPromoted
    from llmops_messaging import EventPublisher
    from llmops_models.kinds import CAUSAL_LM, ServingOptions
    from llmops_models.triton_repository import ModelRepository
    from llmops_stack import TritonComponent, TritonServer, repo_paths

    reporter = context.reporter
    kafka = await context.kafka()
    platform = kafka.model_copy(
        update={
            "triton_http_port": free_port(),
            "triton_grpc_port": free_port(),
            "triton_metrics_port": free_port(),
            "var_dir": context.scratch("generation-var"),
        }
    )
    paths = repo_paths(context.repo_root)
    triton = TritonComponent(TritonServer(platform, paths.triton_venv, paths.triton_backend_dir), ready_timeout=120)
    triton.preflight()
    model_max_tokens = max(sizes.max_tokens, LONG_STREAM_TOKENS)
    gateway = None
    client: Client | None = None
    try:
        reporter.step(f"  {await asyncio.to_thread(triton.ensure_up, _ProgressAdapter(reporter))}")
        reporter.status("writing and loading the causal-LM model on Triton (untimed)")
        interval: dict[str, Any] = {"stream_interval_tokens": sizes.stream_interval_tokens}
        if not sizes.stream_interval_tokens:
            interval = {}  # the platform's default
        reporter.step(
            f"  torch threads: references {sizes.threads}, Triton {sizes.platform_threads or 'the platform default'};"
            f" stream interval {sizes.stream_interval_tokens or 'the platform default'} tokens;"
            f" {sizes.instances} Triton instance(s)"
        )
        model = await asyncio.to_thread(
            CAUSAL_LM.base_triton_model,
            ServingOptions(
                instance_kind="KIND_CPU", instance_count=sizes.instances, torch_threads=sizes.platform_threads
            ),
            adapters_dir=adapters_dir,
            name=TRITON_MODEL,
            max_running=sizes.concurrency,
            max_queued=4 * sizes.concurrency,
            max_new_tokens=model_max_tokens,
            precision="auto",
            **interval,
        )
        repository = ModelRepository(platform.model_repository)
        repository.write_model(TRITON_MODEL, model)
        triton_client = grpcclient.InferenceServerClient(platform.triton_grpc_url)
        await asyncio.to_thread(triton_client.load_model, TRITON_MODEL)
        triton_client.close()
        async with EventPublisher(platform, service="bench") as publisher:
            for name in ADAPTER_MODELS:
                await publisher.publish(
                    DeploymentPromoted(model_name=name, model_version=1, reason="bench", kind="causal_lm")
                )
        port = free_port()
        reporter.status("starting the gateway process (untimed)")
        gateway = await _start_gateway(context, platform, port, model_max_tokens)
        client = Client(f"127.0.0.1:{port}")
        await client.load([BASE_ALIAS], concurrency=2, total=2, max_tokens=8)  # warm-up
        reporter.step(
            f"  GenerateStream on {BASE_ALIAS!r}: {sizes.requests} streams at concurrency 1 and"
            f" {sizes.waves * sizes.concurrency} at {sizes.concurrency}, {sizes.max_tokens} tokens at most,"
            f" {sizes.rounds} rounds"
        )
        c1: list[Load] = []
        c16: list[Load] = []
        for round_number in range(1, sizes.rounds + 1):
            for label, loads, concurrency, total in (
                ("concurrency 1", c1, 1, sizes.requests),
                (f"concurrency {sizes.concurrency}", c16, sizes.concurrency, sizes.waves * sizes.concurrency),
            ):
                reporter.status(f"round {round_number}/{sizes.rounds}: {label}")
                load = await client.load(
                    [BASE_ALIAS], concurrency=concurrency, total=total, max_tokens=sizes.max_tokens
                )
                loads.append(load)
                reporter.step(
                    f"  round {round_number} {label}: {len(load.streams)} streams ({load.errors} errors),"
                    f" {load.tokens} tokens in {load.seconds:.1f} s = {load.tokens_per_s:.1f} tokens/s,"
                    f" TTFT p50 {load.ttft_ms(0.5):.0f} ms"
                )
        reporter.status("adapters: a second one loaded while the first streams")
        adapters = await _adapters(client, reporter)
        reporter.status(f"adapters: {sizes.concurrency} streams over two adapters")
        mixed = await client.load(
            list(ADAPTER_MODELS),
            concurrency=sizes.concurrency,
            total=sizes.waves * sizes.concurrency,
            max_tokens=sizes.max_tokens,
        )
        reporter.step(f"  two adapters: {mixed.tokens} tokens in {mixed.seconds:.1f} s = {mixed.tokens_per_s:.1f}/s")
    finally:
        if client is not None:
            await client.close()
        if gateway is not None:
            await _stop(gateway)
        await asyncio.to_thread(triton.stop)
    return {"c1": combine(c1), "c16": combine(c16), "adapters": adapters, "mixed": mixed}


async def _llama(context: BenchContext) -> dict[str, Any] | str:
    """The llama.cpp script's summary, or why it was not run."""
    python = _llama_python(context)
    if not python.exists():
        return f"SKIP: llama-cpp-python is not installed ({python} missing; run make bench-setup)"
    try:
        return await run_script(
            dataclasses.replace(context, python=str(python)), context.repo_root / LLAMA_SCRIPT, timeout_s=1800
        )
    except Unmeasurable as error:
        if "exited with -" in str(error):  # killed by a signal: llama.cpp itself crashed
            return f"SKIP: llama.cpp crashed ({error})"
        return f"SKIP: {error}"


async def run(context: BenchContext) -> list[BenchResult]:
    from llmops_models.kinds.causal_lm.network import packaged_gguf
    from llmops_serving import triton_name

    sizes = Sizes.from_environment()
    work = context.scratch("generation")
    plan_path = work / "plan.json"
    plan = {
        "base_model": "smollm2",
        "gguf": str(packaged_gguf()),
        "precision": "auto",
        "prompts": PROMPTS,
        "max_tokens": sizes.max_tokens,
        "batch": sizes.concurrency,
        "reference_batches": sizes.waves * sizes.rounds,
        "single_requests": sizes.requests * sizes.rounds,
        "threads": sizes.threads,
        "gemm_seconds": sizes.gemm_seconds,
        "adapters": [triton_name(name, 1) for name in ADAPTER_MODELS],
        "lora": LORA,
    }
    plan_path.write_text(json.dumps(plan))
    with _plan_in_environment(plan_path):
        reference = await run_script(context, context.repo_root / REFERENCE_SCRIPT, timeout_s=2400)
        measured = await _platform(context, sizes, work / "adapters")
        llama = await _llama(context)

    for label, load in (("concurrency 1", "c1"), ("concurrency 16", "c16"), ("two adapters", "mixed")):
        if measured[load].errors:
            failed = measured[load]
            context.reporter.step(
                f"  {label}: {failed.errors} streams failed (left out), the first: {failed.first_error}"
            )
    return result_rows(reference, measured, llama)


def result_rows(reference: dict[str, Any], measured: dict[str, Any], llama: dict[str, Any] | str) -> list[BenchResult]:
    """The rows from the reference script's summary, the platform's measurements (``Load``s
    ``c1``, ``c16``, ``mixed`` and the ``adapters`` figures) and the llama.cpp script's summary
    (or why it did not run)."""
    c1, c16 = measured["c1"], measured["c16"]
    per_token = float(reference["flops_per_token"])
    ceiling = float(reference["gemm_flops_per_second"])
    plain = float(reference["reference_batch_tokens_per_second"])
    adapters = measured["adapters"]
    rows = [
        TTFT_C1_P50.measured(c1.ttft_ms(0.5)),
        TTFT_C1_P99.measured(c1.ttft_ms(0.99)),
        TTFT_C16_P50.measured(c16.ttft_ms(0.5)),
        TTFT_C16_P99.measured(c16.ttft_ms(0.99)),
        C1.measured(c1.tokens_per_s, reference_value=reference["reference_single_tokens_per_second"]),
        C16.measured(c16.tokens_per_s, reference_value=c1.tokens_per_s),
        VS_PLAIN.measured(c16.tokens_per_s, reference_value=plain),
        GEMM.measured(ceiling / 1e9),
        CEILING.measured(c16.tokens_per_s * per_token / ceiling, reference_value=plain * per_token / ceiling),
        ADAPTER_MEMORY.measured(adapters["memory_mib"], reference_value=reference["base_weights_mib"]),
        ADAPTER_LOAD.measured(adapters["load_ms"]),
        ADAPTER_STALL.measured(adapters["stall_ms"], reference_value=adapters["median_pause_ms"]),
        MIXED.measured(measured["mixed"].tokens_per_s, reference_value=c16.tokens_per_s),
    ]
    if isinstance(llama, str):
        rows += [figure.unmeasured(llama) for figure in LLAMA_FIGURES]
    else:
        rows += [
            VS_LLAMA_SINGLE.measured(c1.tokens_per_s, reference_value=llama["llama_single_tokens_per_second"]),
            VS_LLAMA_PARALLEL.measured(c16.tokens_per_s, reference_value=llama["llama_parallel_tokens_per_second"]),
        ]
    return rows


BENCHMARK = Benchmark(
    name=NAME,
    title="streaming generation: gateway GenerateStream vs plain generate() and llama.cpp (SmolLM2-135M)",
    figures=FIGURES,
    run=run,
    time_limit_s=3600,
)
