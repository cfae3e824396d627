"""Loading a model version from the artifact store, checked against its manifest, as a ``Scorer``."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmops_evaluation.domain.generation import Answer
from llmops_evaluation.errors import ModelUnavailable
from llmops_models import ArtifactMissing, ManifestMismatch, ModelRegistry
from llmops_models.kinds import ModelKind, Predictor, UnknownKind, kind_of
from llmops_storage import ArtifactStore


class PredictorScorer:
    """A loaded model version (of any kind) behind the ``Scorer`` interface."""

    def __init__(self, predictor: Predictor, *, optimized: Predictor | None = None) -> None:
        self._predictor = predictor
        self.optimized = PredictorScorer(optimized) if optimized is not None else None
        """The version's optimized serving format (what Triton serves on CPU), when it has one."""

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        return self._predictor.predict(texts)

    def latencies_ms(self, texts: Sequence[str]) -> list[float]:
        self._predictor.predict(texts[:2])  # the first calls are slow (warm-up), not the model
        latencies = []
        for text in texts:
            started = time.perf_counter()
            self._predictor.predict([text])
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies


def kind_of_version(store: ArtifactStore, model_name: str, version: int) -> ModelKind | None:
    """The kind a published version's manifest names; None when there is no readable manifest (the
    download reports that); ``ModelUnavailable("unknown_kind")`` for a kind this platform lacks."""
    try:
        manifest = ModelRegistry(store).manifest(model_name, version)
    except (OSError, ValueError):
        return None
    try:
        return kind_of(manifest)
    except UnknownKind as error:
        raise ModelUnavailable("unknown_kind", f"{model_name} version {version}: {error}") from error


def download(store: ArtifactStore, model_name: str, version: int, workdir: Path) -> tuple[dict[str, Any], Path]:
    """Download a version and verify every file's hash against its manifest; the manifest and the
    folder, ``ModelUnavailable`` otherwise."""
    registry = ModelRegistry(store)
    folder = Path(tempfile.mkdtemp(prefix=f"{model_name}-{version}-", dir=workdir))
    try:
        return registry.download_verified(model_name, version, folder), folder
    except ArtifactMissing as error:
        raise ModelUnavailable("artifact_missing", str(error)) from error
    except ManifestMismatch as error:
        raise ModelUnavailable("artifact_corrupt", error.detail) from error


def load_scorer(store: ArtifactStore, model_name: str, version: int, workdir: Path) -> PredictorScorer:
    """Download, verify every file's hash against the manifest, and load; ``ModelUnavailable`` otherwise."""
    manifest, folder = download(store, model_name, version, workdir)
    try:
        kind = kind_of(manifest)
    except UnknownKind as error:
        raise ModelUnavailable("unknown_kind", f"{model_name} version {version}: {error}") from error
    try:
        optimized = kind.load_optimized_predictor(folder) if manifest.get("optimized") else None
        return PredictorScorer(kind.load_predictor(folder, device="cpu"), optimized=optimized)
    except Exception as error:  # a model that hashes right but cannot load is still unusable
        raise ModelUnavailable(
            "artifact_corrupt", f"{ModelRegistry(store).uri(model_name, version)} cannot be loaded: {error!r}"
        ) from error


class GeneratorModel:
    """A loaded causal_lm version behind the domain's ``Generator`` interface."""

    def __init__(self, predictor: Any, manifest: dict[str, Any]) -> None:
        self._predictor = predictor
        self.manifest = manifest

    def generate(
        self, messages_batch: Sequence[Sequence[dict[str, str]]], *, max_new_tokens: int, batch_size: int
    ) -> list[Answer]:
        generations = self._predictor.generate(messages_batch, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return [
            Answer(
                text=g.text,
                output_tokens=g.output_tokens,
                ttft_ms=g.ttft_ms,
                latency_ms=g.latency_ms,
                tokens_per_s=g.tokens_per_s,
                mean_token_probability=g.mean_token_probability,
            )
            for g in generations
        ]

    def answer_logprobs(
        self, prompts: Sequence[Sequence[dict[str, str]]], answers: Sequence[str], *, batch_size: int
    ) -> list[float]:
        """log p(answer | prompt), summed over the answer's tokens, with the chat template and
        truncation of training (the kind's ``logprobs``), in the dtype the model generates in."""
        from llmops_models.kinds.causal_lm.logprobs import encode_answer, score_answers

        loaded = self._predictor.model  # network.LoadedCausalLm
        encoded = [
            encode_answer(loaded.tokenizer, prompt, answer, max_length=loaded.max_prompt_tokens)
            for prompt, answer in zip(prompts, answers, strict=True)
        ]
        kept = [(i, example) for i, example in enumerate(encoded) if example is not None]
        scores = score_answers(
            loaded.model,
            [example for _, example in kept],
            pad_id=int(loaded.tokenizer.pad_token_id),
            batch_size=batch_size,
            device=loaded.device,
            dtype=loaded.dtype,
        )
        result = [float("-inf")] * len(encoded)  # an answer with no token left within the length: never preferred
        for (i, _), score in zip(kept, scores, strict=True):
            result[i] = score
        return result


def load_generator(store: ArtifactStore, model_name: str, version: int, workdir: Path) -> GeneratorModel:
    """Download and verify a causal_lm version, check that its adapter was trained on the base
    model this machine has (the lineage's ``base_model_weights_hash`` against the local base's
    sha256: ``base_model_mismatch`` otherwise, since an adapter applied to other weights answers
    nonsense), and load it."""
    from llmops_models.kinds.causal_lm.network import BaseModelNotFound, base_model_hash

    manifest, folder = download(store, model_name, version, workdir)
    lineage = dict(manifest.get("lineage") or {})
    base_model, trained_on = str(lineage.get("base_model", "")), str(lineage.get("base_model_weights_hash", ""))
    try:
        in_use = base_model_hash(base_model)
    except BaseModelNotFound as error:
        raise ModelUnavailable("base_model_mismatch", f"{model_name} version {version}: {error}") from error
    if trained_on != in_use:
        raise ModelUnavailable(
            "base_model_mismatch",
            f"{model_name} version {version} was trained on base model {base_model!r} with weights "
            f"{trained_on or '?'}; the base model here has {in_use}",
        )
    try:
        return GeneratorModel(kind_of(manifest).load_predictor(folder, device="cpu"), manifest)
    except Exception as error:  # a model that hashes right but cannot load is still unusable
        raise ModelUnavailable(
            "artifact_corrupt", f"{ModelRegistry(store).uri(model_name, version)} cannot be loaded: {error!r}"
        ) from error
