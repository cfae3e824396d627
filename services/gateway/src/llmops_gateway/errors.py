"""The gateway's one error hierarchy. Codes are transport-independent; ``adapters.grpc_api`` maps
them to gRPC status codes in one place."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    INTERNAL = "INTERNAL"


class GatewayError(Exception):
    """A request the gateway cannot answer; ``message`` is shown to the caller."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GatewayError):
    code = ErrorCode.INVALID_ARGUMENT


class WrongModelKind(GatewayError):
    """The model exists but serves another kind of call (``Generate`` on a classifier, ``Predict``
    on a causal LM): the request is fine, the system is not in the state it needs."""

    code = ErrorCode.FAILED_PRECONDITION


class NotAuthenticated(GatewayError):
    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(GatewayError):
    """A known key asked for a tenant or scope it was not granted."""

    code = ErrorCode.PERMISSION_DENIED


class Refused(GatewayError):
    """A guardrail refused the request. The message starts with ``refused:<reason code>``, so a
    client can branch on the code (FAILED_PRECONDITION: the request is well-formed, the policy
    does not allow it)."""

    code = ErrorCode.FAILED_PRECONDITION

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(f"refused:{reason_code}: {message}")
        self.reason_code = reason_code


class ModelUnavailable(GatewayError):
    """The model is known but nothing of it is live (or Triton cannot serve it now)."""

    code = ErrorCode.UNAVAILABLE


class DeadlineExceeded(GatewayError):
    code = ErrorCode.DEADLINE_EXCEEDED


class Overloaded(GatewayError):
    """The gateway already serves as many calls as it may; the caller should retry with backoff."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class RateLimited(Overloaded):
    """An API key is over its rate limit."""


class TooManyConcurrent(Overloaded):
    """An API key already has as many calls in flight as it may."""


class BackendError(GatewayError):
    """Triton failed for a reason the caller cannot fix."""

    code = ErrorCode.INTERNAL


class ModelNotLoaded(ModelUnavailable):
    """Triton does not have this version (e.g. just unloaded after a promotion): worth re-routing."""
