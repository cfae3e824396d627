"""Authentication, validation and routing decisions, without I/O."""

from __future__ import annotations

import hmac

import pytest

from llmops_gateway.domain import auth
from llmops_gateway.domain.auth import ApiKeys
from llmops_gateway.domain.models import PredictItem
from llmops_gateway.domain.routing import group_by_route, resolve_model
from llmops_gateway.domain.validation import Limits, RawItem, validate_batch, validate_item
from llmops_gateway.errors import InvalidRequest, ModelUnavailable, NotAuthenticated
from llmops_gateway.settings import GatewaySettings
from llmops_serving import ModelDeployment, Route

LIMITS = Limits(max_text_chars=10, max_batch_items=3)


def test_keys_are_stored_hashed_and_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = ApiKeys(["secret-one", "secret-two"])
    digests = [key.sha256 for key in keys.keys]
    assert all(isinstance(d, bytes) and len(d) == 32 for d in digests)
    assert b"secret-one" not in b"".join(digests)
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert keys.accepts("secret-one")
    assert len(compared) == 2  # every stored key is compared, even after a match
    assert not keys.accepts("secret-three")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing API key"),
        ("", "missing API key"),
        ("Basic abc", "must be 'Bearer <key>'"),
        ("Bearer wrong", "invalid API key"),
    ],
)
def test_bad_credentials_are_refused(header: str | None, message: str) -> None:
    with pytest.raises(NotAuthenticated, match=message):
        ApiKeys(["k1"]).check(header)


def test_bearer_is_case_insensitive_and_no_keys_refuses_everything() -> None:
    ApiKeys(["k1"]).check("bearer k1")
    ApiKeys(["k1", "k2"]).check("Bearer k2")
    with pytest.raises(NotAuthenticated):
        ApiKeys([]).check("Bearer k1")


def test_settings_split_comma_separated_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_GATEWAY_API_KEYS", " key-a, key-b ,,key-c")
    monkeypatch.setenv("LLMOPS_GATEWAY_PORT", "50999")
    settings = GatewaySettings()
    assert settings.api_keys == ["key-a", "key-b", "key-c"]
    assert settings.port == 50999
    assert "key-a" not in repr(settings)


def test_validation_of_one_item() -> None:
    item = validate_item(RawItem(text="hello"), LIMITS)
    assert item.tenant == "default" and len(item.request_id) == 36 and item.model == ""
    assert validate_item(RawItem(text="hi", request_id="r1", tenant="t"), LIMITS).request_id == "r1"
    with pytest.raises(InvalidRequest, match="text is empty"):
        validate_item(RawItem(text="  "), LIMITS)
    with pytest.raises(InvalidRequest, match="11 characters; the limit is 10"):
        validate_item(RawItem(text="x" * 11), LIMITS)


def test_validation_of_a_batch_names_the_item() -> None:
    assert len(validate_batch([RawItem(text="a")] * 3, LIMITS)) == 3
    with pytest.raises(InvalidRequest, match="4 items in one batch; the limit is 3"):
        validate_batch([RawItem(text="a")] * 4, LIMITS)
    with pytest.raises(InvalidRequest, match="items is empty"):
        validate_batch([], LIMITS)
    with pytest.raises(InvalidRequest, match=r"items\[1\]: text is empty"):
        validate_batch([RawItem(text="a"), RawItem(text="")], LIMITS)


def test_model_resolution() -> None:
    assert resolve_model("m", default_model="d", known=["x"]) == "m"
    assert resolve_model("", default_model="d", known=["x"]) == "d"
    assert resolve_model("", default_model="", known=["x"]) == "x"
    with pytest.raises(ModelUnavailable):
        resolve_model("", default_model="", known=[])
    with pytest.raises(InvalidRequest, match="model is required"):
        resolve_model("", default_model="", known=["x", "y"])


BOOK = {
    "serving": ModelDeployment("serving", champion_version=1),
    "canary": ModelDeployment("canary", champion_version=1, canary_version=2, canary_share=0.5),
    "gone": ModelDeployment("gone"),
}


def _items(*models: str) -> list[PredictItem]:
    return [PredictItem(text="t", model=m, tenant="default", request_id=f"req-{i}") for i, m in enumerate(models)]


def test_items_are_grouped_by_route_in_request_order() -> None:
    items = _items(*(["canary"] * 40 + ["serving"] * 2))
    groups = group_by_route(items, default_model="", known=list(BOOK), lookup=BOOK.get)
    assert set(groups) == {
        Route("canary", 2, "canary"),
        Route("canary", 1, "champion"),
        Route("serving", 1, "champion"),
    }
    assert sorted(i for idx in groups.values() for i in idx) == list(range(42))
    assert all(idx == sorted(idx) for idx in groups.values())
    again = group_by_route(items, default_model="", known=list(BOOK), lookup=BOOK.get)
    assert again == groups  # sticky: the same request ids land on the same versions


def test_unknown_and_unavailable_models() -> None:
    with pytest.raises(InvalidRequest, match=r"unknown model 'nope'"):
        group_by_route(_items("nope"), default_model="", known=list(BOOK), lookup=BOOK.get)
    with pytest.raises(InvalidRequest, match=r"items\[1\]: unknown model 'nope'"):
        group_by_route(_items("serving", "nope"), default_model="", known=list(BOOK), lookup=BOOK.get)
    with pytest.raises(ModelUnavailable, match="no live version"):
        group_by_route(_items("gone"), default_model="", known=list(BOOK), lookup=BOOK.get)


def test_every_call_gets_a_bounded_deadline() -> None:
    from llmops_gateway.domain.admission import Admission

    admission = Admission(max_in_flight=1, default_deadline_s=10, max_deadline_s=30)
    assert admission.budget(None) == 10  # the client set none
    assert admission.budget(2.5) == 2.5
    assert admission.budget(3600) == 30  # cut to the maximum
    with pytest.raises(ValueError, match="default_deadline_s <= max_deadline_s"):
        Admission(max_in_flight=1, default_deadline_s=60, max_deadline_s=30)
    with pytest.raises(ValueError, match="longer than max_deadline_s"):
        GatewaySettings(default_deadline_s=60, max_deadline_s=30)


def test_calls_beyond_the_bound_are_refused_and_slots_are_given_back() -> None:
    from llmops_gateway.domain.admission import Admission
    from llmops_gateway.errors import ErrorCode, Overloaded

    admission = Admission(max_in_flight=2, default_deadline_s=1, max_deadline_s=1)
    with admission.slot(), admission.slot():
        with pytest.raises(Overloaded, match="2 calls in flight") as refused, admission.slot():
            pass
        assert refused.value.code is ErrorCode.RESOURCE_EXHAUSTED
    with pytest.raises(RuntimeError), admission.slot():
        raise RuntimeError("the call failed")
    assert admission.in_flight == 0
