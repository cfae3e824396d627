"""Continuous batching for the causal LM: many generation requests share one decoding loop, one
base model and many LoRA adapters.

How it works (the scheme of vLLM's and TGI's schedulers, without paging):

* ``submit`` checks a request, renders its prompt with the chat template and puts it on a bounded
  admission queue (full: ``QueueFull``, "resource exhausted:").
* ``step`` is one iteration of the loop the background thread runs: cancelled sequences leave;
  waiting ones are admitted while fewer than ``max_running`` run (those admitted in one step are
  prefilled together, left-padded, in one forward pass, then joined to the batch: sixteen
  requests arriving at once wait for one prefill, not for fifteen others' one by one); then every
  running sequence decodes one token in a single forward pass; finished ones leave.
* The KV cache is one left-padded batch cache (transformers ``DynamicCache``, rows aligned on their
  last token) with an attention mask. It is re-padded only when membership changes: a joining
  row is padded on the left to the batch's width (or the batch to the row's), leaving rows are
  dropped and the columns no remaining row uses are cut. Each row's position ids are its own
  token count, so padding never shifts a sequence.
* Each row names its adapter: the base model gains LoRA adapters lazily (PEFT ``load_adapter``,
  from ``<adapters_dir>/<name>/``) between steps, and one forward pass runs rows of different
  adapters together (PEFT's ``adapter_names=[...]``, ``"__base__"`` for the base alone). At most
  ``max_adapters`` stay loaded; the least recently used idle one is deleted. The base is never
  reloaded.

Why not transformers' own continuous batching (``init_continuous_batching`` / ``generate_batch``,
tried with transformers 5.23 on CPU): it runs on CPU (a tiny random LLaMA generated fine), but it
packs every sequence of a step into one row (input shape ``[1, total_tokens]``, paged attention),
while PEFT selects adapters per *row*: there is no way to give two requests of one step two
adapters, and ``adapter_names`` passed to ``generate_batch`` is accepted and silently ignored. Its
submission also blocks (10 s) instead of refusing when full, and startup took ~26 s on two cores
for a tiny model (cache sizing). This scheduler is ~400 lines and keeps every limit explicit.

Streaming: each sequence's text is decoded from all its tokens every step and only the part that
is final is sent: never a trailing incomplete UTF-8 character (U+FFFD from a partial byte
sequence), never a suffix that may still become a stop string.

Imports only torch, transformers, peft and the standard library (plus ``serving`` and ``network``
of this kind): Triton's ``model.py`` imports it from the files copied beside it.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

if __package__:  # the platform: a module of llmops_models
    from llmops_models.kinds.causal_lm import serving
    from llmops_models.kinds.causal_lm.network import autocast, prompt_messages, render
else:  # Triton: copied beside model.py as top-level modules
    import serving  # type: ignore[no-redef]
    from network import autocast, prompt_messages, render  # type: ignore[no-redef]

BASE = "__base__"
"""PEFT's name for "no adapter" in ``adapter_names``."""
ADAPTER_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,139}$")
"""Adapter names are folder names (``<model>__v<version>``, a model name of the kernel's pattern):
no slashes, no ``..``."""


def peft_key(name: str) -> str:
    """The key an adapter has inside PEFT: module dictionaries refuse dots, which model names may
    have (``bot.v2__v1``), so the key is derived from the name, one-to-one for practical purposes."""
    return BASE if name == BASE else "adapter_" + hashlib.sha256(name.encode()).hexdigest()[:24]


ADAPTER_FILES = ("adapter_config.json",)


class QueueFull(Exception):
    """The admission queue is full; ``str()`` starts with ``resource exhausted:``."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{serving.RESOURCE_EXHAUSTED} {message}")


InvalidRequest = serving.InvalidRequest


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound of the scheduler (settings / Triton config parameters)."""

    max_running: int = serving.DEFAULT_MAX_RUNNING
    max_queued: int = serving.DEFAULT_MAX_QUEUED
    max_new_tokens: int = serving.DEFAULT_MAX_NEW_TOKENS
    max_prompt_tokens: int = serving.DEFAULT_MAX_PROMPT_TOKENS
    max_adapters: int = serving.DEFAULT_MAX_ADAPTERS
    prefill_threads: int = 0
    """Torch threads of a prefill, set for its forward pass and put back after; 0: the decoding
    steps' (``serving.PREFILL_THREADS_PARAMETER`` says why they may differ)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one sequence produced since its previous chunk."""

    text: str
    finish_reason: str
    """Empty while streaming; one of ``serving.FINISH_REASONS`` in the last chunk."""
    prompt_tokens: int
    completion_tokens: int
    error: str = ""
    """Why, when ``finish_reason`` is ``error``."""
    ttft_s: float | None = None
    """In the last chunk: from submission to the first token (None when no token came)."""
    decode_s: float = 0.0
    """In the last chunk: from the first token to the last."""


