"""Which version answers a request: the champion, or the canary for its traffic share.

The choice hashes the request id, so a retried request lands on the same version and a client
that reuses request ids sees consistent answers (sticky routing).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from llmops_serving.state import ModelDeployment

_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Route:
    model_name: str
    version: int
    role: Literal["champion", "canary"]


def request_bucket(request_id: str) -> float:
    """A stable number in [0, 1) for a request id."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % _BUCKETS) / _BUCKETS


def choose_route(deployment: ModelDeployment, request_id: str) -> Route | None:
    """The version to serve ``request_id``; None when nothing of this model is live."""
    canary = deployment.canary_version
    if canary is not None and (
        deployment.champion_version is None or request_bucket(request_id) < deployment.canary_share
    ):
        return Route(deployment.model_name, canary, "canary")
    if deployment.champion_version is not None:
        return Route(deployment.model_name, deployment.champion_version, "champion")
    return None
