"""The operator API (``llmops.ops.v1.OpsService``) over gRPC, with health checking and reflection."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from llmops.ops.v1 import ops_pb2, ops_pb2_grpc
from llmops_serving import ModelDeployment

logger = logging.getLogger(__name__)

_CODES = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


class OpsServicer(ops_pb2_grpc.OpsServiceServicer):
    def __init__(self, service: Any) -> None:
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

    async def GetStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        models = self._service.book.models()
        if request.model:
            models = [m for m in models if m.model_name == request.model]
            if not models:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model!r}")
        return ops_pb2.GetStatusResponse(models=[self._status(m) for m in models])

    async def Promote(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        state = await self._call(context, self._service.promote, request)
        return ops_pb2.PromoteResponse(status=self._status(state))

    async def Rollback(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        state = await self._call(context, self._service.rollback, request)
        return ops_pb2.RollbackResponse(status=self._status(state))

    async def _call(self, context: grpc.aio.ServicerContext, action: Any, request: Any) -> ModelDeployment:
        from llmops_deployment.handlers import DeploymentError

        if not request.model:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model is required")
        if request.version < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "version must be positive (or 0 for the default)")
        by = "operator"
        for key, value in context.invocation_metadata() or ():
            if key == "x-operator" and value:
                by = f"operator:{value}"
        try:
            state: ModelDeployment = await action(request.model, request.version, reason=request.reason, by=by)
            return state
        except DeploymentError as error:
            await context.abort(_CODES.get(error.code, grpc.StatusCode.UNKNOWN), str(error))
            raise  # unreachable: abort raises


async def start_ops_server(service: Any, port: int, host: str = "127.0.0.1") -> grpc.aio.Server:
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
