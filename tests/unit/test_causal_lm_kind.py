"""The causal_lm kind on the real SmolLM2 GGUF: base-model resolution and hash, the dequantized
cache, the chat template and the answer-only labels, batched greedy generation with timing, and
the kind's seam (Triton is issue 15)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from llmops_models.kinds import CAUSAL_LM, KINDS, kind_for_task, kind_of
from llmops_models.kinds.base import ServingOptions
from llmops_models.kinds.causal_lm import CausalLmPredictor
from llmops_models.kinds.causal_lm import network as net
from llmops_models.kinds.causal_lm.conversations import InvalidConversation, parse_messages

CONVERSATION = [
    {"role": "system", "content": "Answer with the intent name only."},
    {"role": "user", "content": "My card has not arrived."},
    {"role": "assistant", "content": "card_arrival"},
    {"role": "user", "content": "And I lost the old one."},
    {"role": "assistant", "content": "lost_card"},
]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared two-core machine it is steadier (and faster) than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(one_thread: None) -> Any:
    model, folder = net.load_base_model("smollm2")
    tokenizer = net.load_tokenizer(folder)
    return net.LoadedCausalLm(model.eval(), tokenizer, max_prompt_tokens=128, device=torch.device("cpu"))


def test_the_kind_is_registered_and_fills_the_seam(tmp_path: Path) -> None:
    assert KINDS["causal_lm"] is CAUSAL_LM and kind_of({"kind": "causal_lm"}) is CAUSAL_LM
    assert kind_for_task("causal-lm") is CAUSAL_LM
    assert {"exact_match", "rouge_l", "chrf", "pii_leakage", "prompt_leakage", "ttft_ms"} <= set(
        CAUSAL_LM.evaluation_metrics
    )
    with pytest.raises(NotImplementedError, match="issue 15"):
        CAUSAL_LM.triton_model("m__v1", tmp_path, ServingOptions())


def test_base_models_resolve_offline_and_hash_as_their_file(tmp_path: Path) -> None:
    source = net.resolve_base_model("smollm2")
    assert source.is_gguf and source.path.name == net.PACKAGED_GGUF_FILE
    assert net.resolve_base_model("default").path == source.path
    expected = "sha256:" + hashlib.sha256(source.path.read_bytes()).hexdigest()
    assert net.base_model_hash("smollm2") == expected
    for missing in ("HuggingFaceTB/SmolLM2-135M-Instruct", str(tmp_path / "nothing.gguf"), str(tmp_path)):
        with pytest.raises(net.BaseModelNotFound):
            net.resolve_base_model(missing)
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w")
    assert net.resolve_base_model(str(folder)).path == folder.resolve()
    assert net.base_model_hash(str(folder)).startswith("sha256:")


def test_the_gguf_is_dequantized_once_into_the_cache(base: Any) -> None:
    folder = net.materialize(net.resolve_base_model("smollm2"))
    digest = net.base_model_hash("smollm2").removeprefix("sha256:")
    assert folder.name.endswith(digest[:16]) and (folder / ".complete").is_file()
    assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    stamp = os.stat(folder / "config.json").st_mtime_ns
    assert net.materialize(net.resolve_base_model("default")) == folder  # reused, not rewritten
    assert os.stat(folder / "config.json").st_mtime_ns == stamp
    assert all(p.dtype == torch.float32 for p in base.model.parameters())


def test_the_loss_is_on_the_assistant_tokens_only(base: Any) -> None:
    tokenizer = base.tokenizer
    encoded = net.encode_for_training(tokenizer, CONVERSATION, max_length=512)
    assert encoded is not None
    ids, labels = encoded
    assert len(ids) == len(labels)
    answered = tokenizer.decode([token for token in labels if token != -100])
    assert answered == "card_arrival<|im_end|>lost_card<|im_end|>"
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nAnswer with the intent name only.")
    # Too long: the end (the final answer) is kept, and a conversation with no answer left is None.
    short = net.encode_for_training(tokenizer, CONVERSATION, max_length=8)
    assert short is not None
    short_ids, short_labels = short
    assert short_ids == ids[-8:] and tokenizer.decode([t for t in short_labels if t != -100]).startswith("lost")
    assert net.encode_for_training(tokenizer, CONVERSATION[:3], max_length=1) is None  # only the last line break


def test_the_answer_only_loss_equals_the_models_own_loss(base: Any) -> None:
    """``answer_logits`` runs the output layer on the answer positions only; the loss is the one
    the model computes itself from ``labels=`` over every position."""
    tokenizer = base.tokenizer
    rows = [net.encode_for_training(tokenizer, c, max_length=512) for c in (CONVERSATION, CONVERSATION[:3])]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((2, width), tokenizer.pad_token_id)
    labels = torch.full((2, width), -100)
    mask = torch.zeros((2, width), dtype=torch.long)
    for row, (ids, targets) in enumerate(rows):
        input_ids[row, : len(ids)], labels[row, : len(ids)], mask[row, : len(ids)] = (
            torch.tensor(ids),
            torch.tensor(targets),
            1,
        )
    with torch.no_grad():
        logits, targets = net.answer_logits(base.model, input_ids, mask, labels)
        expected = base.model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    assert logits.shape == (int((labels[:, 1:] != -100).sum()), base.model.config.vocab_size)
    assert logits.dtype == torch.float32
    assert torch.nn.functional.cross_entropy(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)


def test_precision_auto_is_bfloat16_only_where_it_is_native() -> None:
    cpu = torch.device("cpu")
    assert net.compute_dtype("float32", cpu) == torch.float32
    assert net.compute_dtype("bfloat16", cpu) == torch.bfloat16
    native = torch.bfloat16 if net.native_bfloat16(cpu) else torch.float32
    assert net.compute_dtype("auto", cpu) == native
    with net.autocast(cpu, torch.float32):  # float32: no autocast at all
        assert not torch.is_autocast_enabled("cpu")
    with net.autocast(cpu, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")


def test_the_triton_model_decodes_on_every_core_on_cpu_and_writes_its_stream_interval(tmp_path: Path) -> None:
    from llmops_models.kinds.causal_lm import serving

    assert [serving.default_torch_threads(False, cores) for cores in (1, 2, 8)] == [1, 2, 8]
    assert serving.default_torch_threads(True, 8) == 0  # torch's default on a GPU
    config = serving.model_config(
        ServingOptions(), name="lm", adapters_dir=tmp_path, stream_interval_tokens=4, stream_interval_ms=50
    )
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters[serving.TORCH_THREADS_PARAMETER] == "0"
    assert parameters[serving.PREFILL_THREADS_PARAMETER] == "0"
    assert parameters[serving.STREAM_INTERVAL_TOKENS_PARAMETER] == "4"
    assert parameters[serving.STREAM_INTERVAL_MS_PARAMETER] == "50"


def test_generation_is_greedy_batched_and_timed(base: Any) -> None:
    prompts = [CONVERSATION[:2], CONVERSATION[:4], [{"role": "user", "content": "Hello"}]]
    batched = base.generate(prompts, max_new_tokens=6, batch_size=3)
    alone = [base.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in alone]  # left padding changes nothing
    for generation in batched:
        assert 1 <= generation.output_tokens <= 6 and generation.text
        assert 0 < generation.ttft_ms <= generation.latency_ms
        assert generation.tokens_per_s > 0 and 0 < generation.mean_token_probability <= 1
        assert generation.prompt_tokens > 5
    assert base.prompt_ids(CONVERSATION) == base.prompt_ids(CONVERSATION[:4])  # the final answer is left out


def test_the_predictor_answers_texts_with_a_confidence(base: Any) -> None:
    predictor = CausalLmPredictor(base, max_new_tokens=4)
    answers, confidences = predictor.predict(["Where is my card?"])
    assert len(answers) == 1 and isinstance(answers[0], str) and 0 < confidences[0] <= 1
    assert predictor.predict([]) == ([], [])


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        ("{", "not JSON"),
        ('{"role": "user"}', "array"),
        ('[{"role": "robot", "content": "x"}]', "known role"),
        ('[{"role": "user", "content": "x"}]', "assistant"),
        ('[{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}]', "no user"),
    ],
)
def test_unreadable_conversations_say_why(value: str, problem: str) -> None:
    with pytest.raises(InvalidConversation, match=problem):
        parse_messages(value)
