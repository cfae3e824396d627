"""Hypothesis strategies of the chaos suite: what may arrive on a topic, and what a gRPC client may send.

The fuzzing found four defects at first, each fixed and kept as its own regression test (the decoder let
``ValueError`` out for integers past Python's 4,300-digit limit and for NUL-led bytes read as
UTF-16/32, and ``RecursionError`` out of the CloudEvents SDK's second parse; the gateway and the
ops API echoed huge model names past gRPC's metadata limit; the ops API answered INTERNAL for names
the artifact layout refuses); then a fifth (the gateway echoed an unknown chat role unbounded). The
strategies below now reach all of those inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import grpc
from hypothesis import strategies as st

from llmops.inference.v1 import inference_pb2
from llmops.ops.v1 import ops_pb2
from llmops_events import ContentMode, Envelope, KafkaRecord, encode
from llmops_events.envelope import REQUIRED_ATTRIBUTES
from llmops_events.v1 import FeedbackSubmitted, RecordSubmitted, TrainingRequested, TrainingStarted
from llmops_models.layout import NAME_PATTERN

JSON_INTEGER_DIGITS = 4_000  # Python builds no longer int from a string; a regression test sends longer as bytes
ECHOED_NAME_CHARS = 20_000

# ---------------------------------------------------------------------------------------------
# What may arrive on a topic
# ---------------------------------------------------------------------------------------------

EVENT_TYPES = (
    "llmops.record.submitted.v1",
    "llmops.feedback.submitted.v1",
    "llmops.training.requested.v1",
    "llmops.training.started.v1",
    "llmops.deployment.promoted.v1",
)

# Strings a reader chokes on more often than random text does.
TRICKY_STRINGS = (
    "",
    " ",
    "\x00",
    "1.0",
    "0.3",
    "2.0",
    " 1.0",
    "\u202e",
    "\ufeff",
    "😀" * 3,
    "null",
    "2026-11-28T10:00:00Z",
    "2026-13-45T99:99:99Z",
    "not a time",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-zz-zz-zz",
    "application/json",
    "application/cloudevents+json",
    "text/plain",
    "llmops.record.teleported.v1",
    "QUJD",  # base64
    "!!not base64!!",
    *EVENT_TYPES,
)

tricky_text = st.one_of(st.sampled_from(TRICKY_STRINGS), st.text(max_size=40))


def _integers_of_up_to(digits: int) -> st.SearchStrategy[int]:
    """Integers from small ones to ``digits`` digits long, both signs."""
    huge = st.integers(min_value=1, max_value=digits).map(lambda n: int("9" * n))
    return st.one_of(st.integers(), huge, huge.map(lambda value: -value))


def raw_values(max_size: int) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, those ``json.loads`` takes for UTF-16/32 included."""
    return st.binary(max_size=max_size)


json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    _integers_of_up_to(JSON_INTEGER_DIGITS),
    st.floats(allow_nan=True, allow_infinity=True),
    tricky_text,
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.one_of(tricky_text, st.sampled_from(REQUIRED_ATTRIBUTES)), children, max_size=6),
    ),
    max_leaves=40,
)


def _nested(depth: int, opener: str, leaf: bytes) -> bytes:
    if opener == "[":
        return b"[" * depth + leaf + b"]" * depth
    return b'{"a":' * depth + leaf + b"}" * depth


NESTING_DEPTHS = st.integers(1, 60_000)
"""Below, near and far beyond the parser's recursion limit (1,000; about 3,000 while hypothesis runs)."""

deeply_nested_json: st.SearchStrategy[bytes] = st.builds(
    _nested,
    depth=NESTING_DEPTHS,
    opener=st.sampled_from(["[", "{"]),
    leaf=st.sampled_from([b"1", b'"x"', b"null", b"[]", b"{}"]),
)
"""JSON nested far beyond the parser's recursion limit, or deep but parseable."""


