"""The deployment service's one error hierarchy. Codes are transport-independent;
``adapters.ops_server`` maps them to gRPC status codes in one place."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class FailureReason(StrEnum):
    """Why a version could not go live; the first word of its ``deployment.rolled_back`` reason."""

    ARTIFACT_MISSING = "artifact_missing"
    ARTIFACT_CORRUPT = "artifact_corrupt"
    LOAD_FAILED = "load_failed"
    LOAD_TIMEOUT = "load_timeout"
    SMOKE_TEST_FAILED = "smoke_test_failed"
    KIND_NOT_SERVABLE = "kind_not_servable"
    """The artifact's model kind is unknown here, or has no Triton model yet."""
    BASE_MODEL_MISMATCH = "base_model_mismatch"
    """A LoRA adapter trained on other base weights than the Triton model serves (its
    ``training_config.json`` names another ``base_model_weights_hash``): applied to them, it
    would answer nonsense."""
    RESUME_EXHAUSTED = "resume_exhausted"
    """Left ``deploying`` (a crash, an I/O error, Triton unreachable) and the reconciler's
    ``resume_max_attempts`` resumes failed too."""


class DeploymentError(Exception):
    """A request the deployment service cannot carry out; ``message`` is shown to the caller."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(DeploymentError):
    code = ErrorCode.INVALID_ARGUMENT


class NotFound(DeploymentError):
    """An unknown model, or a version without artifacts in the store."""

    code = ErrorCode.NOT_FOUND


class FailedPrecondition(DeploymentError):
    """The model's state does not allow the request (no canary to promote, nothing to roll back to)."""

    code = ErrorCode.FAILED_PRECONDITION


class IllegalTransition(FailedPrecondition):
    """The lifecycle refuses a command in a version's current state (``domain.lifecycle``)."""

    def __init__(self, message: str, *, state: str, command: str) -> None:
        super().__init__(message)
        self.state = state
        self.command = command


class GoLiveFailed(DeploymentError):
    """A version could not be written, loaded, warmed up or smoke-tested. Retrying cannot help
    (FAILED_PRECONDITION) unless Triton failed to load it (UNAVAILABLE: it may be down or busy)."""

    def __init__(self, reason: FailureReason, detail: str, *, version: int | None = None) -> None:
        subject = f"version {version}" if version is not None else "the version"
        super().__init__(f"{subject} could not go live: {reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.code = (
            ErrorCode.UNAVAILABLE
            if reason in (FailureReason.LOAD_FAILED, FailureReason.LOAD_TIMEOUT)
            else ErrorCode.FAILED_PRECONDITION
        )

    @property
    def summary(self) -> str:
        """The reason as ``deployment.rolled_back`` states it, e.g. ``smoke_test_failed: …``."""
        return f"{self.reason}: {self.detail}"


class TritonUnavailable(DeploymentError):
    """Triton could not be reached (nothing listens, the connection broke, no answer in time):
    no verdict on the version, which is retried (and stays ``deploying``), never rolled back for it."""

    code = ErrorCode.UNAVAILABLE


def first_line(error: BaseException) -> str:
    """The first line of an error's message, at most 500 characters (for events and logs)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]
