"""The classifier on Triton against the machine's FLOP ceiling, measured in the same run (issue 21).

Method:

1. A real MiniLM classifier (``all-MiniLM-L6-v2`` + LoRA) is trained briefly with the platform's
   trainer on a small BANKING77 subset (``bench.gateway``'s frame): only speed is measured here. The
   trainer exports it to ONNX and int8 (the artifact's optimized format, named in its manifest).
2. A private tritonserver serves it twice: with the platform's default serving options (the int8
   ONNX export under ONNX Runtime on CPU) and with the PyTorch path (``runtime=torch``, the default
   before issue 21), each with dynamic batching, one CPU instance. ``LLMOPS_BENCH_SERVING_OPTIONS``
   (JSON ``ServingOptions`` fields) tries another configuration of the default path's batcher.
3. Throughput: concurrency 32 for ``LLMOPS_BENCH_SERVING_SECONDS`` seconds per path (default 30),
   in ``LLMOPS_BENCH_SERVING_ROUNDS`` rounds (default 3) alternating the paths, with the gateway
   bench's load generator (ghz when installed) cycling over BANKING77 test texts.
4. The ceiling, in the same run, right after each round: the machine's fp32 matrix-multiply rate R
   (GFLOP/s) on the model's own shapes (one encoder layer's six projections, hidden 384,
   intermediate 1536, M = the average batch Triton formed x the texts' mean token count), with as
   many threads as the Triton instance uses (one per core by default), best of
   ``LLMOPS_BENCH_SERVING_GEMM_REPEATS``; the ceiling is R over the FLOPs of one query at the
   texts' mean token length (MiniLM-L6: 6 layers x (8·T·H² + 4·T·I·H + 4·T²·H), about 0.34 GFLOP at
   16 tokens). The row is Triton's requests/s as a fraction of that ceiling (target ≥ 0.5).

Everything shares the machine's cores (Triton's instance and the load generator), as a single-node
deployment does; the GEMM runs alone, so the ceiling is what the cores can do, not what is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.framework import BenchContext, Benchmark, free_port
from bench.results import BenchResult, Figure, Target

NAME = "serving"
SECONDS_ENV = "LLMOPS_BENCH_SERVING_SECONDS"
ROUNDS_ENV = "LLMOPS_BENCH_SERVING_ROUNDS"
GEMM_REPEATS_ENV = "LLMOPS_BENCH_SERVING_GEMM_REPEATS"
OPTIONS_ENV = "LLMOPS_BENCH_SERVING_OPTIONS"
MODEL = "bench-serving"
CONCURRENCY = 32

HIDDEN = 384
INTERMEDIATE = 1536
LAYERS = 6

CEILING_FRACTION = Figure(
    benchmark=NAME,
    name="Triton throughput as a fraction of the FLOP ceiling (concurrency 32)",
    unit="requests/s",
    reference_name="the FLOP ceiling (GEMM rate / FLOPs per query)",
    target=Target(comparison=">=", threshold=0.5, subject="ratio"),
)
TORCH_FRACTION = Figure(
    benchmark=NAME,
    name="Triton throughput, PyTorch path, as a fraction of the FLOP ceiling (concurrency 32)",
    unit="requests/s",
    reference_name="the FLOP ceiling (GEMM rate / FLOPs per query)",
)
GEMM_RATE = Figure(
    benchmark=NAME,
    name="matrix-multiply rate on MiniLM-L6 shapes (fp32, Triton's threads)",
    unit="GFLOP/s",
)
QUERY_FLOPS = Figure(
    benchmark=NAME,
    name="FLOPs per query (MiniLM-L6 at the texts' mean token count)",
    unit="GFLOP",
)
FIGURES = (CEILING_FRACTION, TORCH_FRACTION, GEMM_RATE, QUERY_FLOPS)


def query_flops(
    tokens: float, *, hidden: int = HIDDEN, intermediate: int = INTERMEDIATE, layers: int = LAYERS
) -> float:
    """Multiply-add FLOPs (2 per multiply-accumulate) of one encoder pass over ``tokens`` tokens:
    per layer the Q, K, V and output projections (4 · 2·T·H²), the feed-forward pair (2 · 2·T·H·I)
    and attention's two TxT products (2 · 2·T²·H). Pooling, softmax and the head are negligible."""
    t = float(tokens)
    per_layer = 8 * t * hidden * hidden + 4 * t * hidden * intermediate + 4 * t * t * hidden
    return layers * per_layer