def _dumps(value: Any, ensure_ascii: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8")


shallow_json_documents: st.SearchStrategy[bytes] = st.builds(_dumps, json_values, st.booleans())
"""Arbitrary JSON documents as bytes (any top-level value, a few levels deep)."""

json_documents: st.SearchStrategy[bytes] = st.one_of(shallow_json_documents, deeply_nested_json)
"""Arbitrary JSON documents as bytes, deep nesting included (see ``NESTING_DEPTHS``)."""


def _valid_envelopes() -> list[Envelope[Any]]:
    return [
        Envelope.wrap(
            RecordSubmitted(
                tenant="acme", source="crm", text="where is my card", record_id="r-1", label="card_arrival"
            ),
            source="/fuzz",
            subject="r-1",
            correlationid="c-1",
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        Envelope.wrap(FeedbackSubmitted(request_id="req-1", true_label="lost_card"), source="/fuzz"),
        Envelope.wrap(TrainingRequested(model_name="banking"), source="/fuzz"),
        Envelope.wrap(
            TrainingStarted(model_name="m", request_id="r", model_version=1, dataset_id="d", worker="w"), source="/fuzz"
        ),
    ]


VALID_ENVELOPES = _valid_envelopes()
VALID_STRUCTURED = [json.loads(encode(e, ContentMode.STRUCTURED).value) for e in VALID_ENVELOPES]
VALID_BINARY = [encode(e, ContentMode.BINARY) for e in VALID_ENVELOPES]

ATTRIBUTE_NAMES = (
    *REQUIRED_ATTRIBUTES,
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "traceparent",
    "correlationid",
    "partitionkey",
)
attribute_names = st.one_of(st.sampled_from(ATTRIBUTE_NAMES), st.text(max_size=12))
attribute_values = st.one_of(tricky_text, json_values)


@st.composite
def mutated_data(draw: st.DrawFn, data: Any) -> Any:
    """An event's ``data`` with fields dropped, replaced or added, or replaced whole."""
    if not isinstance(data, dict) or draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    data = dict(data)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "set", "add"]))
        if action == "drop" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        elif action == "set" and data:
            data[draw(st.sampled_from(sorted(data)))] = draw(attribute_values)
        else:
            data[draw(st.text(max_size=12))] = draw(attribute_values)
    return data


@st.composite
def near_valid_structured(draw: st.DrawFn) -> KafkaRecord:
    """A valid structured-mode CloudEvent with some attributes or its data mutated."""
    document = dict(draw(st.sampled_from(VALID_STRUCTURED)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["drop", "set", "data"]))
        if action == "drop":
            document.pop(draw(st.sampled_from(ATTRIBUTE_NAMES)), None)
        elif action == "set":
            document[draw(attribute_names)] = draw(attribute_values)
        else:
            document["data"] = draw(mutated_data(document.get("data")))
    try:
        value = _dumps(document, draw(st.booleans()))
    except ValueError:  # a value json cannot write (never for these strategies, but cheap to be sure)
        value = b"{}"
    content_type = draw(
        st.one_of(st.none(), st.sampled_from([b"application/cloudevents+json", b"application/json"]), st.binary())
    )
    headers = () if content_type is None else (("content-type", content_type),)
    return KafkaRecord(key=draw(st.one_of(st.none(), st.binary(max_size=20))), value=value, headers=headers)


header_names = st.one_of(
    st.sampled_from([f"ce_{name}" for name in ATTRIBUTE_NAMES] + ["content-type", "Content-Type", "CE_TYPE"]),
    st.text(max_size=16).map(lambda name: "ce_" + name),
    st.text(max_size=16),
)
header_values = st.one_of(st.binary(max_size=64), tricky_text.map(lambda text: text.encode("utf-8")))
arbitrary_headers = st.lists(st.tuples(header_names, header_values), max_size=8).map(tuple)


