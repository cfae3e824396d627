"""The causal LM's continuous-batching scheduler on the real SmolLM2 (float32, CPU): sequences that
join a running batch generate exactly what they generate alone; rows of one batch use different
LoRA adapters; cancellation, limits and stop strings; streamed text never splits a character."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from llmops_models.kinds.causal_lm import serving
from llmops_models.kinds.causal_lm.batching import (
    Chunk,
    Generation,
    Limits,
    QueueFull,
    Scheduler,
    _pending_stop,
    peft_key,
)
from llmops_models.kinds.causal_lm.network import LoadedCausalLm, load_base_model, load_tokenizer
from llmops_models.triton_repository import AdapterRepository
from tests.causal_lm_adapters import ANSWERS, QUESTION, trained_adapters

CONVERSATIONS = [
    [{"role": "user", "content": "Where is my new card?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is an exchange rate?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "How do I top up my account with a bank transfer?"}],
    [{"role": "user", "content": "Name three colours."}],
]
MAX_TOKENS = 24


def _fresh_base() -> tuple[Any, Any]:
    """A base model of its own (a scheduler's adapters change its layers in place) and the tokenizer."""
    model, folder = load_base_model("smollm2")
    return model.eval(), load_tokenizer(folder)


class Collected:
    """A sink keeping a sequence's chunks."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    def __call__(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return "".join(chunk.text for chunk in self.chunks)

    @property
    def final(self) -> Chunk | None:
        return self.chunks[-1] if self.chunks and self.chunks[-1].finish_reason else None


def _request(messages: list[dict[str, str]], **parameters: Any) -> serving.GenerationParameters:
    return serving.GenerationParameters(messages=messages, **parameters)


def _run(scheduler: Scheduler, limit: int = 500) -> None:
    for _ in range(limit):
        if not scheduler.step():
            return
    raise AssertionError(f"the scheduler still had work after {limit} steps")


@pytest.fixture(scope="module")
def base_scheduler() -> Iterator[Scheduler]:
    model, tokenizer = _fresh_base()
    yield Scheduler(model, tokenizer, limits=Limits(max_running=4, max_queued=4, max_new_tokens=64))


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = AdapterRepository(tmp_path_factory.mktemp("adapters"))
    for name, folder in trained_adapters(tmp_path_factory).items():
        repository.write(name, folder)
    return repository.root


def test_sequences_joining_mid_flight_generate_what_they_generate_alone(base_scheduler: Scheduler) -> None:
    model, tokenizer = _fresh_base()
    alone = LoadedCausalLm(model, tokenizer, max_prompt_tokens=1024, device=torch.device("cpu"))
    expected = [alone.generate([c], max_new_tokens=MAX_TOKENS, batch_size=1)[0] for c in CONVERSATIONS]

    sinks = [Collected() for _ in CONVERSATIONS]
    for conversation, sink in zip(CONVERSATIONS[:3], sinks, strict=False):
        base_scheduler.submit(_request(conversation, max_tokens=MAX_TOKENS), sink)
    for _ in range(5):
        base_scheduler.step()
    assert base_scheduler.running == 3
    for conversation, sink in zip(CONVERSATIONS[3:], sinks[3:], strict=True):  # join a batch 5 tokens in
        base_scheduler.submit(_request(conversation, max_tokens=MAX_TOKENS), sink)
    _run(base_scheduler)

    for sink, generation in zip(sinks, expected, strict=True):
        assert sink.final is not None
        assert sink.text.strip() == generation.text
        assert sink.final.completion_tokens == generation.output_tokens
        assert sink.final.finish_reason == (
            serving.FINISH_LENGTH if generation.output_tokens == MAX_TOKENS else serving.FINISH_STOP
        )
        assert sink.final.ttft_s is not None and sink.final.ttft_s > 0
    assert len(sinks[2].chunks) > 1, "a long answer streams in more than one chunk"
    assert base_scheduler.running == 0 and base_scheduler._cache is None


def test_sequences_waiting_together_are_prefilled_in_one_forward_pass(
    base_scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three requests of different prompt lengths waiting at once: one left-padded prefill for all,
    the one that ends at its first token leaves at once, and each generates what it does alone."""
    model, tokenizer = _fresh_base()
    alone = LoadedCausalLm(model, tokenizer, max_prompt_tokens=1024, device=torch.device("cpu"))
    requests = [(CONVERSATIONS[0], MAX_TOKENS), (CONVERSATIONS[1], 1), (CONVERSATIONS[3], MAX_TOKENS)]
    expected = [alone.generate([c], max_new_tokens=n, batch_size=1)[0] for c, n in requests]
    prefill_rows: list[int] = []
    forward = base_scheduler._forward

    def counting_forward(
        input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, adapters: Any
    ) -> Any:
        if cache is None:  # a prefill: no cache yet
            prefill_rows.append(int(input_ids.shape[0]))
        return forward(input_ids, mask, positions, cache, adapters)

    monkeypatch.setattr(base_scheduler, "_forward", counting_forward)
    sinks = [Collected() for _ in requests]
    for (conversation, max_tokens), sink in zip(requests, sinks, strict=True):
        base_scheduler.submit(_request(conversation, max_tokens=max_tokens), sink)
    base_scheduler.step()
    assert prefill_rows == [3]
    assert base_scheduler.running == 2, "the one-token request ended at its first token"
    _run(base_scheduler)

    assert prefill_rows == [3]
    for sink, generation, (_, max_tokens) in zip(sinks, expected, requests, strict=True):
        assert sink.final is not None
        assert sink.text.strip() == generation.text
        assert sink.final.completion_tokens == generation.output_tokens <= max_tokens
    assert base_scheduler.running == 0 and base_scheduler._cache is None


def test_a_prefill_runs_on_its_own_thread_count_and_decoding_on_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """``prefill_threads`` is the torch thread count of the prompts' forward pass only: decoding
    steps run on the count the process had, which is put back after every prefill."""
    model, tokenizer = _fresh_base()
    scheduler = Scheduler(model, tokenizer, limits=Limits(max_running=2, max_new_tokens=8, prefill_threads=2))
    seen: list[tuple[str, int]] = []
    forward = scheduler._forward

    def recording_forward(
        input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, adapters: Any
    ) -> Any:
        seen.append(("prefill" if cache is None else "decode", torch.get_num_threads()))
        return forward(input_ids, mask, positions, cache, adapters)

    monkeypatch.setattr(scheduler, "_forward", recording_forward)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sinks = [Collected(), Collected()]
        scheduler.submit(_request(CONVERSATIONS[0], max_tokens=4), sinks[0])
        scheduler.step()
        scheduler.submit(_request(CONVERSATIONS[4], max_tokens=4), sinks[1])  # joins mid-flight: a second prefill
        _run(scheduler)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

    assert [threads for kind, threads in seen if kind == "prefill"] == [2, 2]
    assert {threads for kind, threads in seen if kind == "decode"} == {1}
    assert after == 1
    assert all(sink.final is not None and sink.final.finish_reason for sink in sinks)


def test_rows_of_one_batch_use_their_own_adapters(adapters_dir: Path) -> None:
    model, tokenizer = _fresh_base()
    scheduler = Scheduler(model, tokenizer, adapters_dir=adapters_dir, limits=Limits(max_running=4, max_adapters=2))
    question = [{"role": "user", "content": QUESTION}]
    sinks = {name: Collected() for name in [*ANSWERS, ""]}
    for name, sink in sinks.items():
        scheduler.submit(_request(question, adapter=name, max_tokens=8), sink)
    scheduler.step()
    assert scheduler.running == 3, "the three requests decode in one batch"
    _run(scheduler)

    for name, answer in ANSWERS.items():
        assert sinks[name].text.strip() == answer, name
    base_answer = sinks[""].text
    assert all(answer not in base_answer for answer in ANSWERS.values())


def test_an_adapter_of_a_model_name_with_dots_serves(adapters_dir: Path, tmp_path: Path) -> None:
    """Model names may have dots (``support.bot``); PEFT module keys may not: the adapter is kept
    under a derived key, and its folder keeps the deployment's name."""
    name = "support.bot__v1"
    shutil.copytree(adapters_dir / "fruit", tmp_path / name)
    model, tokenizer = _fresh_base()
    scheduler = Scheduler(model, tokenizer, adapters_dir=tmp_path, limits=Limits(max_adapters=1))
    sink = Collected()
    scheduler.submit(_request([{"role": "user", "content": QUESTION}], adapter=name, max_tokens=8), sink)
    _run(scheduler)
    assert sink.text.strip() == ANSWERS["fruit"]
    assert list(scheduler.adapters.loaded) == [name]
    assert "." not in peft_key(name) and peft_key(name) != peft_key("support_bot__v1")


def test_the_least_recently_used_idle_adapter_is_evicted(adapters_dir: Path) -> None:
    model, tokenizer = _fresh_base()
    scheduler = Scheduler(model, tokenizer, adapters_dir=adapters_dir, limits=Limits(max_adapters=1))
    question = [{"role": "user", "content": QUESTION}]
    for name in [*ANSWERS, next(iter(ANSWERS))]:  # fruit, colour, fruit again
        sink = Collected()
        scheduler.submit(_request(question, adapter=name, max_tokens=4), sink)
        _run(scheduler)
        assert list(scheduler.adapters.loaded) == [name]
        assert sink.text.strip() and ANSWERS[name].startswith(sink.text.strip())


def test_cancelling_frees_the_slot_at_the_next_step(base_scheduler: Scheduler) -> None:
    cancelled_by_client = False
    first, second, third = Collected(), Collected(), Collected()
    long = [{"role": "user", "content": "Write a long story about a dragon."}]
    limits = base_scheduler.limits
    scheduler = Scheduler(
        base_scheduler.adapters.model,
        base_scheduler.tokenizer,
        limits=Limits(max_running=1, max_queued=limits.max_queued, max_new_tokens=limits.max_new_tokens),
    )
    one = scheduler.submit(_request(long, max_tokens=64), first)
    scheduler.submit(_request(long, max_tokens=64), second, is_cancelled=lambda: cancelled_by_client)
    scheduler.submit(_request(CONVERSATIONS[0], max_tokens=4), third)
    for _ in range(3):
        scheduler.step()
    assert scheduler.running == 1 and scheduler.waiting == 2 and first.final is None

    one.cancel()  # the running one, from the caller
    cancelled_by_client = True  # a waiting one, polled (Triton's request.is_cancelled)
    scheduler.step()
    assert first.final is not None and first.final.finish_reason == serving.FINISH_CANCELLED
    assert first.final.completion_tokens < 64
    assert second.final is not None and second.final.finish_reason == serving.FINISH_CANCELLED
    assert scheduler.running == 1, "the freed slot went to the next waiting request"
    _run(scheduler)
    assert third.final is not None and third.final.finish_reason == serving.FINISH_LENGTH


def test_max_tokens_ends_with_length_and_a_stop_string_with_stop(base_scheduler: Scheduler) -> None:
    plain, stopped = Collected(), Collected()
    base_scheduler.submit(_request(CONVERSATIONS[2], max_tokens=3), plain)
    _run(base_scheduler)
    assert plain.final is not None and plain.final.finish_reason == serving.FINISH_LENGTH
    assert plain.final.completion_tokens == 3

    full = Collected()
    base_scheduler.submit(_request(CONVERSATIONS[2], max_tokens=MAX_TOKENS), full)
    _run(base_scheduler)
    words = full.text.split()
    stop = words[len(words) // 2]
    base_scheduler.submit(_request(CONVERSATIONS[2], max_tokens=MAX_TOKENS, stop=(stop,)), stopped)
    _run(base_scheduler)
    assert stopped.final is not None and stopped.final.finish_reason == serving.FINISH_STOP
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stop not in stopped.text


def test_sampling_with_a_seed_is_reproducible(base_scheduler: Scheduler) -> None:
    runs = []
    for _ in range(2):
        sink = Collected()
        base_scheduler.submit(_request(CONVERSATIONS[4], max_tokens=12, temperature=0.9, top_p=0.9, seed=7), sink)
        _run(base_scheduler)
        runs.append(sink.text)
    assert runs[0] == runs[1] and runs[0]


def test_a_full_queue_and_bad_parameters_are_refused(base_scheduler: Scheduler, adapters_dir: Path) -> None:
    model, tokenizer = base_scheduler.adapters.model, base_scheduler.tokenizer
    scheduler = Scheduler(model, tokenizer, limits=Limits(max_queued=2, max_new_tokens=16, max_prompt_tokens=64))
    for _ in range(2):
        scheduler.submit(_request(CONVERSATIONS[0]), Collected())
    with pytest.raises(QueueFull, match=f"^{serving.RESOURCE_EXHAUSTED}"):
        scheduler.submit(_request(CONVERSATIONS[0]), Collected())

    bad = [
        _request(CONVERSATIONS[0], max_tokens=17),
        _request(CONVERSATIONS[0], temperature=-1.0),
        _request(CONVERSATIONS[0], top_p=0.0),
        _request(CONVERSATIONS[0], adapter="no-such-adapter"),
        _request(CONVERSATIONS[0], adapter="../escape"),
        _request([{"role": "user", "content": "word " * 100}]),
    ]
    for parameters in bad:
        with pytest.raises(serving.InvalidRequest, match=f"^{serving.INVALID_ARGUMENT}"):
            scheduler.submit(parameters, Collected())
    assert scheduler.waiting == 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "non-empty"),
        (b'[{"role": "robot", "content": "hi"}]', "role"),
        (b'[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]', "last turn"),
    ],
)
def test_bad_messages_are_invalid_arguments(raw: bytes, message: str) -> None:
    with pytest.raises(serving.InvalidRequest, match=message):
        serving.parse_messages(raw)


class _ByteTokenizer:
    """Pure-logic stand-in: one token per UTF-8 byte (as byte-level BPE can split a character)."""

    eos_token_id = 256
    pad_token_id = 256

    def decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(t for t in tokens if t < 256).decode("utf-8", "replace")


def test_streamed_text_never_splits_a_character_nor_leaks_a_stop_string_prefix() -> None:
    scheduler = Scheduler(None, _ByteTokenizer())
    sink = Collected()
    generation = Generation(
        parameters=_request(CONVERSATIONS[0], stop=("STOP",)), prompt=[1], max_tokens=100, sink=sink, is_cancelled=None
    )
    finished = [scheduler._advance(generation, byte) for byte in "né 🐉 ST".encode()]
    assert not any(finished)
    assert all("\ufffd" not in chunk.text for chunk in sink.chunks)
    assert sink.text == "né 🐉 "  # "ST" may begin "STOP": held back
    assert not scheduler._advance(generation, ord("A"))  # "STA" cannot: sent
    assert sink.text == "né 🐉 STA"
    assert scheduler._advance(generation, scheduler.eos_id)
    assert sink.text == "né 🐉 STA" and sink.final is not None and sink.final.finish_reason == serving.FINISH_STOP


def test_pending_stop_is_the_longest_end_that_begins_a_stop_string() -> None:
    assert _pending_stop("hello wor", ("world", "or")) == 3
    assert _pending_stop("hello", ("xyz",)) == 0
    assert _pending_stop("ab", ("abc", "b")) == 2
