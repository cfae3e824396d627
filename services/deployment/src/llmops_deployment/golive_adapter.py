"""A version of kind ``causal_lm`` goes live as a LoRA adapter on the running base: no Triton model
of its own, one folder in the causal-LM model's adapters folder.

1. Its verified artifact is downloaded (``artifact_missing``, ``artifact_corrupt``).
2. Its ``training_config.json`` must name the base weights the Triton model serves: the
   ``base_model_hash`` parameter of the loaded model's configuration, or of the one about to be
   written (``base_model_mismatch``): an adapter on other weights answers nonsense.
3. The base Triton model is written and loaded if it is not loaded yet: once, never again while it
   is ready, so adding an adapter never reloads it (``load_failed``, ``load_timeout``).
4. The artifact's ``adapter/`` folder is copied to ``<adapters_dir>/<triton_name(model, version)>/``.
5. A few conversations of the version's validation split are generated through Triton's streaming
   API with ``ADAPTER`` set (the first loads the adapter into the model): every stream must end
   normally, and not every answer may be empty (``smoke_test_failed``).

Taking it down removes its folder (the model evicts the adapter once idle); the base stays.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.triton import raise_if_unreachable
from llmops_deployment.adapters.triton_pool import TritonPool
from llmops_deployment.domain.generation import base_model_problem, generation_problems
from llmops_deployment.errors import FailureReason, GoLiveFailed, first_line
from llmops_deployment.settings import DeploymentSettings
from llmops_models.kinds import CAUSAL_LM, TritonModel
from llmops_models.kinds.causal_lm import serving as lm_serving
from llmops_serving import triton_name

GENERIC_PROMPTS = [
    [{"role": "user", "content": "Hello! What can you help me with?"}],
    [{"role": "user", "content": "My card has not arrived yet. What should I do?"}],
    [{"role": "user", "content": "Summarise in one sentence: the meeting moved to Friday at noon."}],
]
"""Smoke-test prompts after the version's own validation conversations (or alone, without them)."""


