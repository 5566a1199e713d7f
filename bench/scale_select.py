"""Time and peak memory per stage of selecting 5% of a 2.6M-row corpus on one CPU machine.

A synthetic Alpaca-shaped JSON Lines corpus (40 skills in 8 capability families, a few sentence templates
each, 100-600 characters a row, a few % bad rows and exact duplicates) goes through the stages of
`paser select` at scale:

    generate  write the corpus (not a stage of paser; timed for reference)
    store     stream the corpus (`iter_samples`) into a Parquet corpus store (`write_corpus_store`)
    embed     N x 384 unit-norm float32 prompt and response embeddings, each written block by block into a
              memory-mapped .npy, and per-row scores (cds, token counts, NLLs) as a Parquet table
    cluster   the default clustering as `paser select` runs it: `features_for` (the memory-mapped prompt and
              response embeddings and the lexical block of the prompts streamed from the store, combined as
              rows are read: 868 columns) and `cluster_embeddings` on them (default ClusterConfig: landmarks)
    select    the `paser` strategy at a 5% budget without the CCG (allocation ∝ cluster CDS, IES ranking)
    fetch     the selected rows' raw fields from the store, written as selection.jsonl
    tokenise  (asked for by --stages) the scorer's tokenisation, `encode_corpus_cached`, of the store's samples
              streamed from the file (`StoredSamples`) with --tokenizer; `tokenise_list` does the same after
              reading every sample into a list first, as `paser select` did before it streamed: the two peak
              memories side by side
    ccg       the `paser` strategy as shipped (with the CCG: YAKE concepts of the rows the walk offers,
              from the store's text held in memory, extracted ahead of the walk by --ccg-workers processes
              into a concept cache), stopped after --ccg-minutes, after timing the same walk with the
              concepts extracted in this process for --ccg-serial-minutes; reports offers per second of
              both, rows extracted per second, how many rows the walk offered and accepted, and for a walk
              cut short a lower bound on the time it would need. --ccg-cache DIR keeps the concepts for
              the next run (a budget sweep); --ccg-max-offers-per-slot sets paser's offer bound

Embeddings and scores are synthetic: all-MiniLM-L6-v2 on 2 CPU cores embeds a few hundred rows a second
(hours for 2.6M rows) and scoring needs two LLM forward passes per row (days on this CPU). A row's
embedding is its skill's centre (near its family's centre) plus Gaussian noise, and a response's likewise
with centres of its own, so clusters exist and the clustering can be checked against families and skills
with the ARI; the lexical block is real (the synthetic prompts' words); CDS is a per-skill level times
log-normal noise; token counts are the characters / 4 of the real synthetic text.

Each stage runs in its own subprocess, so its peak RSS (VmHWM, the kernel's high-water mark of the
process's resident pages; ru_maxrss alongside) is that stage's alone. RSS counts the memory-mapped file
pages a stage touched (RssFile; reclaimable page cache) as well as its heap (RssAnon); both are printed
as they are at the end of each stage. The last line printed is `key=value` pairs: rows, seconds and peak
GB per stage, rows_valid, n_clusters, ari_family, ari_skill, selected, and the CCG's progress.

    nice -n 10 python bench/scale_select.py --rows 2600000 --work /tmp/paser_scale
    python bench/scale_select.py --rows 50000 --ccg-minutes 2     # a quick run in a temporary folder
    python bench/scale_select.py --work /tmp/paser_scale --stages ccg --budget 0.1 --ccg-cache /tmp/concepts
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.common.io import write_atomic  # noqa: E402
from paser.selection import strategies  # noqa: E402
from paser.selection.allocate import resolve_budget  # noqa: E402
from paser.selection.cluster import cluster_embeddings, features_for  # noqa: E402
from paser.selection.config import ClusterConfig  # noqa: E402
from paser.selection.consistency import ConceptCache, ConceptConsistencyGraph, ConceptExtractor  # noqa: E402
from paser.selection.corpus import CorpusConfig, CorpusStats, Sample, concept_text, iter_samples  # noqa: E402
from paser.selection.formatting import encode_corpus_cached  # noqa: E402
from paser.selection.prioritize import efficiency_score  # noqa: E402
from paser.selection.store import (  # noqa: E402
    CorpusStore,
    EmbeddingWriter,
    StoredSamples,
    StoredTexts,
    open_embeddings,
    write_corpus_store,
)
from paser.selection.strategies import SelectionInputs, get_strategy  # noqa: E402

STAGES = ("generate", "store", "embed", "cluster", "select", "fetch", "ccg", "tokenise", "tokenise_list")
# The tokenise stages need a tokenizer and take minutes per million rows; they run when asked for.
DEFAULT_STAGES = ("generate", "store", "embed", "cluster", "select", "fetch", "ccg")
GENERATION_OPTIONS = ("rows", "budget", "noise", "bad_fraction", "duplicate_fraction", "seed", "tokenizer")
CCG_OPTIONS = ("ccg_minutes", "ccg_serial_minutes", "ccg_workers", "ccg_cache", "ccg_max_offers_per_slot")
DIMENSION = 384
BLOCK_ROWS = 65_536

# Capability families of five skills each: (skill, what the instruction asks, words of its domain).
FAMILIES = {
    "math": [
        ("arithmetic", "solve the arithmetic problem", ["sum", "product", "fraction", "remainder", "integer"]),
        ("algebra", "simplify the algebraic expression", ["variable", "coefficient", "polynomial", "root"]),
        ("geometry", "compute the geometric quantity", ["triangle", "angle", "radius", "perimeter", "area"]),
        ("statistics", "interpret the statistics", ["mean", "median", "variance", "sample", "outlier"]),
        ("logic", "solve the logic puzzle", ["clue", "premise", "deduction", "liar", "knight", "inference"]),
    ],
    "language": [
        ("translation_fr", "translate the sentence into French", ["phrase", "verb", "tense", "accent", "idiom"]),
        ("translation_es", "translate the text into Spanish", ["greeting", "sentence", "gender", "article"]),
        ("grammar", "correct the grammar of the sentence", ["comma", "clause", "subject", "agreement"]),
        ("rewrite", "rewrite the text in a formal tone", ["tone", "register", "wording", "audience", "style"]),
        ("definition", "define the term", ["term", "meaning", "example", "synonym", "origin", "usage"]),
    ],
    "code": [
        ("python", "write a Python function", ["list", "dictionary", "loop", "exception", "generator"]),
        ("sql", "write an SQL query", ["table", "join", "index", "column", "aggregate", "subquery"]),
        ("javascript", "write JavaScript code", ["promise", "callback", "array", "event", "closure"]),
        ("debugging", "find the bug in the code", ["stacktrace", "off-by-one", "null", "race", "assertion"]),
        ("regex", "write a regular expression", ["pattern", "match", "group", "anchor", "quantifier"]),
    ],
    "writing": [
        ("poetry", "write a short poem", ["rhyme", "stanza", "metaphor", "moon", "river", "meter"]),
        ("story", "write a short story", ["hero", "village", "dragon", "journey", "secret", "storm"]),
        ("email", "draft a professional email", ["meeting", "deadline", "client", "invoice", "schedule"]),
        ("marketing", "write a product description", ["customer", "feature", "brand", "slogan", "launch"]),
        ("brainstorm", "brainstorm ideas", ["idea", "theme", "party", "gift", "project", "weekend"]),
    ],
    "science": [
        ("biology", "explain the biological process", ["cell", "protein", "enzyme", "gene", "membrane"]),
        ("chemistry", "balance the chemical reaction", ["molecule", "reaction", "acid", "bond", "catalyst"]),
        ("physics", "explain the physical phenomenon", ["force", "energy", "momentum", "wave", "friction"]),
        ("astronomy", "describe the astronomical object", ["planet", "galaxy", "telescope", "comet", "nebula"]),
        ("environment", "explain the environmental issue", ["pollution", "recycling", "forest", "carbon"]),
    ],
    "humanities": [
        ("history", "explain the historical event", ["empire", "treaty", "revolution", "century", "dynasty"]),
        ("geography", "describe the geography", ["mountain", "climate", "border", "capital", "desert"]),
        ("philosophy", "discuss the philosophical question", ["ethics", "free will", "virtue", "mind"]),
        ("law", "explain the legal principle", ["contract", "liability", "court", "statute", "copyright"]),
        ("music", "explain the music theory", ["chord", "scale", "rhythm", "melody", "tempo", "harmony"]),
    ],
    "everyday": [
        ("medicine", "give general health information", ["symptom", "diet", "sleep", "exercise", "vitamin"]),
        ("nutrition", "suggest a healthy recipe", ["vegetable", "recipe", "calorie", "breakfast", "spice"]),
        ("finance", "explain the financial concept", ["interest", "budget", "loan", "inflation", "savings"]),
        ("travel", "plan a travel itinerary", ["itinerary", "museum", "train", "hotel", "beach", "ticket"]),
        ("career", "give career advice", ["interview", "resume", "skill", "manager", "promotion"]),
    ],
    "analysis": [
        ("summarisation", "summarise the passage", ["paragraph", "argument", "conclusion", "headline"]),
        ("classification", "classify the items", ["category", "label", "animal", "fruit", "vehicle"]),
        ("sentiment", "determine the sentiment of the review", ["review", "opinion", "rating", "complaint"]),
        ("extraction", "extract the named entities", ["person", "organisation", "date", "location"]),
        ("comparison", "compare the two options", ["advantage", "drawback", "option", "trade-off"]),
    ],
}
SKILLS = [skill for skills in FAMILIES.values() for skill in skills]
FAMILY_OF_SKILL = np.repeat(np.arange(len(FAMILIES)), [len(skills) for skills in FAMILIES.values()])
INSTRUCTION_TEMPLATES = [
    "{Task} about the {a} and the {b}.",
    "Please {task}, focusing on the {a} of the {b}.",
    "Can you {task}? Mention the {a}, the {b} and the {c}.",
    "In a {adj} way, {task} for a {a}.",
    "Given the {a} below, {task} and explain the {b}.",
    "{Task}; keep the {a} {adj} and the {b} {adj2}.",
]
INPUT_TEMPLATES = [
    "The {a} is {adj} and the {b} is {adj2}, so the {c} {verb} the {d}.",
    "{A}: {adj}. {B}: {adj2}. {C}: {adj}.",
    "Consider a {adj} {a} that {verb} a {b} near the {c}.",
]
RESPONSE_SENTENCES = [
    "The {a} {verb} the {b} because the {c} is {adj}.",
    "First, consider the {a}: it {verb} the {b} in a {adj} way.",
    "A {adj} {a} usually means the {b} is {adj2}.",
    "In short, the {a} and the {b} depend on the {c}.",
    "Note that every {a} {verb} some {b}, which keeps the {c} {adj}.",
    "For example, a {adj2} {b} can change how the {a} {verb} the {c}.",
    "This is why the {a} matters more than the {b} here.",
    "Finally, the {c} should stay {adj} while the {a} {verb} the {b}.",
]
ADJECTIVES = [
    "simple",
    "clear",
    "small",
    "large",
    "careful",
    "quick",
    "slow",
    "bright",
    "dark",
    "warm",
    "cold",
    "formal",
    "friendly",
    "precise",
    "rough",
    "modern",
    "ancient",
    "strong",
    "weak",
    "stable",
    "complex",
    "useful",
    "rare",
    "common",
    "gentle",
    "sharp",
    "quiet",
    "loud",
    "narrow",
    "wide",
]
VERBS = [
    "affects",
    "changes",
    "supports",
    "limits",
    "explains",
    "describes",
    "shapes",
    "follows",
    "precedes",
    "replaces",
    "reduces",
    "increases",
    "balances",
    "connects",
    "separates",
    "improves",
    "measures",
    "reveals",
    "hides",
]
COMMON_NOUNS = [
    "system",
    "process",
    "result",
    "method",
    "value",
    "problem",
    "answer",
    "reason",
    "example",
    "detail",
    "part",
    "rule",
    "step",
    "case",
    "question",
    "pattern",
    "source",
    "effect",
    "model",
    "level",
    "point",
    "range",
    "context",
    "goal",
    "factor",
]
BAD_ROWS = [
    {"instruction": "Summarise the text.", "input": "", "output": ""},
    {"input": "", "output": "An answer without a question."},
    {"instruction": "Explain.", "input": ["not", "a", "string"], "output": "x"},
    {"instruction": "   ", "input": "", "output": "An answer to nothing."},
    {"instruction": "A question without an answer.", "input": ""},
]


# --- measuring ------------------------------------------------------------------------------------------


def memory_gb() -> dict[str, float]:
    """This process's peak and current resident memory in GB: VmHWM (peak), VmRSS (now) and its anonymous
    (heap) and file-backed (memory-mapped files) parts, from /proc/self/status; ru_maxrss alongside."""
    wanted = {"VmHWM": "peak_gb", "VmRSS": "rss_gb", "RssAnon": "anon_gb", "RssFile": "file_gb"}
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            values[wanted[key]] = int(value.split()[0]) / 1024**2  # kB -> GB
    values["ru_maxrss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return values


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def save_npy(path: Path, array: np.ndarray) -> None:
    # Through a file object: np.save given a path not ending in .npy writes to `path` + ".npy".
    with path.open("wb") as stream:
        np.save(stream, array)


def log(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


# --- the synthetic corpus -------------------------------------------------------------------------------


def skill_of_rows(n_rows: int, seed: int) -> np.ndarray:
    """The skill index of every source row (long-tailed: skill k has weight 1 / (k + 5))."""
    weights = 1.0 / (np.arange(len(SKILLS)) + 5.0)
    return np.random.default_rng(seed).choice(len(SKILLS), size=n_rows, p=weights / weights.sum())


def synthetic_row(skill: int, rng: random.Random) -> dict[str, str]:
    """One Alpaca row of `skill`: an instruction from three of the skill's templates, an input half of the
    time, a response of 2-7 sentences; words from the skill's domain and a shared vocabulary."""
    name, task, domain = SKILLS[skill]

    def noun() -> str:
        return rng.choice(domain) if rng.random() < 0.7 else rng.choice(COMMON_NOUNS)

    def fill(template: str) -> str:
        a, b, c, d = noun(), noun(), noun(), noun()
        words = {"a": a, "b": b, "c": c, "d": d, "A": a.capitalize(), "B": b.capitalize(), "C": c.capitalize()}
        words.update(adj=rng.choice(ADJECTIVES), adj2=rng.choice(ADJECTIVES), verb=rng.choice(VERBS))
        return template.format(task=task, Task=task.capitalize(), **words)

    instruction = fill(INSTRUCTION_TEMPLATES[(skill + 2 * rng.randrange(3)) % len(INSTRUCTION_TEMPLATES)])
    input_text = fill(rng.choice(INPUT_TEMPLATES)) if rng.random() < 0.5 else ""
    response = " ".join(fill(rng.choice(RESPONSE_SENTENCES)) for _ in range(rng.randint(2, 7)))
    return {"instruction": instruction, "input": input_text, "output": response, "category": name}


