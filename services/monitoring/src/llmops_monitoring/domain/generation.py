"""Generations (``causal_lm`` models) in a window: what was asked, what was answered, what users
said about it, and every signal of the window against the version's training conversations.

Signals are scores where higher means worse:

* **prompt drift** against the prompts of the instructions snapshot the version was trained on
  (the last user turns of its held-out conversations; OOV against its training split): embedding
  drift (Evidently's classifier drift method on MiniLM embeddings, as for classifiers) and
  Evidently ``ValueDrift`` of prompt length and OOV share;
* **output drift and quality**: ``ValueDrift`` of the answers' length against the snapshot's answers;
  shares of refusals, of answers outside the task's declared format, of answers with PII and of
  generations cut at ``max_tokens``; the 95th percentile of the time to first token and the median
  milliseconds per token;
* **feedback**: thumbs-down share, corrected share and the share of answers a correction differs
  from (``exact_match``), on the generations of the window and those whose feedback came late.

Language is not a signal: Evidently 0.7.23 has no language descriptor, and the usual detectors
download models or data at first use (this platform runs offline).
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from llmops_events.v1 import InferenceLogged
from llmops_models.kinds.causal_lm.answers import THUMBS_DOWN_MAX_RATING, exact_match, in_format
from llmops_monitoring.domain.analysis import MIN_EMBEDDING_SAMPLE, embedding_drift, embedding_sample_rows, oov_share
from llmops_monitoring.domain.ports import Encoder, GenerationReference
from llmops_monitoring.domain.windows import Window, WindowBook, WindowKey
from llmops_privacy import PiiKind

logger = logging.getLogger(__name__)

PiiFinder = Callable[[str], int]
"""How many PII findings a text holds (``llmops_privacy``'s detectors behind an adapter)."""

# Lower-case phrases that open or make a refusal, matched in the answer after ``_refusal_form``.
# Kept short and specific: "sorry" alone also starts apologies that go on to answer.
REFUSAL_PHRASES: tuple[str, ...] = (
    "i'm sorry, but",
    "i am sorry, but",
    "sorry, i can't",
    "sorry, i cannot",
    "i cannot help",
    "i can't help",
    "i cannot assist",
    "i can't assist",
    "i cannot answer",
    "i can't answer",
    "i cannot provide",
    "i can't provide",
    "i'm unable to",
    "i am unable to",
    "i'm not able to",
    "i am not able to",
    "i won't be able to",
    "as an ai",
    "i don't have access",
    "i do not have access",
)
PII_PLACEHOLDERS: tuple[str, ...] = tuple(kind.placeholder for kind in PiiKind)
"""What the gateway leaves where it redacted PII from an answer before logging it."""

GENERATION_DRIFT_METHODS: dict[str, str] = {
    "prompt_length": "wasserstein",
    "prompt_oov_share": "wasserstein",
    "output_length": "wasserstein",
}
SHARE_COLUMNS = ("refusal", "format_invalid", "pii", "length_finish")
"""Per-generation 0/1 columns whose means the Evidently report shows for window and reference."""


@dataclass(slots=True)
class GenerationObservation:
    """One served generation; ``rating`` and ``corrected_answer`` are filled in when feedback arrives."""

    request_id: str
    prompt: str
    """The last user turn (redacted)."""
    output: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float | None
    tokens_per_s: float | None
    served_at: datetime
    rating: int | None = None
    corrected_answer: str | None = None

    @property
    def has_feedback(self) -> bool:
        return self.rating is not None or self.corrected_answer is not None


def generation_observation(event: InferenceLogged) -> GenerationObservation:
    """The generation of an ``inference.logged`` event whose ``generation`` is set; the prompt is the
    last user turn."""
    generation = event.generation
    if generation is None:
        raise ValueError(f"inference event {event.request_id} is not a generation")
    users = [turn.content for turn in generation.messages if turn.role == "user"]
    return GenerationObservation(
        request_id=event.request_id,
        prompt=users[-1] if users else event.text,
        output=generation.output,
        finish_reason=generation.finish_reason,
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        time_to_first_token_ms=generation.time_to_first_token_ms,
        tokens_per_s=generation.tokens_per_s,
        served_at=event.served_at,
    )


def _refusal_form(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    return re.sub(r"\s+", " ", text).strip()


def is_refusal(answer: str) -> bool:
    """Whether ``answer`` contains one of ``REFUSAL_PHRASES`` (case, curly quotes and spacing aside)."""
    form = _refusal_form(answer)
    return any(phrase in form for phrase in REFUSAL_PHRASES)


def has_pii(answer: str, find_pii: PiiFinder | None) -> bool:
    """A placeholder the gateway put where it redacted PII, or PII the detectors still find."""
    if any(placeholder in answer for placeholder in PII_PLACEHOLDERS):
        return True
    return find_pii is not None and find_pii(answer) > 0


def share(flags: Sequence[bool]) -> float:
    return float(sum(flags)) / len(flags) if flags else 0.0


def output_signals(
    observations: Sequence[GenerationObservation],
    *,
    output_format: tuple[tuple[str, ...] | None, Any | None] | None,
    find_pii: PiiFinder | None,
) -> tuple[dict[str, float], dict[str, list[bool]]]:
    """The output quality shares and timing scores of a window, and the per-generation flags.

    ``output_format``: the task's declared ``(labels, json_schema)``, None when it declares none
    (then ``format_invalid_share`` is absent). Timing scores are absent when no generation has them.
    """
    outputs = [o.output for o in observations]
    flags: dict[str, list[bool]] = {
        "refusal": [is_refusal(text) for text in outputs],
        "pii": [has_pii(text, find_pii) for text in outputs],
        "length_finish": [o.finish_reason == "length" for o in observations],
    }
    signals = {
        "refusal_share": share(flags["refusal"]),
        "pii_share": share(flags["pii"]),
        "length_finish_share": share(flags["length_finish"]),
    }
    if output_format is not None:
        labels, schema = output_format
        flags["format_invalid"] = [not in_format(text, labels, schema) for text in outputs]
        signals["format_invalid_share"] = share(flags["format_invalid"])
    signals.update(timing_signals(observations))
    return signals, flags


def timing_signals(observations: Sequence[GenerationObservation]) -> dict[str, float]:
    """``ttft_p95_ms`` and ``ms_per_token`` (median of 1000 / tokens per second) where measured."""
    signals: dict[str, float] = {}
    ttft = [o.time_to_first_token_ms for o in observations if o.time_to_first_token_ms is not None]
    if ttft:
        signals["ttft_p95_ms"] = float(np.percentile(ttft, 95))
    # A rate of 0 says nothing measurable (no time between tokens); None: below two tokens.
    rates = [o.tokens_per_s for o in observations if o.tokens_per_s]
    if rates:
        signals["ms_per_token"] = float(np.median([1000.0 / r for r in rates]))
    return signals


def feedback_signals(
    observations: Sequence[GenerationObservation],
) -> tuple[dict[str, float], dict[str, float]]:
    """Feedback signals and figures over ``observations`` (a window's generations plus those whose
    feedback came after their window closed).

    * ``thumbs_down_share``: rated ``<= THUMBS_DOWN_MAX_RATING`` among the rated (absent without ratings);
    * ``corrected_share``: generations with a corrected answer among all;
    * ``correction_mismatch_share``: generations whose answer differs from its correction
      (``exact_match``) among all: a correction equal to the answer is a confirmation.

    Figures: ``with_feedback``, ``rated``, ``corrected``, ``corrected_exact_match`` (exact match of
    the answers against their corrections, when there are corrections).
    """
    total = len(observations)
    rated = [o for o in observations if o.rating is not None]
    corrected = [o for o in observations if o.corrected_answer is not None]
    matches = [exact_match(o.output, str(o.corrected_answer)) for o in corrected]
    figures: dict[str, float] = {
        "with_feedback": float(sum(o.has_feedback for o in observations)),
        "rated": float(len(rated)),
        "corrected": float(len(corrected)),
    }
    signals: dict[str, float] = {}
    if rated:
        down = sum(o.rating is not None and o.rating <= THUMBS_DOWN_MAX_RATING for o in rated)
        signals["thumbs_down_share"] = down / len(rated)
        figures["mean_rating"] = float(np.mean([o.rating for o in rated]))
    if total:
        signals["corrected_share"] = len(corrected) / total
        signals["correction_mismatch_share"] = (len(corrected) - sum(matches)) / total
    if corrected:
        figures["corrected_exact_match"] = sum(matches) / len(corrected)
    return signals, figures


def generation_frame(observations: Sequence[GenerationObservation]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": [o.request_id for o in observations],
            "prompt": [o.prompt for o in observations],
            "output": [o.output for o in observations],
        }
    )


@dataclass
class GenerationAnalysis:
    """Scores of one generation window, and the Evidently snapshot they came from."""

    signals: dict[str, float]
    drift_snapshot: Any
    with_feedback: int
    late_feedback: int
    embedding_sample: int
    quality: dict[str, float] = field(default_factory=dict)
    """Feedback figures (ratings, corrections, exact match against corrections)."""
    seconds: dict[str, float] = field(default_factory=dict)
    quality_snapshot: Any | None = None
    """Always None: kept so a window's report is written the same way for both kinds."""

    @property
    def labelled(self) -> int:
        """Generations with feedback: what gates the feedback signals (``min_feedback``)."""
        return self.with_feedback

    @property
    def late_labelled(self) -> int:
        return self.late_feedback


def _evidently_dataset(frame: pd.DataFrame, flags: dict[str, list[bool]], vocabulary: frozenset[str]) -> Any:
    from evidently import DataDefinition, Dataset
    from evidently.descriptors import TextLength

    data = frame[["prompt", "output"]].astype(str).copy()
    data["prompt_oov_share"] = oov_share(data["prompt"].tolist(), vocabulary)
    for column in SHARE_COLUMNS:
        if column in flags:
            data[column] = [float(flag) for flag in flags[column]]
    numerical = ["prompt_oov_share", *[c for c in SHARE_COLUMNS if c in flags]]
    return Dataset.from_pandas(
        data,
        data_definition=DataDefinition(text_columns=["prompt", "output"], numerical_columns=numerical),
        descriptors=[TextLength("prompt", alias="prompt_length"), TextLength("output", alias="output_length")],
    )


def analyse_generations(
    observations: Sequence[GenerationObservation],
    reference: GenerationReference,
    *,
    encoder: Encoder,
    thresholds: dict[str, float],
    embedding_sample_size: int,
    find_pii: PiiFinder | None,
    late_feedback: Sequence[GenerationObservation] = (),
    stride: int | None = None,
) -> GenerationAnalysis:
    """Every signal of a generation window (see the module docstring)."""
    from evidently import Report
    from evidently.metrics import MeanValue, ValueDrift

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    signals, flags = output_signals(observations, output_format=reference.output_format, find_pii=find_pii)
    seconds["output_signals"] = time.perf_counter() - started

    started = time.perf_counter()
    # The reference's answers were redacted at ingestion: placeholders are what PII looks like there.
    reference_frame = pd.DataFrame({"prompt": reference.prompts, "output": reference.answers})
    _, reference_flags = output_signals(
        [
            GenerationObservation("", prompt, answer, "stop", 0, 0, None, None, datetime.min)
            for prompt, answer in zip(reference.prompts, reference.answers, strict=True)
        ],
        output_format=reference.output_format,
        find_pii=None,
    )
    metrics: list[Any] = [
        ValueDrift(column=column, method=method, threshold=thresholds.get(column))
        for column, method in GENERATION_DRIFT_METHODS.items()
    ]
    metrics += [MeanValue(column=column) for column in SHARE_COLUMNS if column in flags]
    drift_snapshot = Report(metrics).run(
        _evidently_dataset(generation_frame(observations), flags, reference.vocabulary),
        _evidently_dataset(reference_frame, reference_flags, reference.vocabulary),
    )
    for metric in drift_snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        column = config.get("column")
        drift = config.get("type", "").endswith("ValueDrift") and column in GENERATION_DRIFT_METHODS
        if drift and metric.get("value") is not None:
            signals[column] = float(metric["value"])
    seconds["evidently_drift"] = time.perf_counter() - started

    started = time.perf_counter()
    prompts = [o.prompt for o in observations]
    sample = prompts[embedding_sample_rows(len(prompts), embedding_sample_size, stride=stride)]
    if len(sample) >= MIN_EMBEDDING_SAMPLE and len(reference.embeddings) >= MIN_EMBEDDING_SAMPLE:
        current = encoder.encode(sample)
        seconds["embed"] = time.perf_counter() - started
        started = time.perf_counter()
        signals["prompt_embedding"] = embedding_drift(current, reference.embeddings)
        seconds["embedding_drift"] = time.perf_counter() - started

    covered = list(observations) + list(late_feedback)
    feedback, quality = feedback_signals(covered)
    signals.update(feedback)
    return GenerationAnalysis(
        signals=signals,
        drift_snapshot=drift_snapshot,
        with_feedback=int(quality["with_feedback"]),
        late_feedback=len(late_feedback),
        embedding_sample=len(sample),
        quality=quality,
        seconds=seconds,
    )


class GenerationFeedbackJoin:
    """Joins ratings and corrections to served generations by request id, in bounded memory: the
    same three cases as ``LabelJoin`` (in an open window, late for the next report of the version,
    early until the generation arrives); the oldest entries are forgotten beyond ``max_tracked``."""

    def __init__(self, *, max_tracked: int = 100_000) -> None:
        self._max_tracked = max_tracked
        self._served: OrderedDict[str, tuple[Window[GenerationObservation], GenerationObservation]] = OrderedDict()
        self._early: OrderedDict[str, tuple[int | None, str | None]] = OrderedDict()
        self._late: dict[WindowKey, list[GenerationObservation]] = {}

    def served(self, window: Window[GenerationObservation], observation: GenerationObservation) -> None:
        early = self._early.pop(observation.request_id, None)
        if early is not None:
            _apply(observation, *early)
        self._served[observation.request_id] = (window, observation)
        _trim(self._served, self._max_tracked)

    def feedback(
        self,
        request_id: str,
        *,
        rating: int | None,
        corrected_answer: str | None,
        book: WindowBook[GenerationObservation],
    ) -> str:
        """Record a rating and/or correction; returns where it went: ``window``, ``late`` or ``early``."""
        entry = self._served.get(request_id)
        if entry is None:
            previous = self._early.get(request_id, (None, None))
            self._early[request_id] = (
                rating if rating is not None else previous[0],
                corrected_answer if corrected_answer is not None else previous[1],
            )
            _trim(self._early, self._max_tracked)
            return "early"
        window, observation = entry
        had_feedback = observation.has_feedback
        _apply(observation, rating, corrected_answer)
        if book.is_open(window):
            return "window"
        if not had_feedback:
            late = self._late.setdefault(window.key, [])
            late.append(observation)
            if len(late) > self._max_tracked:
                del late[: len(late) - self._max_tracked]
        return "late"

    def take_late(self, key: WindowKey) -> list[GenerationObservation]:
        """Generations of ``key`` whose feedback came after their window closed, since the last call."""
        return self._late.pop(key, [])


def _apply(observation: GenerationObservation, rating: int | None, corrected_answer: str | None) -> None:
    if rating is not None:
        observation.rating = rating
    if corrected_answer is not None:
        observation.corrected_answer = corrected_answer


def _trim(entries: OrderedDict[str, Any], limit: int) -> None:
    while len(entries) > limit:
        entries.popitem(last=False)