Sink = Callable[[Chunk], None]
"""Receives a sequence's chunks, on the scheduler's thread; raising means the client is gone."""


@dataclass(eq=False)
class Generation:
    """One sequence: its request, prompt, tokens so far and what has been sent."""

    parameters: serving.GenerationParameters
    prompt: list[int]
    max_tokens: int
    sink: Sink
    is_cancelled: Callable[[], bool] | None
    submitted: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(default_factory=list)
    sent: int = 0
    """Characters of the text already sent."""
    first_token_at: float | None = None
    last_token_at: float | None = None
    generator: torch.Generator | None = None
    cancel_requested: bool = False
    finished: bool = False

    @property
    def adapter(self) -> str:
        return self.parameters.adapter or BASE

    def cancel(self) -> None:
        """Stop at the next step (thread-safe: the scheduler polls it)."""
        self.cancel_requested = True

    def wants_out(self) -> bool:
        if self.cancel_requested:
            return True
        try:
            return bool(self.is_cancelled and self.is_cancelled())
        except Exception:  # a request object that can no longer answer has gone away
            return True


class Adapters:
    """LoRA adapters on the one base model: loaded on first use, least recently used evicted.

    Until the first adapter, ``model`` is the base itself; from then on it is the PEFT model
    wrapping it (the base's layers gain LoRA branches in place, nothing is copied)."""

    def __init__(self, base: Any, adapters_dir: Path | None, *, max_adapters: int, device: torch.device) -> None:
        if max_adapters < 1:
            raise ValueError(f"max_adapters must be at least 1, got {max_adapters}")
        self.model: Any = base
        self.adapters_dir = adapters_dir
        self.max_adapters = max_adapters
        self.device = device
        self.loaded: collections.OrderedDict[str, float] = collections.OrderedDict()
        """Name → seconds its load took, least recently used first."""
        self.peft = False

    def folder(self, name: str) -> Path:
        if not ADAPTER_NAME.match(name):
            raise InvalidRequest(f"adapter name {name!r} is not a valid adapter name")
        if self.adapters_dir is None:
            raise InvalidRequest(f"unknown adapter {name!r}: this model serves no adapters")
        folder = self.adapters_dir / name
        if not all((folder / file).is_file() for file in ADAPTER_FILES):
            raise InvalidRequest(f"unknown adapter {name!r}")
        return folder

    def can_use(self, name: str, busy: set[str]) -> bool:
        """Whether ``name`` is loaded or may be now (a slot is free or an idle one can go)."""
        if name == BASE or name in self.loaded or len(self.loaded) < self.max_adapters:
            return True
        return any(loaded not in busy for loaded in self.loaded)

    def use(self, name: str, busy: set[str]) -> None:
        """Make ``name`` loaded and most recently used; evict idle ones beyond ``max_adapters``."""
        if name == BASE:
            return
        if name in self.loaded:
            self.loaded.move_to_end(name)
            return
        folder = self.folder(name)
        began = time.perf_counter()
        if not self.peft:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(
                self.model, str(folder), adapter_name=peft_key(name), is_trainable=False, torch_device=str(self.device)
            )
            self.model.eval()
            self.peft = True
        else:
            self.model.load_adapter(
                str(folder), adapter_name=peft_key(name), is_trainable=False, torch_device=str(self.device)
            )
        self.loaded[name] = time.perf_counter() - began
        for old in list(self.loaded):
            if len(self.loaded) <= self.max_adapters:
                break
            if old != name and old not in busy:
                self.model.delete_adapter(peft_key(old))
                del self.loaded[old]