def generate_corpus(path: Path, n_rows: int, seed: int, bad_fraction: float, duplicate_fraction: float) -> dict:
    """Write `n_rows` JSON lines to `path`: skill rows, with bad rows and exact repeats of earlier rows."""
    rng = random.Random(seed)
    skills = skill_of_rows(n_rows, seed)
    recent: list[str] = []
    counts = {"bad": 0, "duplicate": 0}

    def write(staging: Path) -> None:
        with staging.open("w", encoding="utf-8") as stream:
            for position in range(n_rows):
                draw = rng.random()
                if draw < bad_fraction:
                    line = json.dumps(BAD_ROWS[position % len(BAD_ROWS)])
                    counts["bad"] += 1
                elif draw < bad_fraction + duplicate_fraction and recent:
                    line = rng.choice(recent)
                    counts["duplicate"] += 1
                else:
                    line = json.dumps(synthetic_row(int(skills[position]), rng))
                    if len(recent) < 4096:
                        recent.append(line)
                    else:
                        recent[rng.randrange(4096)] = line
                stream.write(line + "\n")

    write_atomic(path, write)
    return {"rows": n_rows, **counts, "megabytes": round(path.stat().st_size / 1e6, 1)}


# --- stages ---------------------------------------------------------------------------------------------


def stage_generate(work: Path, args: argparse.Namespace) -> dict:
    return generate_corpus(work / "corpus.jsonl", args.rows, args.seed, args.bad_fraction, args.duplicate_fraction)