@st.composite
def near_valid_binary(draw: st.DrawFn) -> KafkaRecord:
    """A valid binary-mode CloudEvent (``ce_*`` headers) with headers, value or key mutated."""
    record = draw(st.sampled_from(VALID_BINARY))
    headers = list(record.headers)
    value = record.value
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["drop", "replace", "duplicate", "add", "value", "data"]))
        if action == "drop" and headers:
            headers.pop(draw(st.integers(0, len(headers) - 1)))
        elif action == "replace" and headers:
            index = draw(st.integers(0, len(headers) - 1))
            headers[index] = (headers[index][0], draw(header_values))
        elif action == "duplicate" and headers:
            headers.append(headers[draw(st.integers(0, len(headers) - 1))])
        elif action == "add":
            headers.append((draw(header_names), draw(header_values)))
        elif action == "value":
            value = draw(st.one_of(raw_values(200), json_documents))
        else:
            value = _dumps(draw(mutated_data(json.loads(record.value))), draw(st.booleans()))
    key = draw(st.one_of(st.just(record.key), st.none(), st.binary(max_size=20)))
    return KafkaRecord(key=key, value=value, headers=tuple(headers))


def with_value(record: KafkaRecord, value: bytes, content_type: bytes | None) -> KafkaRecord:
    """``record`` with another value and its ``content-type`` header replaced (None: left out)."""
    headers = [header for header in record.headers if header[0] != "content-type"]
    if content_type is not None:
        headers.append(("content-type", content_type))
    return KafkaRecord(key=record.key, value=value, headers=tuple(headers))


@st.composite
def deep_binary_events(draw: st.DrawFn) -> KafkaRecord:
    """A valid binary-mode event whose value is nested far beyond the parser's limit or well within
    it, under a JSON content type (or none: JSON is the default)."""
    content_type = draw(
        st.sampled_from([None, b"application/json", b"application/json; charset=utf-8", b"application/x+json"])
    )
    return with_value(draw(st.sampled_from(VALID_BINARY)), draw(deeply_nested_json), content_type)


kafka_records: st.SearchStrategy[KafkaRecord] = st.one_of(
    st.builds(KafkaRecord, key=st.one_of(st.none(), st.binary(max_size=20)), value=raw_values(400)),
    st.builds(KafkaRecord, key=st.none(), value=json_documents),
    near_valid_structured(),
    near_valid_binary(),
    deep_binary_events(),
    st.builds(
        KafkaRecord,
        key=st.one_of(st.none(), st.binary(max_size=20)),
        value=st.one_of(raw_values(200), json_documents),
        headers=arbitrary_headers,
    ),
)
"""Everything a topic may carry: raw bytes, any JSON, near-valid events in both content modes and
arbitrary headers."""

JSON_PARSER_VALUE_ERRORS = (
    b"\x00\x01\x00\x00\x00",  # read as UTF-16-BE: truncated
    b"\x00\x00\x00\x00\x00",  # read as UTF-32-BE: truncated
    b"a\x00b",  # read as UTF-16-LE: truncated
    b"9" * 5_000,  # an integer past Python's 4,300 digits
)
"""Values whose parsing raises a ``ValueError`` other than ``JSONDecodeError`` (the known defect)."""

any_kafka_records: st.SearchStrategy[KafkaRecord] = st.one_of(
    kafka_records,
    st.builds(KafkaRecord, key=st.none(), value=st.binary(max_size=400)),
    st.builds(KafkaRecord, key=st.none(), value=st.sampled_from(JSON_PARSER_VALUE_ERRORS)),
    st.builds(
        with_value,
        st.sampled_from(VALID_BINARY),
        st.integers(500, 10_000).map(lambda depth: b"[" * depth + b"1" + b"]" * depth),
        st.sampled_from([b"application/json", b"", b"text/json"]),
    ),
    st.builds(KafkaRecord, key=st.none(), value=deeply_nested_json, headers=arbitrary_headers),
)
"""``kafka_records`` and the inputs of the known decoder defects: what the consumer must survive."""

# ---------------------------------------------------------------------------------------------
# What a gRPC client may send
# ---------------------------------------------------------------------------------------------

CONTROL_AND_FORMAT = st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn"])


def proto_strings(*, max_size: int, sizes: tuple[int, ...] = ()) -> st.SearchStrategy[str]:
    """Strings a protobuf ``string`` can carry (valid UTF-8): unicode, control characters, the
    tricky ones, and long runs of the given ``sizes`` (limits and their neighbours)."""
    options = [
        st.text(max_size=min(max_size, 200)),
        st.text(alphabet=CONTROL_AND_FORMAT, max_size=min(max_size, 100)),
        st.sampled_from([s for s in TRICKY_STRINGS if len(s) <= max_size] + ["..", "../../etc/passwd", "a/b", "."]),
        st.builds(lambda char, n: char * n, st.sampled_from(["x", "é", "😀", "\x00", " "]), st.integers(0, max_size)),
    ]
    if sizes:
        options.append(st.builds(lambda char, n: char * n, st.sampled_from(["x", "é", " "]), st.sampled_from(sizes)))
    return st.one_of(*options)


