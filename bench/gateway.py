"""The gateway against direct Triton gRPC, and Triton's dynamic batching against none (issue 6).

Method:

1. A real MiniLM classifier (``all-MiniLM-L6-v2`` + LoRA) is trained briefly with the platform's
   trainer on a small BANKING77 subset (a few labelled generator texts when BANKING77 is absent):
   only speed is measured, so quality does not matter.
2. It is written into the model repository of a private tritonserver twice: with dynamic batching
   (the platform's default, as ``<model>__v1``, which the gateway routes to) and without it
   (``<model>-unbatched``), one CPU instance each, and both are loaded.
3. A ``deployment.promoted`` event on this run's private broker makes version 1 the champion, and
   the gateway runs as its own process (``python -m llmops_gateway``), as in production, but in
   plaintext (``LLMOPS_TLS_INSECURE=true``): direct Triton gRPC is plaintext too, and TLS on one
   side only would measure record encryption rather than the gateway.
4. One load generator drives every measurement over gRPC: ``ghz`` when installed (``make setup``
   puts it in ``build/go/bin``) unless ``LLMOPS_BENCH_GATEWAY_CLIENT=asyncio``, else an asyncio
   gRPC client; it cycles over BANKING77 test texts.
   Latency: concurrency 1, ``LLMOPS_BENCH_GATEWAY_REQUESTS`` requests in all (default 300; after a
   warm-up), latencies pooled over the rounds. Throughput: concurrency 32 for
   ``LLMOPS_BENCH_GATEWAY_SECONDS`` seconds in all (default 40) per path.
   The measurements run in ``LLMOPS_BENCH_GATEWAY_ROUNDS`` rounds (default 5), each round going
   through every path in turn, so a neighbour's load on a shared machine hits every path alike.
   Direct Triton calls ``ModelInfer`` with the same texts as the gateway's ``Predict``.
5. Each round is a run of the side-by-side comparison at concurrency 32 (issue 21): the rows give
   the min, median and max over the runs of the gateway/direct throughput ratio (target: median
   >= 0.9) and of the gateway's p50 against the same run's direct p50 (target: median run
   <= 1.1x direct + 1 ms), since one run on a noisy machine proves little. The gateway's CPU per
   request is its process's CPU time (``/proc``) over the concurrency-32 runs divided by the calls
   served: what the gateway takes from the cores Triton needs, whatever the machine's speed.

Everything shares the machine's cores (Triton's model instances, the gateway, the load generator),
as a single-node deployment does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.framework import REPO_ROOT, BenchContext, Benchmark, free_port
from bench.results import BenchResult, Figure, Target
from llmops_config.kafka import kafka_environment

NAME = "gateway"
REQUESTS_ENV = "LLMOPS_BENCH_GATEWAY_REQUESTS"
SECONDS_ENV = "LLMOPS_BENCH_GATEWAY_SECONDS"
ROUNDS_ENV = "LLMOPS_BENCH_GATEWAY_ROUNDS"
CLIENT_ENV = "LLMOPS_BENCH_GATEWAY_CLIENT"
MODEL = "bench-gateway"
API_KEY = "bench-key"
THROUGHPUT_CONCURRENCY = 32

# The targets of issue 21: throughput >= 0.9x direct Triton at concurrency 32 and p50 <= 1.1x
# direct + 1 ms. Every round measures both paths back to back (a "run"); the rows give the min,
# median and max over the runs of the paired comparison, and the median carries the target.
THROUGHPUT_TARGET = 0.9
P50_TARGET = Target(comparison="<=", threshold=1.1, subject="ratio", offset=1.0)
P50 = Figure(
    benchmark=NAME,
    name="gateway p50 latency (concurrency 1)",
    unit="ms",
    reference_name="direct Triton p50",
    target=P50_TARGET,
)
P99_VS_DIRECT = Figure(
    benchmark=NAME,
    name="gateway p99 latency vs direct Triton (concurrency 1)",
    unit="ms",
    reference_name="direct Triton p99",
)
THROUGHPUT = Figure(
    benchmark=NAME,
    name="gateway throughput (concurrency 32, median of runs)",
    unit="requests/s",
    reference_name="direct Triton gRPC, median of runs",
)
RATIO_MIN, RATIO_MEDIAN, RATIO_MAX = (
    Figure(
        benchmark=NAME,
        name=f"gateway/direct throughput ratio (concurrency 32, {which} of runs)",
        unit="x",
        target=Target(comparison=">=", threshold=THROUGHPUT_TARGET) if which == "median" else None,
    )
    for which in ("min", "median", "max")
)
P50_C32_MIN, P50_C32_MEDIAN, P50_C32_MAX = (
    Figure(
        benchmark=NAME,
        name=f"gateway p50 latency (concurrency 32, {which} run)",
        unit="ms",
        reference_name="direct Triton p50, same run",
        target=P50_TARGET if which == "median" else None,
    )
    for which in ("best", "median", "worst")
)
CPU_PER_REQUEST = Figure(
    benchmark=NAME,
    name="gateway CPU per request (concurrency 32)",
    unit="µs",
)
BATCHING = Figure(
    benchmark=NAME,
    name="Triton throughput with dynamic batching (concurrency 32)",
    unit="requests/s",
    reference_name="Triton without dynamic batching",
    target=Target(comparison=">=", threshold=2.0, subject="ratio"),
)
FIGURES = (
    P50,
    P99_VS_DIRECT,
    THROUGHPUT,
    RATIO_MIN,
    RATIO_MEDIAN,
    RATIO_MAX,
    P50_C32_MIN,
    P50_C32_MEDIAN,
    P50_C32_MAX,
    CPU_PER_REQUEST,
    BATCHING,
)


@dataclass(frozen=True, slots=True)
class Load:
    """What one load run (or several, combined) measured."""

    count: int
    errors: int
    seconds: float
    latencies_ms: tuple[float, ...]
    """Of the successful calls, sorted."""

    @property
    def rps(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, share: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        return self.latencies_ms[min(len(self.latencies_ms) - 1, int(len(self.latencies_ms) * share))]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99_ms(self) -> float:
        return self.percentile(0.99)


def combine(loads: Sequence[Load]) -> Load:
    """Rounds of the same measurement as one: calls and seconds add up, latencies are pooled."""
    return Load(
        count=sum(load.count for load in loads),
        errors=sum(load.errors for load in loads),
        seconds=sum(load.seconds for load in loads),
        latencies_ms=tuple(sorted(x for load in loads for x in load.latencies_ms)),
    )


# --- the model -------------------------------------------------------------------------------


def _frame(context: BenchContext) -> tuple[Any, list[str], str]:
    """A small training frame (8 labels x 12 texts) and the texts the load generator sends."""
    import csv

    import pandas as pd

    from bench.ingestion import load_texts

    rows, described = load_texts(context)
    by_label: dict[str, list[str]] = {}
    for text, label in rows:
        by_label.setdefault(label, []).append(text)
    labels = sorted(by_label)[:8]
    train = [
        {"text": f"{text} ({i})", "label": label, "split": "train" if i < 10 else "validation"}
        for label in labels
        for i, text in enumerate((by_label[label] * 12)[:12])
    ]
    test_path = context.shared_data / "banking77" / "test.csv"
    if test_path.exists():
        with test_path.open(newline="", encoding="utf-8") as handle:
            texts = [row["text"] for row in csv.DictReader(handle) if row.get("text")][:256]
    else:
        texts = [text for text, _ in rows][:256]
    return pd.DataFrame(train), texts, described


async def _train_and_deploy(context: BenchContext, platform: Any, status: Callable[[str], None]) -> str:
    """Train, write the two serving configurations, load both; returns the artifact folder."""
    import tritonclient.grpc as grpcclient

    from llmops_cli.training import train_on_frame
    from llmops_events.v1.training import Hyperparameters
    from llmops_models import model_path
    from llmops_models.kinds import ServingOptions
    from llmops_models.triton_repository import ModelRepository
    from llmops_serving import triton_name
    from llmops_storage import ArtifactStore

    frame, _, described = _frame(context)
    status(f"training a MiniLM classifier on {len(frame)} rows of {described} (untimed)")
    store = ArtifactStore(platform.resolved_artifact_store_uri)
    fast = Hyperparameters(epochs=1, batch_size=16, max_length=64, lora_rank=4, target_modules=["query", "value"])
    completed = await train_on_frame(
        store, frame, model_name=MODEL, hyperparameters=fast, work_dir=context.scratch("gateway-training")
    )
    folder = context.scratch("gateway-artifact") / "model"
    store.download_folder(model_path(MODEL, completed.model_version), folder)
    repository = ModelRepository(platform.model_repository)
    batched = repository.write(MODEL, 1, folder, ServingOptions(dynamic_batching=True), name=triton_name(MODEL, 1))
    unbatched = repository.write(MODEL, 1, folder, ServingOptions(dynamic_batching=False), name=f"{MODEL}-unbatched")
    client = grpcclient.InferenceServerClient(platform.triton_grpc_url)
    for name in (batched, unbatched):
        status(f"loading {name} on Triton (untimed)")
        await asyncio.to_thread(client.load_model, name)
    client.close()
    return str(folder)


# --- the load generators ---------------------------------------------------------------------


def _protoset(file_descriptor: Any, path: Path) -> Path:
    """A FileDescriptorSet of ``file_descriptor`` and its imports (ghz needs no reflection then)."""
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(descriptor: Any) -> None:
        if descriptor.name in seen:
            return
        seen.add(descriptor.name)
        for dependency in descriptor.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor.CopyToProto(proto)
        files.file.append(proto)

    add(file_descriptor)
    path.write_bytes(files.SerializeToString())
    return path


def _triton_request_json(model: str, text: str) -> dict[str, Any]:
    return {
        "model_name": model,
        "inputs": [
            {
                "name": "TEXT",
                "datatype": "BYTES",
                "shape": [1, 1],
                "contents": {"bytes_contents": [base64.b64encode(text.encode()).decode()]},
            }
        ],
        "outputs": [{"name": "LABEL"}, {"name": "CONFIDENCE"}, {"name": "SCORES"}],
    }


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint under load: where, which method, what to send."""

    address: str
    method: str
    """Fully-qualified, e.g. ``inference.GRPCInferenceService/ModelInfer``."""
    messages: list[dict[str, Any]]
    metadata: dict[str, str]
    protoset: Path


