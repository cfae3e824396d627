"""Operator calls to the deployment service's gRPC API (``llmops.ops.v1``): status, promote, rollback."""

from __future__ import annotations

import getpass
from typing import Any

import grpc

from llmops.ops.v1 import ops_pb2, ops_pb2_grpc
from llmops_config import PlatformSettings


class OpsUnavailable(Exception):
    """The deployment service did not answer (not running, or still starting)."""


def _call(settings: PlatformSettings, method: str, request: Any, timeout: float) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{settings.ops_port}") as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        metadata = (("x-operator", getpass.getuser()),)
        try:
            return getattr(stub, method)(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise OpsUnavailable(
                    f"the deployment service's ops API at 127.0.0.1:{settings.ops_port} did not answer "
                    f"({error.code().name}); is the stack up (make up)?"
                ) from error
            raise ValueError(f"{error.code().name}: {error.details()}") from error


def models_status(settings: PlatformSettings, model: str = "", timeout: float = 3.0) -> list[Any]:
    return list(_call(settings, "GetStatus", ops_pb2.GetStatusRequest(model=model), timeout).models)


def promote(settings: PlatformSettings, model: str, version: int = 0, reason: str = "") -> Any:
    request = ops_pb2.PromoteRequest(model=model, version=version, reason=reason)
    return _call(settings, "Promote", request, timeout=600).status


def rollback(settings: PlatformSettings, model: str, version: int = 0, reason: str = "") -> Any:
    request = ops_pb2.RollbackRequest(model=model, version=version, reason=reason)
    return _call(settings, "Rollback", request, timeout=600).status


def describe(status: Any) -> str:
    """One line per model, e.g. ``banking-intents: champion v2, canary v3 at 10% (canary); versions 1-3``."""
    champion = f"champion v{status.champion_version}" if status.champion_version else "no champion"
    canary = f", canary v{status.canary_version} at {status.canary_traffic_share:.0%}" if status.canary_version else ""
    versions = ", ".join(str(v) for v in status.available_versions) or "none"
    return f"{status.model_name}: {champion}{canary} ({status.state}); versions with artifacts: {versions}"