def model_names(known: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Requested model names: empty (the default), known ones, names that look like model names,
    and anything else, up to ``ECHOED_NAME_CHARS`` long."""
    return st.one_of(
        st.just(""),
        st.sampled_from(known),
        st.sampled_from(known),  # twice: more calls get past routing
        st.from_regex(NAME_PATTERN, fullmatch=True),
        proto_strings(max_size=ECHOED_NAME_CHARS),
    )


ascii_metadata = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
"""What gRPC lets a client put in a text metadata value (printable ASCII)."""


def authorizations(key: str) -> st.SearchStrategy[str | None]:
    """``authorization`` metadata: the right key (mostly, so most calls reach validation), variants
    of it, wrong ones and none."""
    right = st.just(f"Bearer {key}")
    return st.one_of(
        right,
        right,
        right,
        right,
        st.sampled_from([None, "", "Bearer", "Bearer ", key, f"bearer {key}", f"BEARER   {key}  ", f"Basic {key}"]),
        ascii_metadata,
        ascii_metadata.map(lambda text: "Bearer " + text),
    )


deadlines = st.one_of(st.none(), st.none(), st.floats(min_value=0.001, max_value=20.0))
"""A client deadline in seconds (None: the client sets none)."""

tiny_deadlines = st.one_of(deadlines, st.sampled_from([1e-4, 1e-3, 2e-3, 5e-3]), st.floats(1e-4, 0.05))
"""Client deadlines with many that expire before, during or just after a short generation."""


def predict_requests(
    known: tuple[str, ...], *, text_limit: int, id_chars: int, huge_text: int = 0
) -> st.SearchStrategy[inference_pb2.PredictRequest]:
    """``PredictRequest``s around the gateway's text limit; ``huge_text`` adds texts of that many
    characters (beyond gRPC's 4 MiB message limit, say)."""
    sizes = (text_limit - 1, text_limit, text_limit + 1) + ((huge_text,) if huge_text else ())
    return st.builds(
        inference_pb2.PredictRequest,
        text=proto_strings(max_size=text_limit + 10, sizes=sizes),
        model=model_names(known),
        tenant=proto_strings(max_size=id_chars),
        request_id=proto_strings(max_size=id_chars),
    )


def batch_requests(
    known: tuple[str, ...], *, text_limit: int, id_chars: int, batch_limit: int
) -> st.SearchStrategy[inference_pb2.PredictBatchRequest]:
    """``PredictBatchRequest``s: a few arbitrary items, or many plain ones around the batch limit."""
    item = predict_requests(known, text_limit=text_limit, id_chars=id_chars)
    return st.one_of(
        st.builds(inference_pb2.PredictBatchRequest, items=st.lists(item, max_size=batch_limit + 2)),
        # many items, mostly fine: the batch limit decides
        st.builds(
            lambda n, text: inference_pb2.PredictBatchRequest(
                items=[inference_pb2.PredictRequest(text=text) for _ in range(n)]
            ),
            st.sampled_from([batch_limit, batch_limit + 1, 1_000, 20_000]),
            st.sampled_from(["i lost my card", "\x00", " "]),
        ),
    )


int64s = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 2, -1, 2**31, 2**63 - 1, -(2**63)]),
)