def stage_store(work: Path, args: argparse.Namespace) -> dict:
    stats = CorpusStats()
    samples = iter_samples(CorpusConfig(path=str(work / "corpus.jsonl")), stats)
    info = write_corpus_store(samples, work / "corpus.parquet", show_progress=False)
    (work / "corpus_stats.json").write_text(json.dumps(stats.to_dict()))
    return {"rows_valid": info.rows, "row_groups": info.row_groups, "megabytes": round(info.bytes / 1e6, 1)} | {
        f"skipped_{reason}": count for reason, count in stats.skipped.items()
    }


def write_synthetic_embeddings(path: Path, skills: np.ndarray, rng: np.random.Generator, noise: float) -> None:
    """Unit-norm rows at `path`, one per entry of `skills`: the skill's centre plus Gaussian noise of norm about
    `noise`, in blocks through the memmap. A skill sits near its family: cosine 0.8 to the family centre,
    about 0.64 to its sibling skills."""
    family_centres = unit_rows(rng.standard_normal((len(FAMILIES), DIMENSION), dtype=np.float32))
    skill_centres = unit_rows(rng.standard_normal((len(SKILLS), DIMENSION), dtype=np.float32))
    centres = unit_rows(0.8 * family_centres[FAMILY_OF_SKILL] + 0.6 * skill_centres)
    with EmbeddingWriter(path, len(skills), DIMENSION) as writer:
        for start in range(0, len(skills), BLOCK_ROWS):
            block_skills = skills[start : start + BLOCK_ROWS]
            block_noise = rng.standard_normal((len(block_skills), DIMENSION), dtype=np.float32)
            block = centres[block_skills] + block_noise * np.float32(noise / np.sqrt(DIMENSION))
            writer.write(start, unit_rows(block))


