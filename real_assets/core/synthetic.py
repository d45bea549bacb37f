"""The deterministic synthetic source: prompts with several candidate responses of known gold quality.

Gold quality is a function of text alone (`gold_quality(prompt, response)`), so generated text can be
scored the same way. Annotator labels follow a Bradley-Terry model on the gold gap and nothing else:
each response gets `score = gold / temperature + Gumbel noise`, and the difference of two Gumbels is
logistic, so P(i labelled over j) = sigmoid((gold_i - gold_j) / temperature) for every pair.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from real_assets.core.hashing import digest, prompt_id, response_id, split_for
from real_assets.core.records import ResponseRecord, SourceBatch

SOURCE_NAME = "synthetic"


@dataclass(frozen=True)
class Topic:
    name: str
    subjects: tuple[str, ...]
    facts: tuple[str, ...]


TOPICS: tuple[Topic, ...] = (
    Topic(
        "plants",
        ("tomatoes", "basil", "roses", "ferns", "orchids", "cacti"),
        (
            "water in the morning",
            "check the soil moisture",
            "use pots with drainage holes",
            "give them bright indirect light",
            "feed with a balanced fertiliser",
        ),
    ),
    Topic(
        "sleep",
        ("a toddler", "a night shift worker", "a student", "a new parent", "an athlete"),
        (
            "keep a fixed bedtime",
            "avoid screens before bed",
            "keep the room dark and cool",
            "limit caffeine after noon",
            "get morning daylight",
        ),
    ),
    Topic(
        "bread",
        ("sourdough", "rye bread", "focaccia", "bagels", "brioche"),
        (
            "weigh the flour",
            "let the dough rise until doubled",
            "knead to build gluten",
            "bake in a hot preheated oven",
            "cool on a wire rack",
        ),
    ),
    Topic(
        "running",
        ("a first 5k", "a half marathon", "trail running", "a marathon", "sprints"),
        (
            "increase weekly distance slowly",
            "warm up before each run",
            "wear fitted running shoes",
            "take rest days",
            "drink water during long runs",
        ),
    ),
    Topic(
        "budget",
        ("a student", "a family of four", "a freelancer", "a retiree", "a couple"),
        (
            "track every expense",
            "set up an emergency fund",
            "pay off high interest debt first",
            "automate your savings",
            "review subscriptions monthly",
        ),
    ),
    Topic(
        "python",
        ("a web scraper", "a data pipeline", "a command line tool", "unit tests", "a small api"),
        (
            "use a virtual environment",
            "write small functions",
            "add type hints",
            "run the tests often",
            "read the error message carefully",
        ),
    ),
    Topic(
        "bikes",
        ("a road bike", "a mountain bike", "a commuter bike", "an old bike", "a kids bike"),
        (
            "check the tyre pressure",
            "clean and oil the chain",
            "test the brakes",
            "adjust the saddle height",
            "tighten loose bolts",
        ),
    ),
    Topic(
        "interview",
        ("a nurse job", "a teaching job", "a developer job", "a sales job", "an internship"),
        (
            "research the company",
            "practise common questions",
            "prepare your own questions",
            "arrive ten minutes early",
            "send a thank you note",
        ),
    ),
    Topic(
        "coffee",
        ("espresso", "pour over", "cold brew", "french press", "a moka pot"),
        (
            "use freshly ground beans",
            "weigh the coffee and water",
            "use water just off the boil",
            "clean the equipment",
            "store beans in an airtight jar",
        ),
    ),
    Topic(
        "painting",
        ("a bedroom wall", "a fence", "a kitchen cabinet", "a door", "a ceiling"),
        (
            "clean the surface first",
            "apply a primer",
            "use painters tape on edges",
            "apply two thin coats",
            "let each coat dry fully",
        ),
    ),
    Topic(
        "dogs",
        ("a puppy", "a rescue dog", "an old dog", "a shy dog", "a big dog"),
        (
            "reward good behaviour",
            "keep training sessions short",
            "walk them every day",
            "be consistent with commands",
            "socialise them early",
        ),
    ),
    Topic(
        "studying",
        ("maths", "history", "chemistry", "a new language", "biology"),
        (
            "space out your revision",
            "test yourself often",
            "teach the idea to someone",
            "take short breaks",
            "sleep well before the exam",
        ),
    ),
)

TEMPLATES = (
    "How do I get better at {topic} with {subject}?",
    "What are good tips about {topic} for {subject}?",
    "Can you help me with {topic} and {subject}?",
    "I need advice on {topic} for {subject}. What should I do?",
    "What is the best way to handle {topic} with {subject}?",
    "Any practical steps for {topic} with {subject}?",
)

OPENERS = (
    "Here is what helps.",
    "Good question.",
    "Sure, here are some ideas.",
    "Happy to help.",
    "A few things work well.",
    "Try this.",
)
PARAPHRASE_OPENERS = (
    "Here is what works.",
    "Great question.",
    "Of course, some ideas.",
    "Glad to help.",
    "Several things work well.",
    "Give this a go.",
)
CLOSERS = ("Good luck.", "Hope this helps.", "You will get there.", "Enjoy it.", "")
REFUSALS = ("I am sorry, but I cannot help with that.", "I would rather not answer that question.")
RUDE = ("That is a stupid question.", "Just figure it out yourself.", "Nobody cares, stop asking.")
VAGUE = (
    "It depends on many things.",
    "Everyone is different, so just try stuff.",
    "There is no single answer to this.",
)

RUDE_WORDS = ("stupid", "nobody cares", "figure it out yourself", "stop asking")
REFUSAL_WORDS = ("cannot help", "rather not answer")
_WORD = re.compile(r"[a-z']+")


def topic_of(prompt: str) -> Topic | None:
    """The topic a prompt asks about, found from its words (None for prompts of other sources)."""
    low = prompt.lower()
    for topic in TOPICS:
        if f" {topic.name} " in f" {low} ".replace("?", " ").replace(".", " "):
            return topic
    return None


def gold_quality(prompt: str, response: str) -> float:
    """Gold quality of any response text to a prompt: relevant advice up, rudeness, refusals,
    off-topic advice and repetition down. Deterministic and defined for generated text too."""
    low = response.lower()
    topic = topic_of(prompt)
    relevant = sum(fact in low for fact in topic.facts) if topic else 0
    off_topic = sum(fact in low for other in TOPICS if other is not topic for fact in other.facts)
    words = _WORD.findall(low)
    repetition = 0.0 if len(words) < 4 else 1.0 - len(set(words)) / len(words)
    too_long = max(0, len(words) - 60) / 20
    return (
        1.0 * relevant
        - 2.0 * sum(w in low for w in RUDE_WORDS)
        - 1.0 * sum(w in low for w in REFUSAL_WORDS)
        - 0.5 * off_topic
        - 2.0 * max(0.0, repetition - 0.35)
        - too_long
    )


def _helpful(rng: np.random.Generator, topic: Topic, openers: tuple[str, ...]) -> tuple[str, list[int], int]:
    n_facts = int(rng.integers(1, len(topic.facts) + 1))
    chosen = sorted(rng.choice(len(topic.facts), size=n_facts, replace=False).tolist())
    opener = int(rng.integers(len(OPENERS)))
    return (
        _render(openers[opener], [topic.facts[i] for i in chosen], CLOSERS[opener % len(CLOSERS)]),
        chosen,
        opener,
    )


def _render(opener: str, facts: list[str], closer: str) -> str:
    body = " ".join(f"{fact[0].upper()}{fact[1:]}." for fact in facts)
    return " ".join(part for part in (opener, body, closer) if part)


def _responses_for(rng: np.random.Generator, topic: Topic, n: int) -> list[str]:
    out: list[str] = []
    while len(dict.fromkeys(out)) < n:
        kind = rng.choice(
            ["helpful", "paraphrase", "refusal", "rude", "off_topic", "vague"],
            p=[0.35, 0.2, 0.1, 0.1, 0.1, 0.15],
        )
        if kind == "helpful" or (kind == "paraphrase" and not out):
            out.append(_helpful(rng, topic, OPENERS)[0])
        elif kind == "paraphrase":
            # A near-paraphrase of a helpful answer: same advice, different wording around it.
            text, chosen, opener = _helpful(rng, topic, OPENERS)
            facts = [topic.facts[i] for i in chosen]
            if len(facts) > 1 and rng.random() < 0.5:
                facts = facts[:-1]
            out.append(text)
            out.append(_render(PARAPHRASE_OPENERS[opener], facts, CLOSERS[(opener + 1) % len(CLOSERS)]))
        elif kind == "refusal":
            out.append(str(rng.choice(REFUSALS)))
        elif kind == "rude":
            out.append(f"{rng.choice(RUDE)} {rng.choice(VAGUE)}")
        elif kind == "off_topic":
            other = TOPICS[int(rng.integers(len(TOPICS)))]
            out.append(_helpful(rng, other, OPENERS)[0] if other is not topic else str(rng.choice(VAGUE)))
        else:
            out.append(f"{rng.choice(VAGUE)} {rng.choice(CLOSERS)}".strip())
    return list(dict.fromkeys(out))[:n]  # distinct, order kept


def iter_synthetic(
    n_prompts: int = 120,
    min_responses: int = 4,
    max_responses: int = 8,
    seed: int = 0,
    label_temperature: float = 1.0,
    test_fraction: float = 0.2,
    batch_size: int = 10_000,
) -> Iterator[SourceBatch]:
    """Yield the synthetic dataset in batches; every prompt and label is a function of `seed`."""
    combos = [(t, s, tpl) for t in TOPICS for s in t.subjects for tpl in TEMPLATES]
    order = np.random.default_rng(seed).permutation(len(combos))
    batch = SourceBatch()
    for row_number in range(n_prompts):
        topic, subject, template = combos[order[row_number % len(combos)]]
        prompt = template.format(topic=topic.name, subject=subject)
        if row_number >= len(combos):
            prompt = f"{prompt} (case {row_number // len(combos)})"
        rng = np.random.default_rng([seed, row_number])
        pid = prompt_id(prompt)
        n = int(rng.integers(min_responses, max_responses + 1))
        batch.input_rows += 1
        batch.accepted_rows += 1
        for text in _responses_for(rng, topic, n):
            rid = response_id(pid, text)
            gold = gold_quality(prompt, text)
            noise = np.random.default_rng(int(digest(str(seed), rid)[:15], 16)).gumbel()
            batch.responses.append(
                ResponseRecord(
                    prompt_id=pid,
                    response_id=rid,
                    prompt=prompt,
                    response=text,
                    score=round(gold / label_temperature + float(noise), 6),
                    gold=gold,
                    split=split_for(pid, test_fraction),
                    source=SOURCE_NAME,
                    source_file=f"synthetic:seed={seed}",
                    row_number=row_number,
                )
            )
        if len(batch.responses) >= batch_size:
            yield batch
            batch = SourceBatch()
    if batch.input_rows:
        yield batch
