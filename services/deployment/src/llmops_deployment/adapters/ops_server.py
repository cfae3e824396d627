"""The operator API (``llmops.ops.v1.OpsService``) over gRPC, with health checking and reflection;
the service's errors are mapped to gRPC status codes here, in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from llmops.ops.v1 import ops_pb2, ops_pb2_grpc
from llmops_deployment.errors import DeploymentError, ErrorCode, InvalidRequest, NotFound
from llmops_models import shown
from llmops_serving import ModelDeployment

logger = logging.getLogger(__name__)

STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

Response = TypeVar("Response")


def grpc_status(error: DeploymentError) -> grpc.StatusCode:
    """The one mapping from the service's error codes to gRPC status codes."""
    return STATUS.get(error.code, grpc.StatusCode.INTERNAL)


class Operations(Protocol):
    """What the ops API needs of the deployment service."""

    def models(self) -> list[ModelDeployment]: ...
    def available_versions(self, model_name: str) -> list[int]: ...
    async def promote(self, model_name: str, version: int = 0, *, reason: str = "", by: str = "operator") -> Any: ...
    async def rollback(self, model_name: str, version: int = 0, *, reason: str = "", by: str = "operator") -> Any: ...


class OpsServicer(ops_pb2_grpc.OpsServiceServicer):
    def __init__(self, service: Operations) -> None:
        self._service = service

    def _status(self, state: ModelDeployment) -> ops_pb2.ModelStatus:
        return ops_pb2.ModelStatus(
            model_name=state.model_name,
            champion_version=state.champion_version or 0,
            canary_version=state.canary_version or 0,
            canary_traffic_share=state.canary_share if state.canary_version is not None else 0.0,
            available_versions=self._service.available_versions(state.model_name),
            state=state.phase,
        )

    async def GetStatus(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def serve() -> Any:
            models = self._service.models()
            if request.model:
                models = [m for m in models if m.model_name == request.model]
                if not models:
                    raise NotFound(f"unknown model {shown(request.model)}")
            return ops_pb2.GetStatusResponse(models=[self._status(m) for m in models])

        return await _answer(context, serve)

    async def Promote(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def serve() -> Any:
            state = await self._service.promote(*_target(request), reason=request.reason, by=_operator(context))
            return ops_pb2.PromoteResponse(status=self._status(state))

        return await _answer(context, serve)

    async def Rollback(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def serve() -> Any:
            state = await self._service.rollback(*_target(request), reason=request.reason, by=_operator(context))
            return ops_pb2.RollbackResponse(status=self._status(state))

        return await _answer(context, serve)


async def _answer(context: grpc.aio.ServicerContext[Any, Any], serve: Callable[[], Awaitable[Response]]) -> Response:
    """Every RPC's errors, mapped in one place: the service's to their codes, anything else to INTERNAL."""
    try:
        return await serve()
    except DeploymentError as error:
        await context.abort(grpc_status(error), error.message)
        raise AssertionError("unreachable: abort raises") from error
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception as error:
        logger.exception("unexpected error in the ops API")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")
        raise AssertionError("unreachable: abort raises") from error


def _target(request: Any) -> tuple[str, int]:
    if not request.model:
        raise InvalidRequest("model is required")
    if request.version < 0:
        raise InvalidRequest("version must be positive (or 0 for the default)")
    return request.model, request.version


def _operator(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-operator" and value:
            return f"operator:{value if isinstance(value, str) else value.decode()}"
    return "operator"


async def start_ops_server(service: Operations, port: int, host: str = "127.0.0.1") -> grpc.aio.Server:
    server = grpc.aio.server()
    ops_pb2_grpc.add_OpsServiceServicer_to_server(OpsServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_name = ops_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name
    reflection.enable_server_reflection((service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    logger.info("ops API listening", extra={"port": port})
    return server