def stage_embed(work: Path, args: argparse.Namespace) -> dict:
    """Synthetic prompt and response embeddings (skill centre + noise, unit norm) into their memmaps;
    synthetic scores."""
    store = CorpusStore(work / "corpus.parquet")
    n_rows = len(store)
    skills = skill_of_rows(args.rows, args.seed)[store.column("source_index").to_numpy()]
    rng = np.random.default_rng(args.seed + 1)
    write_synthetic_embeddings(work / "embeddings.npy", skills, rng, args.noise)
    # Their own generator, so the prompt embeddings and the scores are those of runs without responses.
    write_synthetic_embeddings(
        work / "response_embeddings.npy", skills, np.random.default_rng(args.seed + 2), args.noise
    )

    prompt_chars, response_chars = [], []
    for batch in store.iter_batches(columns=["instruction", "input", "response"]):
        prompt_chars.append(
            pc.add(pc.utf8_length(batch.column("instruction")), pc.utf8_length(batch.column("input"))).to_numpy()
        )
        response_chars.append(pc.utf8_length(batch.column("response")).to_numpy())
    # ~4 characters per token, plus the prompt format's own tokens.
    prompt_tokens = np.concatenate(prompt_chars) // 4 + 12
    response_tokens = np.concatenate(response_chars) // 4 + 1
    skill_cds = rng.uniform(0.02, 0.3, len(SKILLS))
    cds = np.clip(skill_cds[skills] * rng.lognormal(0.0, 0.4, n_rows), 1e-4, np.log(2) - 1e-6)
    nll_original = rng.gamma(4.0, 0.35, n_rows)
    scores = pa.table(
        {
            "id": store.column("id"),
            "cds": cds,
            "prompt_tokens": prompt_tokens.astype(np.int64),
            "response_tokens": response_tokens.astype(np.int64),
            "nll_original": nll_original,
            "nll_pruned": nll_original + 4.0 * cds + rng.normal(0.0, 0.05, n_rows),
        }
    )
    write_atomic(work / "scores.parquet", lambda staging: pq.write_table(scores, staging))
    return {"embeddings_megabytes": round(2 * n_rows * DIMENSION * 4 / 1e6, 1)}