class Scheduler:
    """Continuous batching over one causal LM and its adapters (see the module docstring).

    Thread-safe: ``submit`` and ``cancel`` from any thread; ``step`` (or the background thread of
    ``start``) from one."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        adapters_dir: Path | None = None,
        limits: Limits | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.limits = limits or Limits()
        self.tokenizer = tokenizer
        self.device = device or torch.device("cpu")
        self.dtype = dtype
        self.adapters = Adapters(model, adapters_dir, max_adapters=self.limits.max_adapters, device=self.device)
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        self._waiting: collections.deque[Generation] = collections.deque()
        self._lock = threading.Condition()
        self._running: list[Generation] = []
        self._cache: Any = None
        """``DynamicCache`` of the running rows: every token but each row's last."""
        self._mask: torch.Tensor | None = None
        """[rows, cache width], 1 where a row has a token."""
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ---- requests ----

    def submit(
        self,
        parameters: serving.GenerationParameters,
        sink: Sink,
        *,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> Generation:
        """Queue a request; ``InvalidRequest`` or ``QueueFull`` when refused (nothing is sent then)."""
        limits = self.limits
        serving.check_sampling(parameters.temperature, parameters.top_p, parameters.max_tokens, limits.max_new_tokens)
        if parameters.adapter:
            self.adapters.folder(parameters.adapter)
        text = render(self.tokenizer, prompt_messages(parameters.messages), add_generation_prompt=True)
        prompt = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(prompt) > limits.max_prompt_tokens:
            raise InvalidRequest(f"the prompt has {len(prompt)} tokens; at most {limits.max_prompt_tokens}")
        generation = Generation(
            parameters=parameters,
            prompt=prompt,
            max_tokens=parameters.max_tokens or limits.max_new_tokens,
            sink=sink,
            is_cancelled=is_cancelled,
        )
        if parameters.temperature > 0:
            seed = parameters.seed if parameters.seed is not None else random.getrandbits(63)
            generation.generator = torch.Generator().manual_seed(seed)
        with self._lock:
            if len(self._waiting) >= limits.max_queued:
                raise QueueFull(f"{len(self._waiting)} requests are waiting; at most {limits.max_queued}")
            self._waiting.append(generation)
            self._lock.notify()
        return generation

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    # ---- the loop ----

    def start(self) -> None:
        """Run ``step`` on a background thread until ``close``."""
        self._thread = threading.Thread(target=self._loop, name="causal-lm-scheduler", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the loop; sequences still waiting or running end ``cancelled``."""
        self._stopping.set()
        with self._lock:
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            left = list(self._waiting) + self._running
            self._waiting.clear()
        for generation in left:
            self._finish(generation, serving.FINISH_CANCELLED)
        self._running, self._cache, self._mask = [], None, None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if not self.step():
                with self._lock:  # idle: sleep until a request comes (polling cancellation of none)
                    if not self._waiting and not self._stopping.is_set():
                        self._lock.wait(0.5)

    @torch.inference_mode()
    def step(self) -> bool:
        """One iteration: drop cancelled, admit, decode one token for every running row. Returns
        whether there was anything to do."""
        self._drop_cancelled()
        self._admit()
        if not self._running:
            return self.waiting > 0
        rows = self._running
        try:
            input_ids = torch.tensor([[g.tokens[-1]] for g in rows], device=self.device)
            positions = torch.tensor([[len(g.prompt) + len(g.tokens) - 1] for g in rows], device=self.device)
            assert self._mask is not None
            mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=self._mask.dtype, device=self.device)], 1)
            logits, self._cache = self._forward(input_ids, mask, positions, self._cache, [g.adapter for g in rows])
            self._mask = mask
        except Exception as error:  # the batch is lost: every running sequence ends with the error
            self._running, self._cache, self._mask = [], None, None
            for generation in rows:
                self._finish(generation, serving.FINISH_ERROR, error=f"{type(error).__name__}: {error}")
            return True
        tokens = self._choose(logits, rows)
        done = [i for i, (g, token) in enumerate(zip(rows, tokens, strict=True)) if self._advance(g, token)]
        if done:
            self._keep([i for i in range(len(rows)) if i not in set(done)])
        return True

    def _drop_cancelled(self) -> None:
        with self._lock:
            gone = [g for g in self._waiting if g.wants_out()]
            for generation in gone:
                self._waiting.remove(generation)
        for generation in gone:
            self._finish(generation, serving.FINISH_CANCELLED)
        leaving = [i for i, g in enumerate(self._running) if g.wants_out()]
        if leaving:
            rows = self._running
            self._keep([i for i in range(len(rows)) if i not in set(leaving)])
            for i in leaving:
                self._finish(rows[i], serving.FINISH_CANCELLED)

    def _admit(self) -> None:
        """Take waiting sequences into free slots (in order, skipping one whose adapter has no free
        slot yet), prefill them together and join them to the batch."""
        chosen: list[Generation] = []
        busy = {g.adapter for g in self._running}
        while len(self._running) + len(chosen) < self.limits.max_running:
            with self._lock:
                generation = next((g for g in self._waiting if self.adapters.can_use(g.adapter, busy)), None)
                if generation is None:
                    break
                self._waiting.remove(generation)
            try:
                self.adapters.use(generation.adapter, busy)
            except InvalidRequest as error:  # the adapter's folder went away since submit
                self._finish(generation, serving.FINISH_ERROR, error=str(error))
                continue
            except Exception as error:
                self._finish(generation, serving.FINISH_ERROR, error=f"{type(error).__name__}: {error}")
                continue
            busy.add(generation.adapter)  # not evicted for a later one of this step
            chosen.append(generation)
        if not chosen:
            return
        try:
            with _torch_threads(self.limits.prefill_threads):
                logits, cache, mask = self._prefill(chosen)
        except Exception as error:
            for generation in chosen:
                self._finish(generation, serving.FINISH_ERROR, error=f"{type(error).__name__}: {error}")
            return
        tokens = self._choose(logits, chosen)
        joining = [i for i, (g, token) in enumerate(zip(chosen, tokens, strict=True)) if not self._advance(g, token)]
        if len(joining) < len(chosen) and joining:  # some ended at their first token
            cache, mask = _select(cache, mask, joining)
        if joining:
            self._join([chosen[i] for i in joining], cache, mask)

    def _prefill(self, generations: Sequence[Generation]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """One forward pass over the prompts of ``generations``, left-padded to the longest: the
        logits of each one's last prompt token, the cache and its mask. Each row's position ids
        count its own tokens only, so padding never shifts a sequence."""
        width = max(len(g.prompt) for g in generations)
        prompt = torch.full((len(generations), width), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(prompt)
        for row, generation in enumerate(generations):
            length = len(generation.prompt)
            prompt[row, width - length :] = torch.tensor(generation.prompt, device=self.device)
            mask[row, width - length :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        logits, cache = self._forward(prompt, mask, positions, None, [g.adapter for g in generations])
        return logits, cache, mask

    def _forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        adapters: Sequence[str],
    ) -> tuple[torch.Tensor, Any]:
        """Last-position logits (float32, [rows, vocabulary]) and the grown cache."""
        from transformers import DynamicCache

        options: dict[str, Any] = {}
        if self.adapters.peft:
            options["adapter_names"] = [peft_key(name) for name in adapters]
        with autocast(self.device, self.dtype):
            output = self.adapters.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache if cache is not None else DynamicCache(),
                use_cache=True,
                logits_to_keep=1,
                **options,
            )
        return output.logits[:, -1, :].float(), output.past_key_values

    # ---- the batch cache ----

    def _join(self, generations: list[Generation], cache: Any, mask: torch.Tensor) -> None:
        """Add prefilled rows, left-padding them or the batch to a common width."""
        if not self._running:
            self._running, self._cache, self._mask = generations, cache, mask
            return
        assert self._mask is not None
        width = max(self._mask.shape[1], mask.shape[1])
        layers = [
            (
                torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)]),
                torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)]),
            )
            for old, new in zip(self._cache.layers, cache.layers, strict=True)
        ]
        self._mask = torch.cat([_pad_left(self._mask, width), _pad_left(mask, width)])
        self._cache = _cache_of(layers)
        self._running = [*self._running, *generations]

    def _keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` of the batch, and cut the columns none of them uses."""
        if not rows:
            self._running, self._cache, self._mask = [], None, None
            return
        assert self._mask is not None
        self._cache, self._mask = _select(self._cache, self._mask, rows)
        self._running = [self._running[i] for i in rows]

    # ---- tokens and text ----

    def _choose(self, logits: torch.Tensor, rows: Sequence[Generation]) -> list[int]:
        """The next token of each row: the most likely one (temperature 0), else sampled with the
        row's own generator from its temperature and top-p."""
        chosen = logits.argmax(dim=-1).tolist()
        for i, generation in enumerate(rows):
            temperature = generation.parameters.temperature
            if temperature > 0:
                probabilities = torch.softmax(logits[i].cpu() / temperature, dim=-1)
                chosen[i] = _sample(probabilities, generation.parameters.top_p, generation.generator)
        return [int(token) for token in chosen]

    def _advance(self, generation: Generation, token: int) -> bool:
        """Record a new token and send what became final; True when the sequence is finished."""
        now = time.monotonic()
        if generation.first_token_at is None:
            generation.first_token_at = now
        generation.last_token_at = now
        generation.tokens.append(token)
        answer = generation.tokens[:-1] if token == self.eos_id else generation.tokens
        text = self.tokenizer.decode(answer, skip_special_tokens=True)
        stops = generation.parameters.stop
        found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
        if found:
            return self._finish(generation, serving.FINISH_STOP, text=text[: min(found)])
        if token == self.eos_id:
            return self._finish(generation, serving.FINISH_STOP, text=text)
        if len(generation.tokens) >= generation.max_tokens:
            return self._finish(generation, serving.FINISH_LENGTH, text=text)
        end = len(text.rstrip("\ufffd"))  # a partial UTF-8 character waits for its next byte
        end -= _pending_stop(text[:end], stops)  # so does what may still become a stop string
        if end > generation.sent:
            self._send(generation, text[generation.sent : end], "")
            generation.sent = end
        return False

    def _finish(self, generation: Generation, reason: str, *, text: str | None = None, error: str = "") -> bool:
        """Send the last chunk (the text not sent yet, the reason); True."""
        if generation.finished:
            return True
        generation.finished = True
        rest = text[generation.sent :] if text is not None else ""
        generation.sent += len(rest)
        first, last = generation.first_token_at, generation.last_token_at
        self._send(
            generation,
            rest,
            reason,
            error=error,
            ttft_s=None if first is None else first - generation.submitted,
            decode_s=0.0 if first is None or last is None else last - first,
        )
        return True

    def _send(self, generation: Generation, text: str, reason: str, **final: Any) -> None:
        chunk = Chunk(
            text=text,
            finish_reason=reason,
            prompt_tokens=len(generation.prompt),
            completion_tokens=len(generation.tokens),
            **final,
        )
        try:
            generation.sink(chunk)
        except Exception:  # the client is gone: stop at the next step
            generation.cancel_requested = True


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run the body with ``threads`` torch threads (0: as they are), then put the count back.
    Torch's count is per process; only the scheduler's thread computes in this process."""
    before = torch.get_num_threads()
    if threads <= 0 or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` (a mask [rows, n] or cache [rows, heads, n, dim]) with zero columns on the left
    up to ``width`` along its sequence axis."""
    axis = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def _select(cache: Any, mask: torch.Tensor, rows: list[int]) -> tuple[Any, torch.Tensor]:
    """Only ``rows`` of a batch cache and its mask, without the columns none of them uses."""
    index = torch.tensor(rows, device=mask.device)
    mask = mask.index_select(0, index)
    start = int(mask.any(dim=0).nonzero()[0])
    layers = [
        (layer.keys.index_select(0, index)[:, :, start:], layer.values.index_select(0, index)[:, :, start:])
        for layer in cache.layers
    ]
    return _cache_of(layers), mask[:, start:]


def _cache_of(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=layers)


def _sample(probabilities: torch.Tensor, top_p: float, generator: torch.Generator | None) -> int:
    """A token drawn from the smallest set of most likely tokens whose mass reaches ``top_p``."""
    if top_p < 1.0:
        ordered, order = torch.sort(probabilities, descending=True)
        keep = (torch.cumsum(ordered, dim=0) - ordered) < top_p  # the first token is always kept
        probabilities = torch.zeros_like(probabilities).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probabilities, 1, generator=generator))


def _pending_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop string (it may yet complete it)."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest
