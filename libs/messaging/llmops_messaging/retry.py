"""How long a consumer keeps retrying a message whose handler fails before it dead-letters it.

Exponential backoff with full jitter: the wait before attempt ``n + 1`` is drawn uniformly from
``[(1 - jitter) * cap, cap]`` with ``cap = min(max_delay_s, base_delay_s * 2**(n - 1))``, so
replicas that failed together (an outage) do not come back together. A message is dead-lettered
once it has failed ``max_attempts`` times or ``budget_s`` after its first failure, whichever
comes first; the last wait is cut to what is left of the budget, so a message is tried once more
at its very end. With the defaults, an outage shorter than 120 s is ridden out: the attempts
(0-0.5 s, 0-1 s, 0-2 s, … then 0-30 s apart, ~15 s on average) would take ~210 s on average to
reach 20, so the budget, not the count, ends the retries (a test checks the arithmetic).

An attempt is also bounded in time (``handler_timeout_s``), and attempts are counted in the
consumer's SQLite state before the handler runs, so a message whose handler hangs, or kills its
process, is dead-lettered after ``max_attempts`` too (see ``EventConsumer``).
"""

from __future__ import annotations

import random

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_MAX_EXPONENT = 62  # 2**62 * any sane base is far past any max_delay_s; larger would overflow a float


class RetryPolicy(BaseSettings):
    """The retry policy of every consumer, read from ``LLMOPS_RETRY_*`` (a service may pass its own)."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_RETRY_", extra="ignore", use_attribute_docstrings=True)

    max_attempts: int = Field(default=20, ge=1)
    """Most attempts at a message (the first included) before it is dead-lettered as ``handler_failed``."""

    base_delay_s: float = Field(default=0.5, ge=0)
    """Cap of the first wait; each further wait's cap doubles."""

    max_delay_s: float = Field(default=30.0, ge=0, le=120)
    """Largest cap of one wait. The consumer waits while it holds the batch (see ``EventConsumer``),
    so one wait must stay well below Kafka's ``max.poll.interval.ms`` (aiokafka: 300 s)."""

    jitter: float = Field(default=1.0, ge=0, le=1)
    """Share of each wait that is random: 1 is full jitter (uniform in ``[0, cap]``), 0 none."""

    budget_s: float = Field(default=120.0, ge=0)
    """Time after a message's first failure until it is dead-lettered, attempts left or not."""

    handler_timeout_s: float = Field(default=600.0, gt=0)
    """Longest one attempt may run: a handler still running then is cancelled and the attempt counts
    as failed (a hang is retried and dead-lettered like any failure). A consumer may set its own
    (``EventConsumer(handler_timeout_s=...)``); one whose subscriber raises ``max_poll_interval_ms``
    for long jobs gets what that allows (see ``EventConsumer.fit_poll_interval``)."""

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered wait after the ``attempt``-th failure (1 for the first)."""
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** min(max(attempt - 1, 0), _MAX_EXPONENT))
        return cap * (1 - self.jitter * (rng or random).random())

    def delay(self, attempt: int, elapsed_s: float, rng: random.Random | None = None) -> float:
        """The wait after the ``attempt``-th failure, ``elapsed_s`` after the first one: the
        backoff, cut to what is left of the budget."""
        return max(0.0, min(self.backoff(attempt, rng), self.budget_s - elapsed_s))

    def exhausted(self, attempts: int, elapsed_s: float) -> bool:
        """Whether a message that failed ``attempts`` times, the first ``elapsed_s`` ago, is dead-lettered."""
        return attempts >= self.max_attempts or elapsed_s >= self.budget_s