def tokenise(work: Path, args: argparse.Namespace, samples: Sequence[Sample]) -> dict:
    """`paser select`'s tokenisation (`encode_corpus_cached`: a digest pass, then batches of 1,024 rows) of
    `samples` with `args.tokenizer`, the token cache in a fresh folder. The stage's peak memory (VmHWM) holds
    the samples as given plus the encoded rows, which scoring keeps."""
    from paser.recovery.models import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    cache = work / "token_cache_bench"
    shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    encoded, skipped, _ = encode_corpus_cached(samples, tokenizer, 2048, cache, show_progress=False)
    seconds = time.perf_counter() - started
    tokens = sum(row.length for row in encoded)
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "encoded_rows": len(encoded),
        "tokens": tokens,
        "rows_per_s": round(len(encoded) / seconds),
        **{f"skipped_{reason}": count for reason, count in skipped.items()},
    }


def stage_tokenise(work: Path, args: argparse.Namespace) -> dict:
    """Tokenise straight from the store (`StoredSamples`: one row group of samples alive at a time)."""
    return tokenise(work, args, StoredSamples(CorpusStore(work / "corpus.parquet")))


def stage_tokenise_list(work: Path, args: argparse.Namespace) -> dict:
    """The same, after reading every sample into a list first (what `paser select` did before streaming)."""
    store = CorpusStore(work / "corpus.parquet")
    return tokenise(work, args, store.samples(store.ids(), with_raw=False))