def ops_requests(
    known: tuple[str, ...],
    names: st.SearchStrategy[str] | None = None,
    methods: tuple[str, ...] = ("GetStatus", "Promote", "Rollback"),
) -> st.SearchStrategy[tuple[str, Any]]:
    """(method, request) of ``llmops.ops.v1.OpsService``. ``names`` are the models Promote and
    Rollback get (default: the empty name, ``known`` and names the artifact layout accepts)."""
    path_safe = st.from_regex(NAME_PATTERN, fullmatch=True).filter(lambda name: ".." not in name)
    acting_on = names if names is not None else st.one_of(st.just(""), st.sampled_from(known), path_safe)
    reasons = proto_strings(max_size=5_000)
    calls = {
        "GetStatus": st.tuples(st.just("GetStatus"), st.builds(ops_pb2.GetStatusRequest, model=model_names(known))),
        "Promote": st.tuples(
            st.just("Promote"), st.builds(ops_pb2.PromoteRequest, model=acting_on, version=int64s, reason=reasons)
        ),
        "Rollback": st.tuples(
            st.just("Rollback"), st.builds(ops_pb2.RollbackRequest, model=acting_on, version=int64s, reason=reasons)
        ),
    }
    return st.one_of(*(calls[method] for method in methods))


ROLE_NAMES = ("system", "user", "assistant")

short_contents = st.text(max_size=40).map(lambda text: "hi " + text)
"""Contents within every limit: never blank, unicode and control characters included."""


def _chat(system: bool, turns: int, texts: list[str]) -> list[inference_pb2.ChatMessage]:
    """A system turn (or not), then ``turns`` alternating turns ending with the user's."""
    chat = [inference_pb2.ChatMessage(role="system", content=texts[0])] if system else []
    for index in range(turns):
        role = "user" if (turns - index) % 2 else "assistant"
        chat.append(inference_pb2.ChatMessage(role=role, content=texts[index % len(texts)]))
    return chat


fine_chats = st.builds(_chat, st.booleans(), st.integers(1, 3), st.lists(short_contents, min_size=1, max_size=3))
"""Well-formed chats within every limit."""


