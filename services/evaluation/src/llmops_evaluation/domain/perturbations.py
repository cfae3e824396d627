"""Seeded text perturbations for the robustness metric: typos, case and punctuation."""

from __future__ import annotations

import random
import string

PERTURBATIONS = ("typo", "case", "punctuation")


def perturb(text: str, *, kind: str, rng: random.Random) -> str:
    """One perturbed copy of ``text``; deterministic for a seeded ``rng``."""
    if kind == "case":
        return rng.choice([text.lower(), text.upper(), text.swapcase()])
    if kind == "punctuation":
        stripped = text.translate(str.maketrans("", "", string.punctuation))
        return stripped if rng.random() < 0.5 else stripped + rng.choice(["!!", "??", "...", " ?"])
    if kind == "typo":
        characters = list(text)
        letters = [i for i, c in enumerate(characters) if c.isalpha()]
        for _ in range(max(1, len(letters) // 15)):
            if len(letters) < 2:
                break
            i = rng.choice(letters[:-1])
            operation = rng.randrange(3)
            if operation == 0:  # swap with the next character
                characters[i], characters[i + 1] = characters[i + 1], characters[i]
            elif operation == 1:  # drop
                characters[i] = ""
            else:  # replace by a neighbour letter
                characters[i] = rng.choice(string.ascii_lowercase)
        return "".join(characters)
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {PERTURBATIONS}")


def perturbed_set(texts: list[str], *, seed: int) -> list[str]:
    """Each text perturbed once, cycling through the perturbation kinds."""
    rng = random.Random(seed)
    return [perturb(text, kind=PERTURBATIONS[i % len(PERTURBATIONS)], rng=rng) for i, text in enumerate(texts)]