def stage_cluster(work: Path, args: argparse.Namespace) -> dict:
    """The default clustering as `paser select` runs it: features (memory-mapped prompt and response
    embeddings, the lexical block of the prompts streamed from the store) and `cluster_embeddings`. Reports
    the features' width and seconds, and the memory (GB) once they are built: features_peak, _rss, _anon,
    _file, _ru_maxrss as `memory_gb` names them."""
    store = CorpusStore(work / "corpus.parquet")
    prompts = open_embeddings(work / "embeddings.npy", n_rows=len(store), dim=DIMENSION)
    responses = open_embeddings(work / "response_embeddings.npy", n_rows=len(store), dim=DIMENSION)
    config = ClusterConfig(seed=args.seed)
    started = time.perf_counter()
    texts = StoredTexts(store, np.arange(len(store)), CorpusConfig.embed_fields)
    features = features_for(config, prompts, responses, texts)
    features_seconds = time.perf_counter() - started
    after_features = memory_gb()
    result = cluster_embeddings(features, config)
    write_atomic(work / "clusters.npy", lambda staging: save_npy(staging, result.labels))
    from sklearn.metrics import adjusted_rand_score

    skills = skill_of_rows(args.rows, args.seed)[store.column("source_index").to_numpy()]
    return {
        "n_features": features.shape[1],
        "features_s": round(features_seconds, 1),
        **{f"features_{key.removesuffix('_gb')}": round(value, 2) for key, value in after_features.items()},
        "n_clusters": result.n_clusters,
        "n_landmarks": result.n_landmarks,
        "ari_family": round(float(adjusted_rand_score(FAMILY_OF_SKILL[skills], result.labels)), 3),
        "ari_skill": round(float(adjusted_rand_score(skills, result.labels)), 3),
        **{f"{step}_s": round(seconds, 1) for step, seconds in result.seconds.items()},
    }


def selection_inputs(work: Path, args: argparse.Namespace, *, with_concept_text: bool) -> tuple[SelectionInputs, int]:
    """The table (scores, clusters, IES) and the memory-mapped embeddings as `run_select` builds them, with
    the concept text of every row from the store's text held in memory when asked; and the budget in rows."""
    store = CorpusStore(work / "corpus.parquet")
    table = pd.read_parquet(work / "scores.parquet")
    table["cluster"] = np.load(work / "clusters.npy")
    table["ies"] = efficiency_score(
        table["cds"].to_numpy(), table["prompt_tokens"].to_numpy(), table["response_tokens"].to_numpy()
    )
    inputs = SelectionInputs(
        table=table,
        embeddings=open_embeddings(work / "embeddings.npy", n_rows=len(store), dim=DIMENSION),
        seed=args.seed,
    )
    if with_concept_text:
        lookup = store.sample_lookup()
        inputs.concept_text = lambda sample_id: concept_text(lookup[sample_id])
    return inputs, resolve_budget(args.budget, len(table))


def stage_select(work: Path, args: argparse.Namespace) -> dict:
    """paser without the CCG (allocation ∝ cluster CDS, IES ranking): the part whose cost is per row."""
    inputs, budget = selection_inputs(work, args, with_concept_text=False)
    started = time.perf_counter()
    result = get_strategy("paser", ccg=False).select(inputs, budget)
    strategy_seconds = time.perf_counter() - started
    selection = inputs.table.set_index("id").loc[result.ids, ["cluster", "cds", "ies"]].reset_index()
    write_atomic(work / "selection.parquet", lambda staging: selection.to_parquet(staging, index=False))
    return {"budget": budget, "selected": len(result.ids), "strategy_s": round(strategy_seconds, 1)}


class CcgDeadline(Exception):
    """The CCG walk ran past its time limit."""


class DeadlineGraph(ConceptConsistencyGraph):
    """The strategy's CCG, stopping the walk (raising `CcgDeadline` from `offer`) once `deadline`
    (perf_counter seconds) has passed; the last one built is kept, so a walk cut short still reports its
    counts. The strategy builds its graph by name, so the stage swaps this class in for the run."""

    deadline = float("inf")
    last: DeadlineGraph | None = None

    def __init__(self, rule: str = "paper"):
        super().__init__(rule)
        DeadlineGraph.last = self

    def offer(self, concepts: Iterable[str]) -> bool:
        if time.perf_counter() > self.deadline:
            raise CcgDeadline
        return super().offer(concepts)


