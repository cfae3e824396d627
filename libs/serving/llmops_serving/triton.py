"""How a deployed model version is named on Triton (its tensors belong to its kind: ``llmops_models.kinds``).

Each platform version is its own Triton model (``<model>__v<version>``), so loading a canary or
unloading a retired version never reloads the champion that is serving.
"""

from __future__ import annotations

_SEPARATOR = "__v"


def triton_name(model_name: str, version: int) -> str:
    """The Triton model that serves ``version`` of ``model_name``."""
    return f"{model_name}{_SEPARATOR}{version}"


def parse_triton_name(name: str) -> tuple[str, int] | None:
    """``(model_name, version)`` for a name made by :func:`triton_name`, else None."""
    model_name, separator, version = name.rpartition(_SEPARATOR)
    if not separator or not model_name or not version.isdigit():
        return None
    return model_name, int(version)
