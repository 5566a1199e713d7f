"""The built-in demo corpus: a few hundred Alpaca-shaped rows over clearly different skills.

Every row is generated here from a seeded random source and every answer is computed, not written by
hand, so the corpus is correct by construction and needs no download. Six skills, so a clustering of it
has obvious true groups: arithmetic word problems, unit conversion, reversing words, sorting numbers,
counting letters and writing short formal sentences from templates.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from paser.common.io import write_atomic

Row = dict[str, str]

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lena"]
ITEMS = ["apples", "books", "pencils", "stamps", "marbles", "cookies", "tickets", "shells", "coins", "cards"]
WORDS = [
    "garden",
    "planet",
    "silver",
    "window",
    "rocket",
    "forest",
    "bridge",
    "candle",
    "mirror",
    "harbor",
    "pepper",
    "violin",
    "castle",
    "meadow",
    "tunnel",
    "lantern",
    "compass",
    "glacier",
    "island",
    "thunder",
    "basket",
    "falcon",
    "orchard",
    "pillow",
    "saddle",
    "timber",
    "velvet",
    "walnut",
    "anchor",
    "blossom",
]
UNITS = [
    ("kilometers", "meters", 1000),
    ("hours", "minutes", 60),
    ("kilograms", "grams", 1000),
    ("minutes", "seconds", 60),
    ("meters", "centimeters", 100),
    ("liters", "milliliters", 1000),
]
TOPICS = [
    ("the meeting", "moved to Thursday"),
    ("the library", "closed for renovation"),
    ("the train", "delayed by twenty minutes"),
    ("the report", "ready for review"),
    ("the server", "back online"),
    ("the order", "shipped this morning"),
]


def arithmetic(rng: random.Random) -> Row:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    have, get = rng.randint(2, 60), rng.randint(2, 40)
    return {
        "instruction": f"{name} has {have} {item} and buys {get} more. How many {item} does {name} have now?",
        "input": "",
        "output": f"{name} has {have} + {get} = {have + get} {item} now.",
    }


def unit_conversion(rng: random.Random) -> Row:
    big, small, factor = rng.choice(UNITS)
    amount = rng.randint(2, 90)
    return {
        "instruction": f"Convert the quantity to {small}.",
        "input": f"{amount} {big}",
        "output": f"{amount} {big} is {amount * factor} {small}, since one of the {big} is {factor} {small}.",
    }


def reverse_word(rng: random.Random) -> Row:
    word = rng.choice(WORDS)
    return {
        "instruction": rng.choice(
            [
                "Write the given word backwards, letter by letter.",
                "Reverse the letters of this word.",
                "Spell the word in reverse order.",
            ]
        ),
        "input": word,
        "output": f'Reversed, "{word}" is "{word[::-1]}".',
    }


def sort_numbers(rng: random.Random) -> Row:
    numbers = rng.sample(range(1, 100), rng.randint(4, 8))
    return {
        "instruction": "Sort these numbers from smallest to largest.",
        "input": ", ".join(map(str, numbers)),
        "output": ", ".join(map(str, sorted(numbers))),
    }


def count_letter(rng: random.Random) -> Row:
    word = rng.choice(WORDS)
    letter = rng.choice(sorted(set(word)))
    count = word.count(letter)
    return {
        "instruction": f"How many times does the letter '{letter}' appear in the word \"{word}\"?",
        "input": "",
        "output": f"The letter '{letter}' appears {count} time{'s' if count != 1 else ''} in \"{word}\".",
    }


def formal_notice(rng: random.Random) -> Row:
    subject, news = rng.choice(TOPICS)
    name = rng.choice(NAMES)
    return {
        "instruction": "Write a one-sentence formal notice to colleagues about the news.",
        "input": f"From {name}: {subject} is {news}.",
        "output": f"Dear colleagues, please be advised that {subject} is {news}. Kind regards, {name}.",
    }


SKILLS: dict[str, Callable[[random.Random], Row]] = {
    "arithmetic": arithmetic,
    "unit_conversion": unit_conversion,
    "reverse_word": reverse_word,
    "sort_numbers": sort_numbers,
    "count_letter": count_letter,
    "formal_notice": formal_notice,
}


def demo_rows(rows_per_skill: int = 50, seed: int = 0) -> list[Row]:
    """`rows_per_skill` distinct rows for each skill in `SKILLS`, interleaved, deterministic under `seed`.

    Each row carries a `skill` field (the true group) besides instruction/input/output.
    """
    rng = random.Random(seed)
    by_skill: dict[str, list[Row]] = {}
    for skill, make in SKILLS.items():
        seen: set[str] = set()
        rows: list[Row] = []
        for _ in range(rows_per_skill * 50):
            row = make(rng)
            key = json.dumps(row, sort_keys=True)
            if key not in seen:
                seen.add(key)
                rows.append({**row, "skill": skill})
            if len(rows) == rows_per_skill:
                break
        if len(rows) < rows_per_skill:
            raise ValueError(f"skill {skill!r} has only {len(rows)} distinct rows; ask for fewer per skill")
        by_skill[skill] = rows
    return [row for group in zip(*by_skill.values(), strict=True) for row in group]


def write_demo_corpus(path: Path, rows_per_skill: int = 50, seed: int = 0) -> Path:
    """Write `demo_rows(...)` as JSONL to `path` atomically; returns `path`."""
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in demo_rows(rows_per_skill, seed))
    return write_atomic(Path(path), lambda staging: staging.write_text(lines, encoding="utf-8"))
