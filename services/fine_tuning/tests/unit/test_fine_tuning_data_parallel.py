"""The arithmetic that keeps a data-parallel step the step of one process: each rank's weighted
mean loss, averaged over ranks as DDP averages gradients, is the whole batch's mean loss (the
processes themselves are tested in tests/integration/test_distributed_training.py)."""

from __future__ import annotations

import pytest

from llmops_fine_tuning.adapters.data_parallel import DataParallel

LOSSES = [0.3, 1.7, 0.2, 2.5, 0.9, 1.1, 0.4]  # one loss per example of a batch of 7
TOKENS = [3, 1, 4, 1, 5, 9, 2]  # answer tokens per example (a causal LM averages over tokens)


def averaged_over_ranks(world_size: int, batch: list[int], sizes: list[int] | None = None) -> float:
    total = 0.0
    for rank in range(world_size):
        share, weight = DataParallel(rank=rank, world_size=world_size).share(batch, sizes)
        if sizes is None:
            mean = sum(LOSSES[i] for i in share) / len(share)
        else:
            mean = sum(LOSSES[i] * sizes[i] for i in share) / sum(sizes[i] for i in share)
        total += mean * weight
    return total / world_size


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_weighted_shares_average_to_the_batch_mean(world_size: int) -> None:
    batch = list(range(7))
    assert averaged_over_ranks(world_size, batch) == pytest.approx(sum(LOSSES) / 7)
    token_mean = sum(loss * tokens for loss, tokens in zip(LOSSES, TOKENS, strict=True)) / sum(TOKENS)
    assert averaged_over_ranks(world_size, batch, TOKENS) == pytest.approx(token_mean)


def test_every_example_is_in_exactly_one_share() -> None:
    batch = [5, 2, 6, 0, 3]
    shares = [DataParallel(rank=r, world_size=2).share(batch)[0] for r in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(batch)


def test_a_rank_without_examples_computes_on_one_with_weight_zero() -> None:
    assert DataParallel(rank=1, world_size=2).share([4]) == ([4], 0.0)
    assert DataParallel(rank=0, world_size=2).share([4]) == ([4], 2.0)  # the whole batch: mean x 2 / 2


def test_one_process_is_the_identity() -> None:
    parallel = DataParallel()
    assert not parallel.enabled and parallel.is_main
    assert parallel.share([3, 1, 2]) == ([3, 1, 2], 1.0)
    assert parallel.broadcast("job") == "job"
