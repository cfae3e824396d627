"""Records for the demo: BANKING77 when the shared data is present, else a project-made generator
of realistic support requests; some carry PII, some are malformed on purpose."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

# Fallback generator: a handful of intents a bank's support desk sees every day.
_TEMPLATES: dict[str, list[str]] = {
    "card_arrival": [
        "When will my new card arrive?",
        "I ordered a card {n} days ago and it is still not here",
        "How long does card delivery take?",
        "My card has not arrived yet, what should I do?",
        "Is there a way to track the card you sent me?",
    ],
    "lost_or_stolen_card": [
        "I lost my card yesterday",
        "Someone stole my wallet with my card in it",
        "Please block my card, I cannot find it",
        "My card was stolen {n} hours ago",
        "What do I do if my card is lost?",
    ],
    "exchange_rate": [
        "What exchange rate do you use?",
        "How much is {n} euros in dollars with you?",
        "Why was the exchange rate different from the one online?",
        "Is the rate fixed on weekends?",
        "Where can I see today's exchange rates?",
    ],
    "transfer_not_received_by_recipient": [
        "My friend has not received the {n} pounds I sent",
        "The transfer shows as done but the recipient has nothing",
        "Money I sent {n} days ago never arrived",
        "Why hasn't my transfer landed?",
        "Recipient says the payment is missing",
    ],
    "top_up_failed": [
        "My top up failed",
        "I tried to add {n} dollars and it was declined",
        "Why did my top-up not go through?",
        "Top up keeps failing with my debit card",
        "The app says top up failed, help",
    ],
    "pin_blocked": [
        "My PIN is blocked",
        "I entered the wrong PIN {n} times and now it is locked",
        "How can I unblock my PIN?",
        "Card PIN got blocked at the ATM",
        "Unlock my pin please",
    ],
}
_PREFIXES = ["", "Hi, ", "Hello! ", "Good morning, ", "Hey team, ", "Quick question: "]
_SUFFIXES = ["", " Thanks.", " Thank you!", " Please help.", " Cheers", " This is urgent."]

PII_SNIPPETS = (
    " You can reach me at jane.doe@example.com.",
    " Call me back on +44 20 7946 0958.",
    " My card number is 4111 1111 1111 1111.",
    " My IBAN is GB82 WEST 1234 5698 7654 32.",
    " My name is Maria Gonzalez.",
)


@dataclass(frozen=True)
class DemoRecord:
    text: str
    label: str
    has_pii: bool = False


def banking77(folder: Path, *, labels: int, per_label: int, seed: int, split: str = "train") -> list[DemoRecord]:
    """``per_label`` examples of each of the first ``labels`` intents of BANKING77's ``split``."""
    with (folder / f"{split}.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = sorted({row["category"] for row in rows})[:labels]
    rng = random.Random(seed)
    records = []
    for label in chosen:
        texts = [row["text"] for row in rows if row["category"] == label]
        rng.shuffle(texts)
        records += [DemoRecord(text, label) for text in texts[:per_label]]
    rng.shuffle(records)
    return records


def generated(*, labels: int, per_label: int, seed: int) -> list[DemoRecord]:
    """Distinct synthetic support requests (used when BANKING77 is not available)."""
    rng = random.Random(seed)
    records: list[DemoRecord] = []
    for label in list(_TEMPLATES)[:labels]:
        seen: set[str] = set()
        for _ in range(per_label * 50):  # bounded: templates x prefixes x suffixes x numbers is finite
            if len(seen) == per_label:
                break
            text = rng.choice(_PREFIXES) + rng.choice(_TEMPLATES[label]).format(n=rng.randint(2, 99))
            text += rng.choice(_SUFFIXES)
            if text.lower() not in seen:
                seen.add(text.lower())
                records.append(DemoRecord(text, label))
    rng.shuffle(records)
    return records


def with_pii(records: list[DemoRecord], *, share: float, seed: int) -> list[DemoRecord]:
    """Plant PII in a share of the records (ingestion must redact it before anything is stored)."""
    rng = random.Random(seed)
    return [
        DemoRecord(r.text + rng.choice(PII_SNIPPETS), r.label, True) if rng.random() < share else r for r in records
    ]


OUT_OF_SCOPE = "out_of_scope"
"""The label feedback gives requests the bank's assistant was never meant to answer."""

_OTHER_DOMAINS: tuple[str, ...] = (
    "What time does the pharmacy on {place} open on Sunday?",
    "Book me a table for {n} at the Italian place near {place}",
    "Is my parcel from the online shop delayed again?",
    "Recommend a good laptop for gaming under {n}00 pounds",
    "How do I reset the wifi router in the living room?",
    "Can I bring my dog on the train to {place}?",
    "My phone contract renews in {n} days, can I switch plans?",
    "The hotel in {place} charged me for a minibar I never used",
    "Which vaccine do I need before travelling to {place}?",
    "My flight to {place} was cancelled, how do I rebook?",
    "The delivery driver left my groceries at the wrong door",
    "How many loyalty points do I need for a free coffee?",
    "Can you fix the heating in flat {n}? It stopped working",
    "My kid's school bus was {n} minutes late again",
    "Why is my electricity meter reading so high this month?",
    "Cancel my gym membership from next month",
)
_PLACES = ("Camden", "Leeds", "the station", "Main Street", "Lisbon", "Berlin", "the airport", "Dublin")


def drifted(records: list[DemoRecord], *, seed: int, out_of_scope_share: float = 0.5) -> list[DemoRecord]:
    """Traffic unlike the training data, with the true labels feedback would give: requests from
    other domains (``out_of_scope``, a topic the model never saw) and the rest in new, noisy
    phrasing (typos, shouting, filler) of the original intents."""
    rng = random.Random(seed)
    out: list[DemoRecord] = []
    for record in records:
        if rng.random() < out_of_scope_share:
            template = rng.choice(_OTHER_DOMAINS)
            text = rng.choice(_PREFIXES) + template.format(n=rng.randint(2, 40), place=rng.choice(_PLACES))
            out.append(DemoRecord(text + rng.choice(_SUFFIXES), OUT_OF_SCOPE))
        else:
            out.append(DemoRecord(_noisy(record.text, rng), record.label))
    return out


def _noisy(text: str, rng: random.Random) -> str:
    letters = []
    for char in text:
        roll = rng.random()
        if char.isalpha() and roll < 0.06:
            continue  # dropped letter
        letters.append(char.upper() if roll > 0.75 else char)
    return "ummm so " + "".join(letters) + rng.choice((" !!!", " ??", " asap pls", " ..."))