def timed_ccg_walk(inputs: SelectionInputs, budget: int, minutes: float, **options: Any) -> dict:
    """Run `paser` with `options` for at most `minutes` (0: no limit); its graph's counts and seconds."""
    DeadlineGraph.deadline = time.perf_counter() + 60 * minutes if minutes > 0 else float("inf")
    started = time.perf_counter()
    strategies.ConceptConsistencyGraph = DeadlineGraph
    try:
        result = get_strategy("paser", **options).select(inputs, budget)
    except CcgDeadline:
        result = None
    finally:
        strategies.ConceptConsistencyGraph = ConceptConsistencyGraph
    seconds = time.perf_counter() - started
    graph = DeadlineGraph.last
    report = {"finished": int(result is not None), "seconds": seconds, "offered": graph.offered}
    report |= {"accepted": graph.accepted, "rejection_rate": graph.rejected / max(graph.offered, 1)}
    if result is not None:
        report |= {"selected": len(result.ids), "readmitted": result.stats["ccg_readmitted"]}
        report |= {"rounds": result.stats["allocation_rounds"]}
    return report


def stage_ccg(work: Path, args: argparse.Namespace) -> dict:
    """paser as shipped (with the CCG), concepts extracted ahead by --ccg-workers processes, stopped after
    --ccg-minutes; first the same walk with concepts extracted in this process, for --ccg-serial-minutes.
    Reports offers per second of both (the walk's cost is the extraction: the graph's own work is
    microseconds a row), rows extracted per second by the pool, how far the walk got, and for a walk cut
    short a lower bound on the time it would need."""
    started = time.perf_counter()
    inputs, budget = selection_inputs(work, args, with_concept_text=True)
    report: dict[str, Any] = {"budget": budget, "inputs_s": round(time.perf_counter() - started, 1)}
    offer_bound = {"ccg_max_offers_per_slot": args.ccg_max_offers_per_slot}
    if args.ccg_serial_minutes > 0:
        serial = timed_ccg_walk(inputs, budget, args.ccg_serial_minutes, concept_workers=0, **offer_bound)
        report["serial_offered"] = serial["offered"]
        report["serial_s"] = round(serial["seconds"], 1)
        report["serial_offers_per_s"] = round(serial["offered"] / serial["seconds"], 1)

    cache = ConceptCache(args.ccg_cache)
    cache.bind(ConceptExtractor().settings())
    cached_before = len(cache)
    inputs.concept_cache = cache
    walk = timed_ccg_walk(inputs, budget, args.ccg_minutes, concept_workers=args.ccg_workers, **offer_bound)
    extracted = len(cache) - cached_before
    offers_per_s = walk["offered"] / walk["seconds"]
    report |= {"workers": args.ccg_workers or os.cpu_count(), "cached_before": cached_before}
    report |= {"offers_per_s": round(offers_per_s, 1), "extracted": extracted}
    report["extracted_per_s"] = round(extracted / walk["seconds"], 1)
    if "serial_offers_per_s" in report:
        report["pool_over_serial"] = round(offers_per_s / report["serial_offers_per_s"], 2)
    report |= {key: round(value, 3) if isinstance(value, float) else value for key, value in walk.items()}
    report["strategy_s"] = round(report.pop("seconds"), 1)
    if not walk["finished"]:
        # Lower bound: the rejection rate only grows as the graph fills.
        acceptance = max(walk["accepted"] / max(walk["offered"], 1), 1e-9)
        rows_to_offer = min((budget - walk["accepted"]) / acceptance, len(inputs.table) - walk["offered"])
        report["projected_min_lower_bound"] = round(walk["seconds"] / 60 * (1 + rows_to_offer / walk["offered"]))
    return report


def stage_fetch(work: Path, args: argparse.Namespace) -> dict:
    store = CorpusStore(work / "corpus.parquet")
    selection = pd.read_parquet(work / "selection.parquet")
    raw_rows = store.raw_rows(selection["id"].tolist())

    def write(staging: Path) -> None:
        with staging.open("w", encoding="utf-8") as stream:
            for raw, record in zip(raw_rows, selection.itertuples(index=False), strict=True):
                row = {**raw, "id": record.id, "cluster": int(record.cluster), "cds": record.cds, "ies": record.ies}
                stream.write(json.dumps(row, ensure_ascii=False) + "\n")

    write_atomic(work / "selection.jsonl", write)
    return {"rows": len(raw_rows)}


STAGE_FUNCTIONS = {
    "generate": stage_generate,
    "store": stage_store,
    "embed": stage_embed,
    "cluster": stage_cluster,
    "select": stage_select,
    "fetch": stage_fetch,
    "ccg": stage_ccg,
    "tokenise": stage_tokenise,
    "tokenise_list": stage_tokenise_list,
}


