"""The operator API (``llmops.ops.v1.OpsService``) over gRPC, with health checking and reflection;
the service's errors are mapped to gRPC status codes here, in one place.

Operators are authenticated by mutual TLS: the client certificate, verified against the CA by the
TLS handshake, names the operator (``CN=operator:<name>``) and its role (``OU=viewer``,
``operator`` or ``admin``); a header a caller types (the old ``x-operator``) proves nothing and is
ignored. ``GetStatus`` needs ``viewer``, ``Promote``/``Rollback`` ``operator``, and promoting a
version the evaluation gate rejected needs ``admin`` and an ``override_reason``, audited as an
``override``. With ``LLMOPS_TLS_INSECURE=true`` there is no identity: status is served, changes
are refused (UNAUTHENTICATED)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from llmops.ops.v1 import ops_pb2, ops_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.tls import PeerCertificate, add_server_port, peer_certificate
from llmops_deployment.errors import DeploymentError, ErrorCode, FailedPrecondition, InvalidRequest, NotFound
from llmops_models import NAME_PATTERN, evaluation_path, is_valid_name, shown
from llmops_serving import ModelDeployment
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)

STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

Response = TypeVar("Response")
OPERATOR_PREFIX = "operator:"
MAX_REASON_CHARS = 1024


class Role(IntEnum):
    """What an operator may do; each role may do what the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3


@dataclass(frozen=True, slots=True)
class Operator:
    """A verified operator: the principal (``operator:<name>``) and its role."""

    principal: str
    role: Role


class Denied(Exception):
    """The call is refused before it reaches the service: ``status`` and a readable ``message``."""

    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def operator_of(certificate: PeerCertificate | None) -> Operator | None:
    """The operator a verified client certificate names; None without a certificate. A certificate
    that is not an operator's (no ``operator:`` common name, no known role) is refused."""
    if certificate is None:
        return None
    name = certificate.common_name
    if not name.startswith(OPERATOR_PREFIX) or len(name) == len(OPERATOR_PREFIX):
        raise Denied(
            grpc.StatusCode.PERMISSION_DENIED, f"the client certificate's CN {name!r} is not 'operator:<name>'"
        )
    roles = [Role[unit.upper()] for unit in certificate.organizational_units if unit.upper() in Role.__members__]
    if not roles:
        raise Denied(
            grpc.StatusCode.PERMISSION_DENIED,
            f"the client certificate of {name} names no role (OU=viewer, operator or admin)",
        )
    return Operator(principal=name, role=max(roles))


class AuditSink(Protocol):
    """Where overrides are recorded (``llmops_messaging.EventPublisher``, through ``publish_audit``)."""

    async def publish(self, data: Any, *, correlationid: str | None = ..., id: str | None = ...) -> Any: ...


def grpc_status(error: DeploymentError) -> grpc.StatusCode:
    """The one mapping from the service's error codes to gRPC status codes."""
    return STATUS.get(error.code, grpc.StatusCode.INTERNAL)


class Operations(Protocol):
    """What the ops API needs of the deployment service."""

    def models(self) -> list[ModelDeployment]: ...
    def available_versions(self, model_name: str) -> list[int]: ...
    async def promote(self, model_name: str, version: int = 0, *, reason: str = "", by: str = "operator") -> Any: ...
    async def rollback(self, model_name: str, version: int = 0, *, reason: str = "", by: str = "operator") -> Any: ...


class GateRecord(Protocol):
    """Why the evaluation gate rejected a version (None: it did not, or never judged it)."""

    def rejection(self, model_name: str, version: int) -> str | None: ...


