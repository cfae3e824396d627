"""Which model and version answer each item: the model (requested or default), then the champion
or canary by the request id's bucket (``llmops_serving.choose_route``). A model serves one kind of
call: a classifier ``Predict``, a causal LM ``Generate``; the other is refused before routing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmops_gateway.domain.models import PredictItem
from llmops_gateway.errors import InvalidRequest, ModelUnavailable, WrongModelKind
from llmops_models import shown
from llmops_serving import ModelDeployment, Route, choose_route

Lookup = Callable[[str], ModelDeployment | None]

CLASSIFIER = "classifier"
CAUSAL_LM = "causal_lm"
CALLS = {CLASSIFIER: "Predict or PredictBatch", CAUSAL_LM: "Generate or GenerateStream"}
"""The calls that serve each model kind."""


def resolve_model(requested: str, *, default_model: str, known: Sequence[str]) -> str:
    """The model an item is for: the requested one, else the configured default, else the only
    model ever deployed."""
    if requested:
        return requested
    if default_model:
        return default_model
    if len(known) == 1:
        return known[0]
    if not known:
        raise ModelUnavailable("no model is deployed yet")
    raise InvalidRequest(f"model is required: {len(known)} models are deployed ({', '.join(known)})")


def route_item(request_id: str, model: str, lookup: Lookup, *, kind: str) -> Route:
    """The route of one request to ``model``, which must be of ``kind``."""
    deployment = lookup(model)
    if deployment is None:
        raise InvalidRequest(f"unknown model {shown(model)}")
    if deployment.kind != kind:
        calls = CALLS.get(deployment.kind, "a call of its kind")
        raise WrongModelKind(f"model {shown(model)} is a {deployment.kind} model: call {calls}")
    route = choose_route(deployment, request_id)
    if route is None:
        raise ModelUnavailable(f"model {shown(model)} has no live version")
    return route


def group_by_route(
    items: Sequence[PredictItem], *, default_model: str, known: Sequence[str], lookup: Lookup
) -> dict[Route, list[int]]:
    """Item indexes per route, in request order within each route (one Triton call per route)."""
    groups: dict[Route, list[int]] = {}
    for index, item in enumerate(items):
        try:
            model = resolve_model(item.model, default_model=default_model, known=known)
            route = route_item(item.request_id, model, lookup, kind=CLASSIFIER)
        except (InvalidRequest, WrongModelKind) as error:
            if len(items) > 1:
                raise type(error)(f"items[{index}]: {error.message}") from error
            raise
        groups.setdefault(route, []).append(index)
    return groups