GEMM_SCRIPT = """
import json, sys, time, torch
threads, rows, hidden, inter, repeats = (int(x) for x in sys.argv[1:6])
torch.set_num_threads(threads)
torch.manual_seed(0)
x = torch.randn(rows, hidden); h = torch.randn(rows, inter)
w_h = torch.randn(hidden, hidden); w_up = torch.randn(hidden, inter); w_down = torch.randn(inter, hidden)
def layer():  # Q, K, V, O projections and the feed-forward pair: one encoder layer's GEMMs
    for _ in range(4):
        torch.mm(x, w_h)
    torch.mm(x, w_up); torch.mm(h, w_down)
flops = 2 * rows * (4 * hidden * hidden + 2 * hidden * inter)
for _ in range(20):
    layer()
best = 0.0
for _ in range(repeats):
    n = 0; started = time.perf_counter()
    while time.perf_counter() - started < 0.5:
        layer(); n += 1
    best = max(best, n * flops / (time.perf_counter() - started) / 1e9)
print(json.dumps({"gflops": best, "threads": torch.get_num_threads()}))
"""


def gemm_rate(python: str, *, threads: int, rows: int, repeats: int) -> float:
    """GFLOP/s of one encoder layer's GEMMs at ``rows`` = batch x tokens, in a fresh process with
    ``threads`` torch threads (the platform's torch: MKL/oneDNN fp32), best of ``repeats`` half-seconds."""
    completed = subprocess.run(
        [python, "-c", GEMM_SCRIPT, str(threads), str(rows), str(HIDDEN), str(INTERMEDIATE), str(repeats)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the GEMM measurement failed: {completed.stderr[-500:]}")
    return float(json.loads(completed.stdout.strip().splitlines()[-1])["gflops"])


@dataclass(frozen=True, slots=True)
class Stats:
    """Triton's counters for one model: requests and batch executions (their ratio: the batch size)."""

    inferences: int
    executions: int

    def since(self, earlier: Stats) -> float:
        done = self.executions - earlier.executions
        return (self.inferences - earlier.inferences) / done if done else 0.0


def _stats(client: Any, name: str) -> Stats:
    found = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
    return Stats(inferences=int(found.get("inference_count", 0)), executions=int(found.get("execution_count", 0)))


def mean_tokens(folder: Path, texts: Sequence[str]) -> float:
    """The mean token count (with [CLS] and [SEP]) of the texts sent, under the model's truncation."""
    from transformers import AutoTokenizer

    config = json.loads((folder / "training_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    lengths = [
        len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=int(config["max_length"]))["input_ids"]
    ]
    return statistics.fmean(lengths)


async def _train(context: BenchContext, platform: Any) -> Path:
    from bench.gateway import _frame
    from llmops_cli.training import train_on_frame
    from llmops_events.v1.training import Hyperparameters
    from llmops_models import model_path
    from llmops_storage import ArtifactStore

    frame, _, described = _frame(context)
    context.reporter.status(f"training a MiniLM classifier on {len(frame)} rows of {described} (untimed)")
    store = ArtifactStore(platform.resolved_artifact_store_uri)
    fast = Hyperparameters(epochs=1, batch_size=16, max_length=64, lora_rank=4, target_modules=["query", "value"])
    completed = await train_on_frame(
        store, frame, model_name=MODEL, hyperparameters=fast, work_dir=context.scratch("serving-training")
    )
    folder = context.scratch("serving-artifact") / "model"
    store.download_folder(model_path(MODEL, completed.model_version), folder)
    return folder


async def run(context: BenchContext) -> list[BenchResult]:
    import tritonclient.grpc as grpcclient

    from bench.framework import _ProgressAdapter
    from bench.gateway import Load, LoadGenerator, _frame, combine
    from llmops_config import PlatformSettings
    from llmops_models.kinds import ServingOptions
    from llmops_models.triton_repository import ModelRepository
    from llmops_stack import TritonComponent, TritonServer, repo_paths

    reporter = context.reporter
    seconds = float(os.environ.get(SECONDS_ENV, "30"))
    rounds = max(1, int(os.environ.get(ROUNDS_ENV, "3")))
    repeats = max(1, int(os.environ.get(GEMM_REPEATS_ENV, "5")))
    platform = PlatformSettings(
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
        var_dir=context.scratch("serving-var"),
        log_format="text",
        log_level="WARNING",
    )
    options = serving_options()
    threads = options.torch_threads or os.cpu_count() or 1
    paths = repo_paths(context.repo_root)
    triton = TritonComponent(TritonServer(platform, paths.triton_venv, paths.triton_backend_dir), ready_timeout=120)
    triton.preflight()
    try:
        reporter.step(f"  {await asyncio.to_thread(triton.ensure_up, _ProgressAdapter(reporter))}")
        folder = await _train(context, platform)
        manifest = json.loads((folder / "manifest.json").read_text())
        optimized = manifest.get("optimized") or {}
        reporter.step(
            f"  optimized format in the manifest: {optimized.get('file')} ({optimized.get('quantization')}); "
            f"serving options {options}"
        )
        repository = ModelRepository(platform.model_repository)
        served = repository.write(MODEL, 1, folder, options, name=f"{MODEL}-default")
        torch_path = repository.write(
            MODEL,
            1,
            folder,
            ServingOptions(runtime="torch", torch_threads=options.torch_threads),
            name=f"{MODEL}-torch",
        )
        client = grpcclient.InferenceServerClient(platform.triton_grpc_url)
        for name in (served, torch_path):
            reporter.status(f"loading {name} on Triton (untimed)")
            await asyncio.to_thread(client.load_model, name)
        runtime = client.get_model_config(served, as_json=True)["config"]["parameters"]["runtime"]["string_value"]
        _, texts, _ = _frame(context)
        tokens = mean_tokens(folder, texts)
        per_query = query_flops(tokens)
        generator = LoadGenerator(
            context.scratch(f"serving-load-{uuid.uuid4().hex[:6]}"),
            texts,
            triton_address=platform.triton_grpc_url,
            gateway_address="127.0.0.1:1",  # unused: only Triton is driven here
        )
        reporter.step(
            f"  load generator: {generator.name}; {seconds:.0f} s at {CONCURRENCY} per path in {rounds} rounds; "
            f"default path runtime={runtime}; texts: {tokens:.1f} tokens on average, "
            f"{per_query / 1e9:.3f} GFLOP per query"
        )
        targets = {"default": generator.triton(served), "torch": generator.triton(torch_path)}
        try:
            for target in targets.values():  # warm-up
                await generator.run(target, concurrency=4, total=32)
            loads: dict[str, list[Any]] = {label: [] for label in targets}
            batches: dict[str, list[float]] = {label: [] for label in targets}
            rates: list[float] = []
            for round_number in range(1, rounds + 1):
                for label, target in targets.items():
                    name = served if label == "default" else torch_path
                    before = await asyncio.to_thread(_stats, client, name)
                    reporter.status(f"round {round_number}/{rounds}: {label} at concurrency {CONCURRENCY}")
                    try:
                        load = await generator.run(target, concurrency=CONCURRENCY, seconds=seconds / rounds)
                    except RuntimeError as error:  # no call finished within the window (a starved CPU)
                        if label == "default":
                            raise
                        reporter.step(f"  round {round_number} {label}: no call finished in the window ({error})")
                        load = Load(count=0, errors=0, seconds=seconds / rounds, latencies_ms=())
                    batch = (await asyncio.to_thread(_stats, client, name)).since(before)
                    loads[label].append(load)
                    batches[label].append(batch)
                    reporter.step(
                        f"  round {round_number} {label}: {load.rps:.1f} req/s, {load.errors} errors, "
                        f"mean batch {batch:.1f}, p50 {load.p50_ms:.1f} ms"
                    )
                rows = max(1, round(statistics.fmean(batches["default"]) * tokens))
                rate = await asyncio.to_thread(gemm_rate, context.python, threads=threads, rows=rows, repeats=repeats)
                rates.append(rate)
                reporter.step(f"  round {round_number} GEMM ({threads} threads, {rows} rows): {rate:.0f} GFLOP/s")
        finally:
            await generator.close()
            client.close()
    finally:
        await asyncio.to_thread(triton.stop)

    rate = statistics.median(rates)
    ceiling = rate * 1e9 / per_query
    default, torch_load = combine(loads["default"]), combine(loads["torch"])
    reporter.step(
        f"  ceiling {ceiling:.0f} queries/s (R {rate:.0f} GFLOP/s); default {default.rps:.1f} req/s "
        f"({default.rps / ceiling:.2f}), PyTorch {torch_load.rps:.1f} req/s ({torch_load.rps / ceiling:.2f})"
    )
    return [
        CEILING_FRACTION.measured(default.rps, reference_value=ceiling),
        TORCH_FRACTION.measured(torch_load.rps, reference_value=ceiling),
        GEMM_RATE.measured(rate),
        QUERY_FLOPS.measured(per_query / 1e9),
    ]


def serving_options() -> Any:
    """The platform's default serving options (what a deployment serves unless configured), or
    those of ``LLMOPS_BENCH_SERVING_OPTIONS`` (a JSON object of ``ServingOptions`` fields, e.g.
    ``{"instance_count": 2, "torch_threads": 1}``) to try another configuration of the batcher."""
    from llmops_models.kinds import ServingOptions

    overrides = json.loads(os.environ.get(OPTIONS_ENV) or "{}")
    if "preferred_batch_sizes" in overrides:
        overrides["preferred_batch_sizes"] = tuple(overrides["preferred_batch_sizes"])
    return ServingOptions(**overrides)


BENCHMARK = Benchmark(
    name=NAME,
    title="the classifier on Triton against the FLOP ceiling (ONNX Runtime int8 vs PyTorch)",
    figures=FIGURES,
    run=run,
    time_limit_s=1500,
)
