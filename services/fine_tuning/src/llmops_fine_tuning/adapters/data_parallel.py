"""Data parallelism for the training loops: one job across the processes of a ``torchrun`` group.

The loops are plain PyTorch (not a Hugging Face ``Trainer``), so this is the little they need to
run under ``torch.distributed`` with ``DistributedDataParallel`` doing the gradient all-reduce:

* **The same optimisation as one process.** Every rank draws the same global batches (the same
  seeded, length-bucketed order) and computes on its share (every ``world_size``-th example of the
  batch), so the effective batch stays ``batch_size``, the number of steps and the learning-rate
  schedule stay those of one process. Each rank's mean loss is weighted by its share of the batch
  times ``world_size``; DDP averages the gradients over ranks, so the gradient is that of the mean
  loss over the whole batch, even when the shares differ in size. More processes make a step
  faster, not bigger.
* **One clock.** The job's time limit is decided collectively (a rank whose clock ran out stops
  every rank at the same step), so rank 0 can report ``time_limit_exceeded`` instead of hanging
  in an all-reduce its peers left.
* **One writer.** Only rank 0 (``is_main``) evaluates, writes the artifact and reports progress;
  the others only compute.

With one process (no process group) every method is the identity and the loops compute exactly
what they computed before (a weight of 1.0, no collective).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from llmops_fine_tuning.adapters.training_loop import JobClock


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the training group (rank 0 of 1 without ``torchrun``)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> DataParallel:
        """The initialised default process group, or a group of one."""
        if dist.is_available() and dist.is_initialized():
            return cls(rank=dist.get_rank(), world_size=dist.get_world_size())
        return cls()

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that evaluates, writes the artifact and reports."""
        return self.rank == 0

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` when there are several ranks, else itself.

        The frozen base weights are left out of DDP's start-up broadcast and gradient buckets:
        every rank loaded them from the same files, and only the adapters and the head train."""
        if not self.enabled:
            return module
        frozen = [name for name, parameter in module.named_parameters() if not parameter.requires_grad]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen)
        device_ids = None  # CPU: DDP computes where the module is
        if device.type == "cuda":
            device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
        return DistributedDataParallel(module, device_ids=device_ids)

    def share(self, batch: Sequence[int], sizes: Sequence[int] | None = None) -> tuple[list[int], float]:
        """This rank's examples of a global batch and the weight of their mean loss.

        The weight is the share's part of what the loss averages over (examples, or ``sizes[i]``
        terms of example ``i``: a causal LM's answer tokens) times ``world_size``; 1.0 with one
        process. A batch with fewer examples than ranks leaves some rank none: it computes on the
        batch's first example with weight 0, because every rank must take part in the gradient
        all-reduce."""
        own = list(batch[self.rank :: self.world_size])
        if not self.enabled:
            return own, 1.0
        if not own:
            return list(batch[:1]), 0.0
        if sizes is None:
            return own, len(own) / len(batch) * self.world_size
        return own, sum(sizes[i] for i in own) / max(1, sum(sizes[i] for i in batch)) * self.world_size

    def check_time(self, clock: JobClock, where: str, device: torch.device) -> None:
        """The job's time limit, decided by every rank at once (the clocks differ by start-up)."""
        if not self.enabled:
            clock.check(where)
            return
        expired = torch.tensor([1.0 if clock.expired() else 0.0], device=device)
        dist.all_reduce(expired, op=dist.ReduceOp.MAX)
        if float(expired) > 0:
            clock.fail(where)

    def reduce_step(self, loss: float, tokens: int, device: torch.device) -> tuple[float, int]:
        """The step's loss over the whole batch (from each rank's weighted loss) and its tokens."""
        if not self.enabled:
            return loss, tokens
        totals = torch.tensor([loss / self.world_size, float(tokens)], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        return float(totals[0]), int(totals[1])

    def broadcast(self, value: object, device: torch.device | None = None) -> object:
        """``value`` from rank 0 on every rank (pickled; what the other ranks pass is ignored)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=device)
        return box[0]
