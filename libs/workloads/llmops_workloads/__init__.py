"""Workloads for tests, calibration and benchmarks (never needed at run time): BANKING77 as a
snapshot, a fast stand-in classifier, and traffic that leaves the banking domain (other
domains' requests, noise, paraphrase).

The stand-in classifier (TF-IDF + logistic regression, trained in seconds) plays the served model
so tests and benchmarks need no fine-tuning run; on a real stack the served model's own
predictions arrive in the inference events and the reference uses the champion's artifacts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmops_models.snapshots import write_snapshot
from llmops_storage import ArtifactStore


def banking77(shared_data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train and test CSVs as frames with columns ``text``, ``label``."""
    folder = shared_data / "banking77"
    train = pd.read_csv(folder / "train.csv").rename(columns={"category": "label"})
    test = pd.read_csv(folder / "test.csv").rename(columns={"category": "label"})
    return train[["text", "label"]], test[["text", "label"]]


def snapshot_frame(train: pd.DataFrame, test: pd.DataFrame, *, validation_share: float = 0.2, seed: int = 13) -> Any:
    """BANKING77 as a snapshot: its train CSV split into train/validation (seeded), its test CSV as test."""
    shuffled = train.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    cut = int(len(shuffled) * (1 - validation_share))
    return pd.concat(
        [
            shuffled.iloc[:cut].assign(split="train"),
            shuffled.iloc[cut:].assign(split="validation"),
            test.assign(split="test"),
        ],
        ignore_index=True,
    )


def write_banking77_snapshot(store: ArtifactStore, shared_data: Path, *, dataset_id: str) -> pd.DataFrame:
    train, test = banking77(shared_data)
    frame = snapshot_frame(train, test)
    write_snapshot(store, frame, dataset_id=dataset_id)
    return frame


class StandInClassifier:
    """Nearest class centroid on TF-IDF (words and bigrams) with a softmax over cosine similarities:
    a served model in under a second (BANKING77 test accuracy ~0.81; confident in-domain, unsure
    on other domains, as a fine-tuned classifier is)."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], *, temperature: float = 20.0) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import normalize

        self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        features = self._vectorizer.fit_transform(list(texts))
        targets = np.asarray(list(labels))
        self._labels = np.asarray(sorted(set(targets.tolist())))
        self._centroids = normalize(
            np.vstack([np.asarray(features[targets == label].mean(axis=0)) for label in self._labels])
        )
        self._temperature = temperature

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        if not texts:
            return [], []
        scores = np.asarray(self._vectorizer.transform(list(texts)) @ self._centroids.T) * self._temperature
        probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        best = probabilities.argmax(axis=1)
        return [str(label) for label in self._labels[best]], [float(p) for p in probabilities.max(axis=1)]


_DOMAINS: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "travel": (
        [
            "can I change my {thing} to an earlier {time}",
            "my {thing} was cancelled, what are my options",
            "how much luggage can I take on the {thing}",
            "is breakfast included at the {place}",
            "I need to rebook the {thing} for {time}",
            "the {place} lost my reservation",
        ],
        {
            "thing": ["flight", "train", "ferry", "hotel booking", "rental car", "cruise"],
            "time": ["monday", "tomorrow morning", "next week", "the weekend", "tonight"],
            "place": ["hotel", "airport lounge", "hostel", "resort", "station"],
        },
    ),
    "health": (
        [
            "I have had a {symptom} for {time}, should I see a doctor",
            "can I take {drug} together with {drug}",
            "how do I book an appointment with a {doctor}",
            "my child has a {symptom} since {time}",
            "is it safe to exercise with a {symptom}",
        ],
        {
            "symptom": ["headache", "sore throat", "fever", "rash", "back pain", "cough"],
            "time": ["two days", "a week", "yesterday", "this morning"],
            "drug": ["ibuprofen", "paracetamol", "antibiotics", "aspirin", "antihistamines"],
            "doctor": ["dentist", "dermatologist", "paediatrician", "physiotherapist"],
        },
    ),
    "tech": (
        [
            "my {device} keeps restarting after the update",
            "the {app} app crashes when I open {thing}",
            "how do I reset the password of my {thing}",
            "wifi disconnects on my {device} every {time}",
            "the {device} screen is flickering",
            "cannot install the {app} update on my {device}",
        ],
        {
            "device": ["laptop", "router", "printer", "tablet", "smart tv", "phone"],
            "app": ["email", "calendar", "video", "photo", "music"],
            "thing": ["settings", "the inbox", "my account", "the camera"],
            "time": ["few minutes", "hour", "evening"],
        },
    ),
    "food": (
        [
            "my {dish} order arrived cold",
            "can you deliver {dish} to my office by {time}",
            "the restaurant forgot the {side} in my order",
            "do you have a vegan {dish}",
            "the courier left my {dish} at the wrong door",
        ],
        {
            "dish": ["pizza", "sushi", "burger", "curry", "salad", "noodles"],
            "side": ["fries", "drinks", "sauce", "dessert"],
            "time": ["noon", "seven", "lunch time"],
        },
    ),
}


def out_of_domain_texts(count: int, *, seed: int = 0) -> list[str]:
    """Requests a banking assistant was never trained on (travel, health, tech support, food delivery)."""
    rng = random.Random(seed)
    texts = []
    domains = list(_DOMAINS.values())
    for _ in range(count):
        templates, slots = rng.choice(domains)
        text = rng.choice(templates)
        while "{" in text:
            start = text.index("{")
            name = text[start + 1 : text.index("}", start)]
            text = text.replace("{" + name + "}", rng.choice(slots[name]), 1)
        texts.append(text[0].upper() + text[1:] + rng.choice(["?", ".", "", "!"]))
    return texts


def noisy(text: str, rng: random.Random, *, rate: float = 0.15) -> str:
    """Heavy keyboard noise: dropped, doubled and swapped letters, and shouting."""
    chars = list(text)
    out: list[str] = []
    for char in chars:
        roll = rng.random()
        if roll < rate / 3:
            continue
        if roll < 2 * rate / 3:
            out.append(char + char)
            continue
        if roll < rate and out:
            out[-1], char = char, out[-1]
        out.append(char)
    noisy_text = "".join(out)
    return noisy_text.upper() if rng.random() < 0.3 else noisy_text


def shifted_texts(in_domain: Sequence[str], *, share: float = 0.5, seed: int = 0) -> list[str]:
    """``in_domain`` with a ``share`` of its texts replaced: most by other domains' requests, the rest by noise."""
    rng = random.Random(seed)
    foreign = iter(out_of_domain_texts(len(in_domain), seed=seed))
    texts = []
    for text in in_domain:
        if rng.random() < share:
            texts.append(next(foreign) if rng.random() < 0.8 else noisy(text, rng))
        else:
            texts.append(text)
    return texts


def sample_texts(texts: Sequence[str], count: int, *, seed: int) -> list[str]:
    """``count`` texts drawn with replacement (replays longer than the data set)."""
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.integers(0, len(texts), size=count)]