def run_stage(name: str, work: Path, args: argparse.Namespace) -> None:
    """Run one stage in this process and write its seconds, memory and results to `stage_<name>.json`."""
    started = time.perf_counter()
    details = STAGE_FUNCTIONS[name](work, args)
    seconds = time.perf_counter() - started
    report = {"stage": name, "seconds": round(seconds, 1), **memory_gb(), **details}
    (work / f"stage_{name}.json").write_text(json.dumps(report))
    log(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_600_000, help="Source rows of the synthetic corpus.")
    parser.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one).")
    parser.add_argument("--keep", action="store_true", help="Keep the working folder (a given --work is kept).")
    parser.add_argument(
        "--stages", default=",".join(DEFAULT_STAGES), help=f"Comma-separated stages to run, in order: {STAGES}."
    )
    parser.add_argument("--tokenizer", default="smollm2", help="Tokenizer of the tokenise stages (alias or path).")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in this process
    parser.add_argument("--budget", type=float, default=0.05, help="Selection budget (fraction of valid rows).")
    parser.add_argument("--ccg-minutes", type=float, default=20.0, help="Stop the ccg walk after this (0: never).")
    parser.add_argument(
        "--ccg-serial-minutes", type=float, default=2.0, help="Time the serial ccg walk this long first (0: skip)."
    )
    parser.add_argument("--ccg-workers", type=int, default=None, help="Concept worker processes (default: CPUs).")
    parser.add_argument("--ccg-cache", type=Path, default=None, help="Concept cache folder (default: in memory).")
    parser.add_argument(
        "--ccg-max-offers-per-slot", type=float, default=None, help="paser's offer bound (default: none)."
    )
    parser.add_argument("--noise", type=float, default=2.5, help="Embedding noise norm relative to the centre.")
    parser.add_argument("--bad-fraction", type=float, default=0.02, help="Fraction of invalid rows.")
    parser.add_argument("--duplicate-fraction", type=float, default=0.02, help="Fraction of repeated rows.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.stage is not None:
        run_stage(args.stage, args.work, args)
        return

    stages = args.stages.split(",")
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="paser_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"working in {work}")
    reports = []
    try:
        for name in stages:
            command = [sys.executable, __file__, "--stage", name, "--work", str(work)]
            for option in (*GENERATION_OPTIONS, *CCG_OPTIONS):
                if getattr(args, option) is not None:
                    command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
            log(f"stage {name} ...")
            started = time.perf_counter()
            subprocess.run(command, check=True)
            report = json.loads((work / f"stage_{name}.json").read_text())
            report["wall_s"] = round(time.perf_counter() - started, 1)
            reports.append(report)
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    columns = [("seconds", "seconds", 8, 1), ("wall_s", "wall s", 7, 1), ("peak_gb", "peak GB", 8, 2)]
    columns += [("ru_maxrss_gb", "ru_maxrss", 9, 2), ("rss_gb", "RSS end", 8, 2), ("anon_gb", "anon", 6, 2)]
    columns += [("file_gb", "file", 6, 2)]
    print("\n" + f"{'stage':<9}" + "".join(f" {title:>{width}}" for _, title, width, _ in columns))
    for report in reports:
        cells = "".join(f" {report[key]:>{width}.{digits}f}" for key, _, width, digits in columns)
        print(f"{report['stage']:<9}{cells}")
    for report in reports:
        details = {k: v for k, v in report.items() if k not in {"stage", "seconds", "wall_s"} and not k.endswith("_gb")}
        print(f"{report['stage']}: " + ", ".join(f"{key}={value}" for key, value in details.items()))
    summary: dict[str, Any] = {"rows": args.rows}
    for report in reports:
        summary[f"{report['stage']}_s"] = report["seconds"]
        summary[f"{report['stage']}_peak_gb"] = f"{report['peak_gb']:.2f}"
    by_stage = {report["stage"]: report for report in reports}
    if "store" in by_stage:
        summary["rows_valid"] = by_stage["store"]["rows_valid"]
    if "cluster" in by_stage:
        summary.update({key: by_stage["cluster"][key] for key in ("n_clusters", "ari_family", "ari_skill")})
    if "select" in by_stage:
        summary["selected"] = by_stage["select"]["selected"]
    if "ccg" in by_stage:
        summary.update({f"ccg_{key}": by_stage["ccg"][key] for key in ("finished", "offered", "accepted")})
    print(" ".join(f"{key}={value}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