def chat_messages(*, content_limit: int, max_messages: int) -> st.SearchStrategy[list[inference_pb2.ChatMessage]]:
    """Chats: well-formed ones of short contents, well-formed ones of any content (blank, at and
    past the limit), or turns of any role (a real one, a case variant, unicode, control characters,
    a name long enough to be echoed past gRPC's metadata limit), any number of them."""
    content = proto_strings(max_size=content_limit + 10, sizes=(content_limit - 1, content_limit, content_limit + 1))
    role = st.one_of(
        st.sampled_from(ROLE_NAMES),
        st.sampled_from(ROLE_NAMES),
        st.sampled_from(["User", " user", "user\x00", "tool", "function", ""]),
        proto_strings(max_size=ECHOED_NAME_CHARS),
        st.sampled_from(["x" * ECHOED_NAME_CHARS, "é" * (ECHOED_NAME_CHARS // 2)]),
    )
    turns = st.integers(1, max_messages + 1)
    near = st.builds(_chat, st.booleans(), turns, st.lists(content, min_size=1, max_size=3))
    anything = st.lists(
        st.builds(inference_pb2.ChatMessage, role=role, content=content), min_size=1, max_size=max_messages + 2
    )
    return st.one_of(fine_chats, near, anything)


FLOAT32_EDGES = (0.0, -0.0, 1.0, 2.0, 2.0000002, 1e-45, -1e-45, 3.4e38, -3.4e38, math.nan, math.inf, -math.inf)

wild_floats = st.one_of(st.floats(width=32), st.sampled_from(FLOAT32_EDGES))
"""A float32 sampling parameter: any value (NaN and the infinities included), the limits and their
neighbours."""


def generate_requests(
    message: type[Any],
    known: tuple[str, ...],
    *,
    servable: tuple[str, ...],
    content_limit: int,
    max_messages: int,
    max_tokens: int,
    max_stop: int,
    max_stop_chars: int,
    id_chars: int,
) -> st.SearchStrategy[Any]:
    """``GenerateRequest``s or ``GenerateStreamRequest``s (``message``, the same fields). Two in
    three are plausible throughout (a model of ``servable``, messages or a prompt, every number in
    range), so that many get as far as the model; the rest take each field from anything: messages
    and prompt both or neither, every optional number unset, at or past its limit (NaN and the
    infinities for the floats), stop lists of any size."""
    int32s = st.integers(min_value=-(2**31), max_value=2**31 - 1)
    fields: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
        "model": (st.sampled_from(servable), model_names(known)),
        "tenant": (st.just(""), proto_strings(max_size=id_chars)),
        "request_id": (st.just(""), proto_strings(max_size=id_chars)),
        "stop": (
            st.lists(st.text(min_size=1, max_size=max_stop_chars), max_size=max_stop),
            st.one_of(
                st.lists(proto_strings(max_size=max_stop_chars + 2), max_size=max_stop + 1),
                st.integers(0, 10_000).map(lambda n: ["x"] * n),
            ),
        ),
    }
    optional = {
        "max_tokens": (
            st.integers(1, max_tokens),
            st.one_of(int32s, st.sampled_from([0, -1, max_tokens, max_tokens + 1])),
        ),
        "temperature": (st.floats(0, 2, width=32), wild_floats),
        "top_p": (st.floats(0.25, 1, width=32), wild_floats),
        "seed": (st.integers(0, 2**63 - 1), int64s),
    }
    prompts = (short_contents, proto_strings(max_size=content_limit + 10, sizes=(content_limit + 1,)))
    chats = (fine_chats, chat_messages(content_limit=content_limit, max_messages=max_messages))

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        wild = draw(st.integers(0, 2)) == 0

        def pick(choices: tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]) -> Any:
            return draw(st.one_of(*choices) if wild else choices[0])

        shapes = ["messages", "prompt"] + (["both", "neither"] if wild else [])
        shape = draw(st.sampled_from(shapes))
        request = {name: pick(choices) for name, choices in fields.items()}
        if shape in ("messages", "both"):
            request["messages"] = pick(chats)
        if shape in ("prompt", "both"):
            request["prompt"] = pick(prompts)
        for name, choices in optional.items():
            if draw(st.booleans()):
                request[name] = pick(choices)
        return message(**request)

    return build()


def feedback_requests(*, id_chars: int, answer_chars: int) -> st.SearchStrategy[inference_pb2.SubmitFeedbackRequest]:
    """``SubmitFeedbackRequest``s: any request id, rating (in and out of 0..5) and texts around
    their limits, saying something or nothing."""
    rating = st.one_of(st.integers(0, 5), st.integers(0, 5), st.integers(-(2**31), 2**31 - 1))
    return st.builds(
        inference_pb2.SubmitFeedbackRequest,
        request_id=proto_strings(max_size=id_chars, sizes=(255, 256, 257)),
        rating=rating,
        corrected_answer=proto_strings(max_size=answer_chars + 10, sizes=(answer_chars, answer_chars + 1)),
        true_label=st.one_of(st.just(""), st.sampled_from(["lost_card", " lost_card "]), proto_strings(max_size=300)),
        comment=proto_strings(max_size=2_100, sizes=(2_000, 2_001)),
    )


# ---------------------------------------------------------------------------------------------
# The property every gRPC answer must have
# ---------------------------------------------------------------------------------------------

CANONICAL_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)

MAX_READABLE_MESSAGE = 4_000


def check_answer(
    code: grpc.StatusCode,
    details: str | None,
    what: Callable[[], str],
    also: frozenset[grpc.StatusCode] = frozenset(),
) -> None:
    """OK, or a canonical refusal (or one of ``also``) with a non-empty, printable message of
    reasonable length — never UNKNOWN or INTERNAL, never a blank or binary message."""
    if code is grpc.StatusCode.OK:
        return
    assert code in CANONICAL_REFUSALS | also, f"{what()} answered {code.name}: {details!r}"
    # gRPC's own verdict on a server message too big to deliver, not the server's answer.
    assert "metadata size exceeds" not in (details or ""), f"{what()}'s answer never arrived: {details!r}"
    assert details and details.strip(), f"{what()} answered {code.name} without a message"
    assert details.isprintable(), f"{what()} answered {code.name} with an unreadable message {details[:200]!r}"
    assert len(details) <= MAX_READABLE_MESSAGE, f"{what()} answered {code.name} with {len(details)} characters"


def describe(request: Any) -> str:
    """A short description of a (possibly huge) request for assertion messages."""
    text = str(request).replace("\n", " ")
    return text if len(text) <= 300 else f"{text[:300]}… ({len(text)} characters)"
