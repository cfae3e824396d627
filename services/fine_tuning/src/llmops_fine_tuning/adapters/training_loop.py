"""The parts of a LoRA training loop every trainer shares: determinism, length-bucketed batches in
a seeded order, linear warm-up then linear decay, progress reports, and the job's time limit."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence

import torch

from llmops_fine_tuning.domain.ports import TrainingProgress
from llmops_fine_tuning.errors import TrainingRejected


def flush_subnormal_floats() -> None:
    """Compute subnormal floats as zero in this process's threads.

    x86 CPUs compute subnormal floats (below 1.2e-38) some 20x slower than normal ones (measured
    here: 48-69 ms against 2.2 ms for one elementwise op on 4M floats). As the loss falls, gradients
    and AdamW's second moments reach them, and a training run slowed down as it learned. The flag
    is per thread and torch's worker threads copy it when they start, so a process that trains
    calls this first, before the thread pool exists (the service's and the benchmark's entry
    points). It is process state: a library import must not set it (it breaks code that relies
    on IEEE subnormals, as Hypothesis does in the tests)."""
    torch.set_flush_denormal(True)


def make_deterministic(seed: int) -> None:
    """One seed for initialisation and dropout, deterministic kernels (cuBLAS included).

    Deterministic mode also fills every new tensor with NaN by default, to expose kernels that read
    memory they never wrote; ours do not, and the fill writes every activation once more on each
    step, so it is off."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    torch.manual_seed(seed)


def bucketed_batches(
    lengths: Sequence[int], *, batch_size: int, bucket_batches: int, generator: torch.Generator
) -> list[list[int]]:
    """Batches of example indices with similar lengths, in a random (seeded) order."""
    permutation = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, len(permutation), window):
        chunk = sorted(permutation[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[offset : offset + batch_size] for offset in range(0, len(chunk), batch_size))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def endless_batches(lengths: Sequence[int], *, batch_size: int, bucket_batches: int, seed: int) -> Iterator[list[int]]:
    """``bucketed_batches`` epoch after epoch, from one seeded generator (the loop stops at its step count)."""
    data_order = torch.Generator().manual_seed(seed)
    while True:
        yield from bucketed_batches(lengths, batch_size=batch_size, bucket_batches=bucket_batches, generator=data_order)


def warmup_then_linear_decay(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class JobClock:
    """The time a job has run, against its limit."""

    def __init__(self, limit_s: float | None) -> None:
        self.started = time.monotonic()
        self.limit_s = limit_s

    def expired(self) -> bool:
        return self.limit_s is not None and time.monotonic() - self.started > self.limit_s

    def check(self, where: str) -> None:
        if self.expired():
            self.fail(where)

    def fail(self, where: str) -> None:
        """Stop the job for its time limit (also when another rank's clock ran out first)."""
        raise TrainingRejected(
            "time_limit_exceeded",
            f"stopped {where} after {time.monotonic() - self.started:.1f} s; the time limit is {self.limit_s or 0:g} s "
            "(LLMOPS_FINE_TUNING_MAX_JOB_SECONDS)",
        )


class ProgressMeter:
    """Counts what the steps have seen and says when to report: at the first and the last step,
    and every ``interval_s`` between (the loss is the mean over the steps since the last report)."""

    def __init__(self, *, total_steps: int, steps_per_epoch: int, interval_s: float) -> None:
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.seen = self.seen_tokens = 0
        self._last_report = -math.inf
        self._window_loss, self._window_steps = 0.0, 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def record(self, step: int, *, loss: float, examples: int, tokens: int = 0) -> TrainingProgress | None:
        """Count one optimizer step; the progress to report now, or None."""
        self.seen += examples
        self.seen_tokens += tokens
        self._window_loss += loss
        self._window_steps += 1
        now = time.monotonic()
        if not (step == 1 or step == self.total_steps or now - self._last_report >= self.interval_s):
            return None
        elapsed = now - self.started
        progress = TrainingProgress(
            step=step,
            total_steps=self.total_steps,
            epoch=step / self.steps_per_epoch,
            loss=self._window_loss / self._window_steps,
            examples_per_second=self.seen / elapsed if elapsed > 0 else 0.0,
            eta_seconds=elapsed / step * (self.total_steps - step),
            tokens_per_second=self.seen_tokens / elapsed if self.seen_tokens and elapsed > 0 else None,
        )
        self._last_report, self._window_loss, self._window_steps = now, 0.0, 0
        return progress