def _ghz() -> str | None:
    if os.environ.get(CLIENT_ENV, "ghz") == "asyncio":
        return None
    found = shutil.which("ghz") or str(REPO_ROOT / "build" / "go" / "bin" / "ghz")
    return found if Path(found).is_file() else None


async def _run_ghz(ghz: str, target: Endpoint, *, concurrency: int, total: int | None, seconds: float | None) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as data:
        json.dump(target.messages, data)
    args = [
        ghz,
        "--insecure",
        f"--protoset={target.protoset}",
        f"--call={target.method}",
        f"--data-file={data.name}",
        f"--concurrency={concurrency}",
        "--format=json",
        "--timeout=30s",
        "--duration-stop=ignore",  # calls still in flight when the time is up are neither counted nor errors
        f"--cpus={os.cpu_count() or 2}",
    ]
    if target.metadata:
        args.append(f"--metadata={json.dumps(target.metadata)}")
    args += [f"--duration={seconds:.0f}s"] if seconds else [f"--total={total}"]
    process = await asyncio.create_subprocess_exec(
        *args, target.address, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    os.unlink(data.name)
    if process.returncode not in (0, 1) or not out.strip():  # ghz exits 1 when some calls failed
        raise RuntimeError(f"ghz failed ({process.returncode}): {err.decode()[-500:]}")
    report = json.loads(out)
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    ok = int(codes.get("OK", 0))
    if ok == 0:
        raise RuntimeError(f"no call succeeded: {codes} {report.get('errorDistribution')}")
    latencies = sorted(d["latency"] / 1e6 for d in report.get("details") or [] if d.get("status") == "OK")
    return Load(
        count=ok, errors=int(report.get("count", 0)) - ok, seconds=report["total"] / 1e9, latencies_ms=tuple(latencies)
    )


async def _run_asyncio(
    call: Callable[[int], Any], *, concurrency: int, total: int | None, seconds: float | None
) -> Load:
    """The fallback load generator: ``concurrency`` workers calling ``call(i)`` back to back."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    stop_at = time.perf_counter() + seconds if seconds else None

    async def worker() -> None:
        nonlocal errors
        while True:
            i = next(counter)
            if (total is not None and i >= total) or (stop_at is not None and time.perf_counter() >= stop_at):
                return
            started = time.perf_counter()
            try:
                await call(i)
                latencies.append(time.perf_counter() - started)
            except Exception:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if not latencies:
        raise RuntimeError("no call succeeded")
    return Load(
        count=len(latencies), errors=errors, seconds=elapsed, latencies_ms=tuple(sorted(x * 1000 for x in latencies))
    )


class LoadGenerator:
    """ghz when installed (an outside client), else an asyncio gRPC client."""

    def __init__(self, work: Path, texts: Sequence[str], *, triton_address: str, gateway_address: str) -> None:
        from tritonclient.grpc import service_pb2

        from llmops.inference.v1 import inference_pb2

        self.ghz = _ghz()
        self.texts = list(texts)
        self.triton_address = triton_address
        self.gateway_address = gateway_address
        self._triton_protoset = _protoset(service_pb2.DESCRIPTOR, work / "triton.protoset")
        self._gateway_protoset = _protoset(inference_pb2.DESCRIPTOR, work / "gateway.protoset")
        self._channels: list[Any] = []

    @property
    def name(self) -> str:
        return "ghz" if self.ghz else "asyncio gRPC client"

    def triton(self, model: str) -> Endpoint:
        return Endpoint(
            self.triton_address,
            "inference.GRPCInferenceService/ModelInfer",
            [_triton_request_json(model, t) for t in self.texts],
            {},
            self._triton_protoset,
        )

    def gateway(self) -> Endpoint:
        return Endpoint(
            self.gateway_address,
            "llmops.inference.v1.InferenceService/Predict",
            [{"text": t, "model": MODEL} for t in self.texts],
            {"authorization": f"Bearer {API_KEY}"},
            self._gateway_protoset,
        )

    async def run(
        self, target: Endpoint, *, concurrency: int, total: int | None = None, seconds: float | None = None
    ) -> Load:
        if self.ghz:
            return await _run_ghz(self.ghz, target, concurrency=concurrency, total=total, seconds=seconds)
        return await _run_asyncio(self._caller(target), concurrency=concurrency, total=total, seconds=seconds)

    def _caller(self, target: Endpoint) -> Callable[[int], Any]:
        import grpc
        from google.protobuf import json_format
        from tritonclient.grpc import service_pb2

        from llmops.inference.v1 import inference_pb2

        channel = grpc.aio.insecure_channel(target.address)
        self._channels.append(channel)
        if target.method.endswith("ModelInfer"):
            request_type: Any = service_pb2.ModelInferRequest
            response_type: Any = service_pb2.ModelInferResponse
        else:
            request_type, response_type = inference_pb2.PredictRequest, inference_pb2.PredictResponse
        method = channel.unary_unary(
            "/" + target.method,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        requests = [json_format.ParseDict(m, request_type()) for m in target.messages]
        metadata = tuple(target.metadata.items())

        async def call(i: int) -> Any:
            return await method(requests[i % len(requests)], metadata=metadata, timeout=30)

        return call

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


# --- the gateway process ---------------------------------------------------------------------


async def _start_gateway(context: BenchContext, platform: Any, port: int) -> asyncio.subprocess.Process:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    env = {
        **os.environ,
        **kafka_environment(platform),
        "LLMOPS_TRITON_HOST": platform.triton_host,
        "LLMOPS_TRITON_GRPC_PORT": str(platform.triton_grpc_port),
        "LLMOPS_VAR_DIR": str(platform.var_dir),
        "LLMOPS_LOG_LEVEL": "WARNING",
        "LLMOPS_GATEWAY_PORT": str(port),
        "LLMOPS_GATEWAY_HOST": "127.0.0.1",
        "LLMOPS_GATEWAY_METRICS_PORT": str(free_port()),
        "LLMOPS_GATEWAY_API_KEYS": API_KEY,
        "LLMOPS_TLS_INSECURE": "true",  # plaintext on purpose: see the method, step 3
    }
    log = (context.scratch("gateway-log") / "gateway.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        context.python, "-m", "llmops_gateway", env=env, stdout=log, stderr=log, cwd=str(context.repo_root)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 180
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the gateway exited with {process.returncode} (log {log.name})")
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return process
            if time.monotonic() > deadline:
                process.terminate()
                raise RuntimeError(f"the gateway did not become healthy within 180 s (log {log.name})")
            await asyncio.sleep(0.5)


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()


# --- the benchmark ---------------------------------------------------------------------------


async def run(context: BenchContext) -> list[BenchResult]:
    from bench.framework import _ProgressAdapter
    from llmops_events.v1 import DeploymentPromoted
    from llmops_messaging import EventPublisher
    from llmops_serving import triton_name
    from llmops_stack import TritonComponent, TritonServer, repo_paths

    reporter = context.reporter
    requests = int(os.environ.get(REQUESTS_ENV, "300"))
    seconds = float(os.environ.get(SECONDS_ENV, "40"))
    rounds = max(1, int(os.environ.get(ROUNDS_ENV, "5")))
    kafka = await context.kafka()
    platform = kafka.model_copy(
        update={
            "triton_http_port": free_port(),
            "triton_grpc_port": free_port(),
            "triton_metrics_port": free_port(),
            "var_dir": context.scratch("gateway-var"),
        }
    )
    paths = repo_paths(context.repo_root)
    triton = TritonComponent(TritonServer(platform, paths.triton_venv, paths.triton_backend_dir), ready_timeout=120)
    triton.preflight()
    gateway: asyncio.subprocess.Process | None = None
    generator: LoadGenerator | None = None
    try:
        reporter.step(f"  {await asyncio.to_thread(triton.ensure_up, _ProgressAdapter(reporter))}")
        await _train_and_deploy(context, platform, reporter.status)
        async with EventPublisher(platform, service="bench") as publisher:
            await publisher.publish(DeploymentPromoted(model_name=MODEL, model_version=1, reason="bench"))
        port = free_port()
        reporter.status("starting the gateway process (untimed; plaintext, as direct Triton gRPC is)")
        gateway = await _start_gateway(context, platform, port)
        _, texts, _ = _frame(context)
        generator = LoadGenerator(
            context.scratch(f"gateway-load-{uuid.uuid4().hex[:6]}"),
            texts,
            triton_address=platform.triton_grpc_url,
            gateway_address=f"127.0.0.1:{port}",
        )
        reporter.step(
            f"  load generator: {generator.name}; {requests} requests at concurrency 1, {seconds:.0f} s at 32"
        )
        direct, through, unbatched = (
            generator.triton(triton_name(MODEL, 1)),
            generator.gateway(),
            generator.triton(f"{MODEL}-unbatched"),
        )
        for target in (direct, through, unbatched):  # warm-up: first calls load lazily, fill caches
            await generator.run(target, concurrency=4, total=32)

        # Rounds alternate the paths, so load from elsewhere on a shared machine hits both alike.
        plan = (
            ("direct c1", direct, 1),
            ("gateway c1", through, 1),
            ("direct c32", direct, THROUGHPUT_CONCURRENCY),
            ("gateway c32", through, THROUGHPUT_CONCURRENCY),
            ("unbatched c32", unbatched, THROUGHPUT_CONCURRENCY),
        )
        rounds_of: dict[str, list[Load]] = {label: [] for label, _, _ in plan}
        gateway_cpu_s = 0.0
        for round_number in range(1, rounds + 1):
            for label, target, concurrency in plan:
                reporter.status(f"round {round_number}/{rounds}: measuring {label}")
                if concurrency == 1:
                    load = await generator.run(target, concurrency=1, total=max(1, requests // rounds))
                else:
                    cpu_before = process_cpu_s(gateway.pid)
                    load = await generator.run(target, concurrency=concurrency, seconds=seconds / rounds)
                    if target is through:
                        gateway_cpu_s += process_cpu_s(gateway.pid) - cpu_before
                rounds_of[label].append(load)
                reporter.step(
                    f"  round {round_number} {label}: {load.count} ok, {load.errors} errors in {load.seconds:.1f} s: "
                    f"{load.rps:.1f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms"
                )
        for label, load in {label: combine(loads) for label, loads in rounds_of.items()}.items():
            reporter.step(
                f"  all rounds {label}: {load.count} ok, {load.errors} errors, {load.rps:.1f} req/s, "
                f"p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms"
            )
    finally:
        if generator is not None:
            await generator.close()
        if gateway is not None:
            await _stop_process(gateway)
        await asyncio.to_thread(triton.stop)

    return results(rounds_of, gateway_cpu_s=gateway_cpu_s)


def results(rounds_of: dict[str, list[Load]], *, gateway_cpu_s: float) -> list[BenchResult]:
    """The rows from every round's loads: pooled at concurrency 1, paired run by run at 32."""
    measured = {label: combine(loads) for label, loads in rounds_of.items()}
    d1, g1 = measured["direct c1"], measured["gateway c1"]
    runs = list(zip(rounds_of["direct c32"], rounds_of["gateway c32"], strict=True))
    ratios = sorted(g.rps / d.rps for d, g in runs if d.rps > 0)
    # A run's p50 margin: how far the gateway is from its target against the same run's direct p50.
    by_margin = sorted(runs, key=lambda run: run[1].p50_ms - (1.1 * run[0].p50_ms + 1.0))
    median_run = by_margin[(len(by_margin) - 1) // 2]
    gateway_calls = sum(g.count for _, g in runs)
    rows = [
        P50.measured(g1.p50_ms, reference_value=d1.p50_ms),
        P99_VS_DIRECT.measured(g1.p99_ms, reference_value=d1.p99_ms),
        THROUGHPUT.measured(
            statistics.median(g.rps for _, g in runs), reference_value=statistics.median(d.rps for d, _ in runs)
        ),
    ]
    if ratios:
        rows += [
            RATIO_MIN.measured(ratios[0]),
            RATIO_MEDIAN.measured(statistics.median(ratios)),
            RATIO_MAX.measured(ratios[-1]),
        ]
    else:
        rows += [f.unmeasured("direct Triton served nothing") for f in (RATIO_MIN, RATIO_MEDIAN, RATIO_MAX)]
    rows += [
        P50_C32_MIN.measured(by_margin[0][1].p50_ms, reference_value=by_margin[0][0].p50_ms),
        P50_C32_MEDIAN.measured(median_run[1].p50_ms, reference_value=median_run[0].p50_ms),
        P50_C32_MAX.measured(by_margin[-1][1].p50_ms, reference_value=by_margin[-1][0].p50_ms),
        CPU_PER_REQUEST.measured(gateway_cpu_s * 1e6 / gateway_calls)
        if gateway_calls
        else CPU_PER_REQUEST.unmeasured("the gateway served nothing"),
        BATCHING.measured(measured["direct c32"].rps, reference_value=measured["unbatched c32"].rps),
    ]
    return rows


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BENCHMARK = Benchmark(
    name=NAME,
    title="gateway vs direct Triton gRPC; Triton dynamic batching vs none (MiniLM classifier)",
    figures=FIGURES,
    run=run,
    time_limit_s=1500,
)