class GateDecisions:
    """The gate's last decision on a version, as the evaluation service recorded it beside the
    model (``evaluations/<model>/<version>/decision.json`` in the artifact store; a re-evaluation
    replaces it). A record that cannot be read counts as a rejection: the override path, audited,
    stays open, a silent promotion does not."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def rejection(self, model_name: str, version: int) -> str | None:
        try:
            path = f"{evaluation_path(model_name, version)}/decision.json"
        except ValueError:
            return None  # not a valid name: the service refuses the request itself
        try:
            if not self._store.exists(path):
                return None
            record = self._store.read_json(path)
        except (OSError, ValueError) as error:
            return f"its evaluation record could not be read ({type(error).__name__})"
        if not isinstance(record, dict) or record.get("decision") != "rejected":
            return None
        reasons = [
            f"{reason.get('rule', '?')}: {reason.get('message', '')}"
            for reason in record.get("reasons") or []
            if isinstance(reason, dict)
        ]
        return ("; ".join(reasons) or "rejected")[:MAX_REASON_CHARS]


class OpsServicer(ops_pb2_grpc.OpsServiceServicer):
    """``authenticated=False`` (plaintext, ``LLMOPS_TLS_INSECURE``): no caller has an identity, so
    only ``GetStatus`` is served."""

    def __init__(
        self,
        service: Operations,
        *,
        audit: AuditSink | None = None,
        gates: GateRecord | None = None,
        authenticated: bool = True,
    ) -> None:
        self._service = service
        self._audit = audit
        self._gates = gates
        self._authenticated = authenticated

    async def _operator(self, context: grpc.aio.ServicerContext[Any, Any], needs: Role, method: str) -> Operator | None:
        """The verified caller, if it holds ``needs``; raises ``Denied`` otherwise. None only for
        ``GetStatus`` on a plaintext server (nobody can be verified there)."""
        operator = operator_of(peer_certificate(context.auth_context())) if self._authenticated else None
        if operator is None:
            if needs <= Role.VIEWER and not self._authenticated:
                return None
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                "no operator identity: call the ops API over mutual TLS with an operator client certificate"
                " (LLMOPS_TLS_CLIENT_CERT_FILE; `make up` makes one under var/tls)",
            )
        if operator.role < needs:
            message = f"{operator.principal} has the role {operator.role.name.lower()}; this needs {needs.name.lower()}"
            await self._record_denial(operator, message, method)
            raise Denied(grpc.StatusCode.PERMISSION_DENIED, message)
        return operator

    async def _record_denial(self, operator: Operator, message: str, method: str) -> None:
        """A verified operator refused for its role: on the audit topic as ``key_denied`` (a
        credential used beyond its grant). Best effort: the refusal stands if the broker fails."""
        if self._audit is None:
            return
        from llmops_events.v1 import AuditAction, publish_audit

        try:
            await publish_audit(
                self._audit,
                AuditAction.KEY_DENIED,
                operator.principal,
                reason=message,
                details={"denial": "role", "method": method, "role": operator.role.name.lower()},
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("denied operator call not audited: %s", type(error).__name__)

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
            await self._operator(context, Role.VIEWER, "GetStatus")
            models = self._service.models()
            if request.model:
                models = [m for m in models if m.model_name == request.model]
                if not models:
                    raise NotFound(f"unknown model {shown(request.model)}")
            return ops_pb2.GetStatusResponse(models=[self._status(m) for m in models])

        return await _answer(context, serve)

    async def Promote(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def serve() -> Any:
            override = _bounded(request.override_reason, "override_reason").strip()
            operator = await self._operator(context, Role.ADMIN if override else Role.OPERATOR, "Promote")
            assert operator is not None
            model, version = _target(request)
            rejection = await self._gate_rejection(model, version)
            if rejection is not None and not override:
                raise FailedPrecondition(
                    f"{model} v{version} was rejected by the evaluation gate ({rejection}); promote it only as an"
                    " admin with an override reason (llmops promote --override-reason '...')"
                )
            reason = override or _bounded(request.reason, "reason")
            if override:
                # Recorded before the change: an override that then fails is still an attempt worth auditing.
                await self._record_override(operator, model, version, override, rejection)
            state = await self._service.promote(model, version, reason=reason, by=operator.principal)
            return ops_pb2.PromoteResponse(status=self._status(state))

        return await _answer(context, serve)

    async def Rollback(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def serve() -> Any:
            operator = await self._operator(context, Role.OPERATOR, "Rollback")
            assert operator is not None
            reason = _bounded(request.reason, "reason")
            state = await self._service.rollback(*_target(request), reason=reason, by=operator.principal)
            return ops_pb2.RollbackResponse(status=self._status(state))

        return await _answer(context, serve)

    async def _gate_rejection(self, model: str, version: int) -> str | None:
        # Version 0 is the canary, which the gate approved (only approved versions are deployed).
        if self._gates is None or version == 0:
            return None
        return await asyncio.to_thread(self._gates.rejection, model, version)

    async def _record_override(
        self, operator: Operator, model: str, version: int, reason: str, rejection: str | None
    ) -> None:
        if self._audit is None:
            logger.warning("override not audited: the ops API has no audit publisher", extra={"model": model})
            return
        from llmops_events.v1 import AuditAction, publish_audit

        details = {"gate_rejection": rejection} if rejection else {}
        await publish_audit(
            self._audit,
            AuditAction.OVERRIDE,
            operator.principal,
            model=model,
            version=version or None,
            reason=reason,
            details=details,
        )


async def _answer(context: grpc.aio.ServicerContext[Any, Any], serve: Callable[[], Awaitable[Response]]) -> Response:
    """Every RPC's errors, mapped in one place: the service's to their codes, anything else to INTERNAL."""
    try:
        return await serve()
    except Denied as error:
        await context.abort(error.status, error.message)
        raise AssertionError("unreachable: abort raises") from error
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
    if not is_valid_name(request.model):  # checked here too: an override is audited before the service sees it
        raise InvalidRequest(f"model name {shown(request.model)} must match {NAME_PATTERN.pattern}")
    if request.version < 0:
        raise InvalidRequest("version must be positive (or 0 for the default)")
    return request.model, request.version


def _bounded(value: str, name: str) -> str:
    if len(value) > MAX_REASON_CHARS:
        raise InvalidRequest(f"{name} has {len(value)} characters; the limit is {MAX_REASON_CHARS}")
    return value


async def start_ops_server(
    service: Operations,
    port: int,
    host: str = "127.0.0.1",
    *,
    platform: PlatformSettings | None = None,
    audit: AuditSink | None = None,
) -> grpc.aio.Server:
    """Serve the ops API on ``host:port`` over mutual TLS (files from ``platform.tls``), or in
    plaintext with a warning when ``LLMOPS_TLS_INSECURE`` is set. ``audit`` receives overrides;
    the gate's decisions are read from the platform's artifact store."""
    platform = platform or PlatformSettings()
    server = grpc.aio.server()
    gates = GateDecisions(ArtifactStore(platform.resolved_artifact_store_uri))
    servicer = OpsServicer(service, audit=audit, gates=gates, authenticated=not platform.tls.insecure)
    ops_pb2_grpc.add_OpsServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_name = ops_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name
    reflection.enable_server_reflection((service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    add_server_port(server, f"{host}:{port}", platform, require_client_cert=True, name="the ops API")
    await server.start()
    await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    logger.info("ops API listening", extra={"port": port})
    return server