class AdapterGoLive:
    def __init__(self, *, settings: DeploymentSettings, triton: TritonPool, artifacts: Artifacts) -> None:
        self._settings = settings
        self._triton = triton
        self._artifacts = artifacts
        self.base_model: Callable[[], TritonModel] = self._base_triton_model
        """The base's Triton model as it would be written now (blocking: it may dequantize the
        GGUF into the cache once, and hashes it); replaceable in tests."""
        self.base_hash: Callable[[str], str] = _base_model_hash
        """The weights hash of a base model name, for a loaded model whose configuration names none."""
        self._base_lock = asyncio.Lock()
        """One check-and-load of the base at a time (deployments of two models run concurrently):
        two loads of a model Triton is loading would reload it."""

    async def __call__(self, model_name: str, version: int) -> None:
        name = triton_name(model_name, version)
        with tempfile.TemporaryDirectory(prefix="deploy-adapter-") as scratch:
            folder = Path(scratch) / "artifact"
            training_config = await asyncio.to_thread(self._artifacts.fetch, model_name, version, folder)
            async with self._base_lock:
                base: TritonModel | None = None
                if await self._base_ready():
                    served = await self._loaded_hash(version)
                else:
                    base = await self._new_base(version)
                    served = base.config.parameters[lm_serving.BASE_MODEL_HASH_PARAMETER].string_value
                problem = base_model_problem(training_config, served)
                if problem is not None:
                    raise GoLiveFailed(FailureReason.BASE_MODEL_MISMATCH, problem, version=version)
                if base is not None:
                    await self._load_base(base, version)
            if not self._artifacts.adapter_installed(name):
                await asyncio.to_thread(self._artifacts.install_adapter, name, folder)
        await self._smoke_test(model_name, version)

    async def take_down(self, name: str) -> None:
        """Remove an adapter's folder; the base model is never touched."""
        await asyncio.to_thread(self._artifacts.uninstall_adapter, name)

    # ---- the base ------------------------------------------------------------------------------

    async def _base_ready(self) -> bool:
        base = self._settings.causal_lm_model
        try:
            return await self._triton.is_ready(base)
        except Exception as error:
            await raise_if_unreachable(self._triton, error, f"checking {base}")
            raise

    async def _loaded_hash(self, version: int) -> str:
        """The weights the loaded base serves, as its configuration says (for a model written
        without the hash parameter, the hash of the base model it names)."""
        base = self._settings.causal_lm_model
        try:
            parameters = await self._triton.parameters(base)
        except Exception as error:
            await raise_if_unreachable(self._triton, error, f"reading the configuration of {base}")
            raise GoLiveFailed(FailureReason.LOAD_FAILED, first_line(error), version=version) from error
        if parameters.get(lm_serving.BASE_MODEL_HASH_PARAMETER):
            return parameters[lm_serving.BASE_MODEL_HASH_PARAMETER]
        base_model = parameters.get(lm_serving.BASE_MODEL_PARAMETER) or self._settings.causal_lm_base_model
        try:
            return await asyncio.to_thread(self.base_hash, base_model)
        except (OSError, ValueError) as error:
            raise GoLiveFailed(
                FailureReason.LOAD_FAILED, f"the base model {base_model!r} cannot be found: {error}", version=version
            ) from error

    async def _new_base(self, version: int) -> TritonModel:
        try:
            return await asyncio.to_thread(self.base_model)
        except (OSError, ValueError) as error:
            base_model = self._settings.causal_lm_base_model
            raise GoLiveFailed(
                FailureReason.LOAD_FAILED, f"the base model {base_model!r} cannot be prepared: {error}", version=version
            ) from error

    def _base_triton_model(self) -> TritonModel:
        settings = self._settings
        return CAUSAL_LM.base_triton_model(
            settings.serving_options,
            adapters_dir=settings.adapters_dir,
            name=settings.causal_lm_model,
            base_model=settings.causal_lm_base_model,
            max_adapters=settings.causal_lm_max_adapters,
            max_running=settings.causal_lm_max_running,
            max_queued=settings.causal_lm_max_queued,
            max_new_tokens=settings.causal_lm_max_new_tokens,
            max_prompt_tokens=settings.causal_lm_max_prompt_tokens,
            stream_interval_tokens=settings.causal_lm_stream_interval_tokens,
            stream_interval_ms=settings.causal_lm_stream_interval_ms,
            prefill_threads=settings.causal_lm_prefill_threads,
            precision=settings.causal_lm_precision,
        )

    async def _load_base(self, model: TritonModel, version: int) -> None:
        """Write the base model into the model repository and load it."""
        settings = self._settings
        base = settings.causal_lm_model
        settings.adapters_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._artifacts.write_model, base, model)
        timeout = settings.load_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._triton.load(base)
        except TimeoutError as error:
            await raise_if_unreachable(self._triton, error, f"loading {base}")
            raise GoLiveFailed(
                FailureReason.LOAD_TIMEOUT, f"{base} did not load in {timeout:g} s", version=version
            ) from error
        except Exception as error:
            await raise_if_unreachable(self._triton, error, f"loading {base}")
            raise GoLiveFailed(FailureReason.LOAD_FAILED, f"{base}: {first_line(error)}", version=version) from error

    # ---- the smoke test ------------------------------------------------------------------------

    async def _smoke_test(self, model_name: str, version: int) -> None:
        settings = self._settings
        name, base = triton_name(model_name, version), settings.causal_lm_model
        wanted = settings.smoke_generations
        prompts = await asyncio.to_thread(self._artifacts.conversations, model_name, version, wanted)
        prompts = (prompts + GENERIC_PROMPTS * wanted)[:wanted]
        generations = []
        for messages in prompts:
            inputs = lm_serving.generation_inputs(
                messages, adapter=name, max_tokens=settings.smoke_max_tokens, temperature=0.0
            )
            try:
                generations.append(await self._triton.generate(base, inputs, timeout_s=settings.smoke_timeout_s))
            except Exception as error:
                await raise_if_unreachable(self._triton, error, f"smoke-testing {name}")
                detail = f"no answer in {settings.smoke_timeout_s:g} s" if isinstance(error, TimeoutError) else ""
                raise GoLiveFailed(
                    FailureReason.SMOKE_TEST_FAILED, detail or first_line(error), version=version
                ) from error
        problems = generation_problems(generations, max_tokens=settings.smoke_max_tokens)
        if problems:
            raise GoLiveFailed(FailureReason.SMOKE_TEST_FAILED, "; ".join(problems), version=version)


def _base_model_hash(base_model: str) -> str:
    # Imported here: the causal-LM network module imports torch, which only this path needs.
    from llmops_models.kinds.causal_lm.network import base_model_hash

    return base_model_hash(base_model)
