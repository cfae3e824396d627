"""Offline language identification with py3langid (a small bundled model, no download)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

# Cost grows with length, and a few sentences decide the language as well as a page does.
_PREFIX = 300


class LanguageDetector:
    """From text to an ISO 639-1 code, one text at a time (``detector(text)``) or a batch at once
    (``detector.many(texts)``, ~10x cheaper per text).

    Uses its own identifier rather than py3langid's module-level one, so restricting the
    languages here affects no other user of the library in the process.

    ``many`` runs py3langid's model vectorised over the batch: its byte-level automaton steps
    every text at once with numpy (texts sorted by length, so each step touches only the texts
    still running), and the naive-Bayes scores of the whole batch are one gather-and-sum instead
    of a Python loop per byte and a matrix product per text. It reads the identifier's model
    tables (``tk_nextmove``, ``tk_output``, ``nb_ptc``, ...); a unit test checks that it agrees
    with ``classify`` text for text, so a change in the library shows up there.
    """

    def __init__(self, languages: Sequence[str] = ()) -> None:
        from py3langid.langid import MODEL_FILE, RAW_FLOOR, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
        if languages:
            identifier.set_languages(list(languages))
        self._identifier: Any = identifier
        self._floor = np.float32(RAW_FLOOR)
        self._next_move = np.frombuffer(identifier.tk_nextmove, dtype=np.dtype(identifier.tk_nextmove.typecode))
        self._row_base = np.asarray(identifier._rowbase, dtype=np.int64)
        self._output = np.asarray(identifier.tk_output, dtype=np.int64)
        self._vectorised = not identifier._norm_probs and identifier.min_confidence is None
        self._width = identifier.nb_ptc.shape[0]
        # The model's float16 weights, widened once (~60 MB): converting gathered float16 rows
        # on every batch costs more than the whole rest of the vectorised scoring.
        self._table = identifier.nb_ptc.astype(np.float32) if self._vectorised else identifier.nb_ptc

    def __call__(self, text: str) -> str:
        return str(self._identifier.classify(text[:_PREFIX])[0])

    def many(self, texts: Sequence[str]) -> list[str]:
        """The language of each text, in order (the same answers as calling the detector on each)."""
        if not texts:
            return []
        if not self._vectorised:
            return [self(text) for text in texts]
        encoded = [_encode(text[:_PREFIX]) for text in texts]
        scores = self._scores(encoded)
        classes = self._identifier.nb_classes
        return [str(classes[index]) for index in scores.argmax(axis=1).tolist()]

    def _scores(self, encoded: list[bytes]) -> np.ndarray:
        identifier = self._identifier
        count = len(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=count)
        order = np.argsort(-lengths, kind="stable")  # longest first: running texts are a prefix
        sorted_lengths = lengths[order]
        longest = int(sorted_lengths[0]) if count else 0
        buffer = np.zeros((count, max(longest, 1)), dtype=np.int64)
        mask = np.arange(max(longest, 1)) < sorted_lengths[:, None]
        buffer[mask] = np.frombuffer(b"".join(encoded[i] for i in order.tolist()), dtype=np.uint8)
        features = np.full((count, max(longest, 1)), -1, dtype=np.int64)
        # running[i] = how many texts are longer than i
        running = np.searchsorted(-sorted_lengths, -np.arange(longest), side="left")
        state = np.zeros(count, dtype=np.int64)
        for position in range(longest):
            active = int(running[position])
            current = self._next_move[self._row_base[state[:active]] + buffer[:active, position]]
            state[:active] = current
            features[:active, position] = self._output[current]
        rows, columns = np.nonzero(features >= 0)
        texts_features = rows * self._width + features[rows, columns]
        keys, counts = np.unique(texts_features, return_counts=True)
        scores = np.full((count, self._table.shape[1]), self._floor, dtype=np.float32)
        if len(keys):
            from scipy.sparse import csr_matrix

            key_rows, key_features = np.divmod(keys, self._width)
            used, column_of = np.unique(key_features, return_inverse=True)
            weights = csr_matrix((np.log1p(counts.astype(np.float32)), (key_rows, column_of)), shape=(count, len(used)))
            with_features = np.unique(key_rows)
            scores[with_features] = (weights @ self._table[used])[with_features] + identifier.nb_pc
        for first, duplicate in identifier._alias_pairs:
            scores[:, first] = np.maximum(scores[:, first], scores[:, duplicate])
            scores[:, duplicate] = self._floor
        unsorted = np.empty_like(scores)
        unsorted[order] = scores
        return unsorted


def _encode(text: str) -> bytes:
    """The bytes py3langid's model reads (its ``_encode`` for ``str``)."""
    if text.isupper():
        text = text.lower()
    return unicodedata.normalize("NFC", text).encode("utf8", errors="surrogatepass")


def language_detector(languages: Sequence[str] = ()) -> LanguageDetector:
    """A language detector; ``languages`` restricts the candidates (ISO 639-1 codes)."""
    return LanguageDetector(languages)
