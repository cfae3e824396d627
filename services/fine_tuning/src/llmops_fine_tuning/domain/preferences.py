"""Which preference pairs a DPO phase trains on, and how many steps that is (pure)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from llmops_fine_tuning.domain.request import CausalLmTrainerPolicy
from llmops_models.kinds.causal_lm.preferences import PreferencePair


def select_pairs(pairs: Sequence[PreferencePair], *, min_pairs: int, max_pairs: int, seed: int) -> list[PreferencePair]:
    """The training pairs DPO uses, ordered by ``pair_id``: none when there are fewer than
    ``min_pairs`` distinct pairs (a few pairs move an adapter more by noise than by preference), a
    seeded sample of ``max_pairs`` when there are more (a bounded phase), all of them otherwise.
    A ``pair_id`` seen twice (feedback delivered twice) counts once, as first read."""
    distinct: dict[str, PreferencePair] = {}
    for pair in pairs:
        distinct.setdefault(pair.pair_id, pair)
    ordered = sorted(distinct.values(), key=lambda p: p.pair_id)
    if len(ordered) < min_pairs:
        return []
    if len(ordered) > max_pairs:
        ordered = sorted(random.Random(seed).sample(ordered, max_pairs), key=lambda p: p.pair_id)
    return ordered


def dpo_steps(pairs: int, policy: CausalLmTrainerPolicy) -> int:
    """Optimizer steps of a DPO phase over ``pairs`` pairs (0 without pairs)."""
    if pairs <= 0:
        return 0
    return max(1, math.ceil(policy.dpo_epochs * math.ceil(pairs / policy.dpo_batch_size)))
