"""Small deterministic fixture files in each real source schema, plus a corpus of defective files.

Used by the tests and the ingest benchmark, never by the package; nothing here touches the network.
Every writer returns the path it wrote. `.gz` paths are gzip-compressed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# (question, best answer, decent answer, poor answer). Text is written to read like real assistant data.
QA_BANK: tuple[tuple[str, str, str, str], ...] = (
    (
        "How do I keep basil alive on a windowsill?",
        "Give it at least six hours of sun, water when the top centimetre of soil is dry, and pinch off "
        "the flower buds so the plant keeps putting energy into leaves.",
        "Basil likes sun and regular water. Try not to let it dry out completely.",
        "Plants die anyway, so just buy new basil every week.",
    ),
    (
        "What is a good way to start running if I have never run before?",
        "Start with run-walk intervals, for example one minute running and two minutes walking for twenty "
        "minutes, three times a week, and add a little running time each week.",
        "Go for short, easy runs a few times a week and build up slowly.",
        "Just run as far as you can every day until it stops hurting.",
    ),
    (
        "How can I make my sourdough bread less dense?",
        "Make sure your starter is active and doubling, let the dough bulk ferment until it has grown by "
        "about half and feels airy, and shape it with enough surface tension before baking it hot.",
        "A more active starter and a longer rise usually help.",
        "Add more flour. Dense bread is healthier anyway.",
    ),
    (
        "Can you explain what a Python virtual environment is?",
        "A virtual environment is a folder with its own Python interpreter and installed packages, so each "
        "project can have its own dependency versions without affecting the system Python. Create one "
        "with `python -m venv .venv` and activate it before installing packages.",
        "It is an isolated place to install packages for one project.",
        "It is a kind of virtual machine, you need to install VirtualBox for it.",
    ),
    (
        "How should I prepare for a job interview as a nurse?",
        "Review the job description, prepare short stories about patient care using the situation, task, "
        "action, result format, read about the hospital's values, and have two questions ready for them.",
        "Practise common interview questions and learn about the hospital.",
        "Interviews do not matter much, they hire whoever shows up.",
    ),
    (
        "What is the best way to clean a bike chain?",
        "Shift to the smallest cog, scrub the chain with a degreaser and a brush, rinse and dry it, then "
        "apply one drop of chain lube to each roller and wipe off the excess.",
        "Use some degreaser and a rag, then oil it again.",
        "Hose it down with dish soap and leave it to dry in the rain.",
    ),
    (
        "How do I stop procrastinating on my thesis?",
        "Break the thesis into tasks that take under an hour, schedule two focused blocks a day, and start "
        "each block with the smallest next step, such as writing one paragraph or fixing one figure.",
        "Set small daily goals and remove distractions while you work.",
        "Wait until you feel motivated, then it will happen on its own.",
    ),
    (
        "Why does my espresso taste sour?",
        "Sour espresso is usually under-extracted: grind finer, check the dose, and aim for roughly 25 to "
        "30 seconds for a double shot. Also make sure the machine is fully heated.",
        "Try grinding the coffee a bit finer.",
        "Sour coffee means the beans are poisonous, throw them out.",
    ),
    (
        "How can I help my puppy stop biting?",
        "When the puppy bites, stop play for a few seconds and offer a chew toy instead, reward gentle "
        "mouthing, and make sure it gets enough sleep because tired puppies bite more.",
        "Redirect the biting to a toy and praise it when it plays gently.",
        "Bite the puppy back so it learns how it feels.",
    ),
    (
        "What should I include in a monthly budget?",
        "List your take-home income, then fixed costs such as rent and bills, variable costs such as food "
        "and transport, savings and debt payments, and a small buffer for irregular expenses.",
        "Income, rent, bills, food and some savings.",
        "Budgets are pointless, just check your balance sometimes.",
    ),
    (
        "How do I paint a room without streaks?",
        "Prime patchy walls, load the roller evenly, paint in overlapping W shapes while the edge is still "
        "wet, and apply two thin coats rather than one thick coat.",
        "Use a good roller and do two coats.",
        "Paint it as fast as possible with a small brush.",
    ),
    (
        "What are good ways to memorise vocabulary in a new language?",
        "Use spaced repetition flashcards, learn words in example sentences rather than alone, say them "
        "out loud, and reuse new words in short messages or a diary the same day.",
        "Flashcards and daily practice work well.",
        "Read the dictionary from A to Z once.",
    ),
    (
        "How do I fix a flat bike tyre?",
        "Remove the wheel, lever one side of the tyre off, find the hole by pumping the tube and listening, "
        "patch or replace the tube, check the tyre for thorns, then refit and inflate to the printed "
        "pressure.",
        "Take the tube out, patch the hole or use a new tube, and pump it up.",
        "Fill the tyre with glue and ride on it.",
    ),
    (
        "Can you suggest a healthy breakfast that is quick to make?",
        "Overnight oats: mix oats, milk or yoghurt and a handful of berries in a jar before bed. In the "
        "morning add nuts or seeds. It takes five minutes and keeps you full until lunch.",
        "Oatmeal with fruit or eggs on toast are quick options.",
        "Skip breakfast and have three coffees instead.",
    ),
    (
        "How can I get my toddler to sleep through the night?",
        "Keep a calm, predictable bedtime routine, put them down drowsy but awake, keep the room dark and "
        "cool, and respond to night wakings briefly and boringly so they learn to settle again.",
        "A consistent bedtime routine helps most toddlers.",
        "Let them stay up until they fall asleep on the sofa.",
    ),
    (
        "What is the difference between a list and a tuple in Python?",
        "A list is mutable, so you can add, remove or change items, while a tuple is immutable once created. "
        "Tuples can be used as dictionary keys and signal that the data should not change.",
        "Lists can be changed and tuples cannot.",
        "There is no difference, they are two names for the same thing.",
    ),
    (
        "How do I write a good cover letter?",
        "Address a named person if you can, open with the role and one sentence on why you fit, give two "
        "short examples that match the job requirements, and close by asking for an interview. Keep it to "
        "one page.",
        "Explain why you want the job and what you can offer, and keep it short.",
        "Copy a template from the internet and send it everywhere unchanged.",
    ),
    (
        "Why are my tomato leaves turning yellow?",
        "Lower leaves yellowing is often a nitrogen shortage or overwatering; spotted yellow leaves can mean "
        "early blight. Check the soil moisture, feed with a balanced fertiliser, and remove spotted leaves.",
        "It could be too much water or not enough nutrients.",
        "Yellow is normal, tomatoes are supposed to turn yellow.",
    ),
    (
        "How do I make cold brew coffee at home?",
        "Mix one part coarse ground coffee with eight parts cold water, steep it in the fridge for 12 to 18 "
        "hours, then strain through a fine filter. Dilute the concentrate to taste.",
        "Steep coarse coffee in cold water overnight and strain it.",
        "Pour hot coffee over ice cubes, it is the same thing.",
    ),
    (
        "What are some tips for studying maths effectively?",
        "Work through problems actively instead of rereading notes, check each solution, revisit mistakes a "
        "few days later, and explain the steps out loud as if teaching someone else.",
        "Practise lots of problems and review your mistakes.",
        "Memorise the answers in the back of the book.",
    ),
    (
        "How can I reduce my screen time in the evening?",
        "Set a fixed time when your phone goes on charge outside the bedroom, turn on grayscale or app "
        "limits after 9 pm, and replace scrolling with a specific activity like reading or a walk.",
        "Use app timers and keep your phone away from your bed.",
        "Buy a bigger phone so you finish things faster.",
    ),
    (
        "How do I season a cast iron pan?",
        "Wash and dry the pan completely, rub a very thin layer of neutral oil over every surface, wipe off "
        "as much as you can, and bake it upside down at about 230 C for an hour. Repeat two or three times.",
        "Coat it lightly with oil and bake it in a hot oven.",
        "Soak it in water overnight so the seasoning sets.",
    ),
    (
        "What should I do if my code works locally but fails in CI?",
        "Compare environments: pin dependency versions, check environment variables and secrets, look for "
        "tests that depend on order, time zone or local files, and reproduce by running the CI container "
        "locally.",
        "Check that CI uses the same dependency versions and settings as your machine.",
        "Delete the failing tests so CI passes.",
    ),
    (
        "How do I introduce a new cat to my dog?",
        "Keep them in separate rooms at first, swap bedding so they learn each other's smell, then do short "
        "supervised meetings with the dog on a lead, rewarding calm behaviour and giving the cat high escape "
        "routes.",
        "Introduce them slowly and keep the dog on a lead at first.",
        "Put them in the same room and let them sort it out.",
    ),
)

FOLLOW_UPS = (
    "Thanks. Is there anything I should avoid?",
    "That helps. How long until I see a difference?",
)


def _open_text(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "wb"), encoding="utf-8", newline="")
    return open(path, "w", encoding="utf-8", newline="")


def _write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    with _open_text(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _transcript(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{role}: {text}" for role, text in turns)


def hh_rlhf_rows() -> list[dict[str, str]]:
    """48 rows in the Anthropic/hh-rlhf layout: 24 single-turn prompts (best vs poor answer), and for
    each prompt a second row: a follow-up turn in a multi-turn conversation (decent vs poor)."""
    rows = []
    for q, best, _decent, poor in QA_BANK:
        head = [("Human", q)]
        rows.append(
            {
                "chosen": _transcript([*head, ("Assistant", best)]),
                "rejected": _transcript([*head, ("Assistant", poor)]),
            }
        )
    for i, (q, best, decent, poor) in enumerate(QA_BANK):
        head = [("Human", q), ("Assistant", decent), ("Human", FOLLOW_UPS[i % 2])]
        good = f"{best.split('. ')[0].rstrip('.')}. Avoid rushing it, and be patient for a week or two."
        rows.append(
            {
                "chosen": _transcript([*head, ("Assistant", good)]),
                "rejected": _transcript([*head, ("Assistant", poor)]),
            }
        )
    return rows


def write_hh_rlhf(path: str | Path) -> Path:
    """Anthropic/hh-rlhf layout (chosen, rejected transcripts), 48 rows; `.gz` paths are gzipped."""
    return _write_jsonl(path, hh_rlhf_rows())


def _comments(i: int) -> list[tuple[str, int]]:
    """Four reddit-style comments for QA_BANK[i], with upvote scores (best first)."""
    _q, best, decent, poor = QA_BANK[i]
    return [
        (best, 120 + 7 * i),
        (f"In my experience: {decent}", 45 + 3 * i),
        (f"{decent.split('.')[0]}. Worked for me.", 9 + i),
        (poor, 1 + i % 3),
    ]


def shp2_rows() -> list[dict[str, Any]]:
    """stanfordnlp/SHP-2 layout: 10 posts x 4 comments, 5 of the 6 comment pairs of each post (50 rows)."""
    pairs = [(0, 1), (0, 2), (1, 3), (2, 3), (0, 3)]
    rows = []
    for i in range(10):
        q = QA_BANK[i][0]
        comments = _comments(i)
        for a, b in pairs:
            # Alternate which side the better comment is on, like the real data.
            if (i + a + b) % 2:
                a, b = b, a
            (ref_a, score_a), (ref_b, score_b) = comments[a], comments[b]
            rows.append(
                {
                    "post_id": f"p{i:04d}",
                    "domain": "askreddit_train",
                    "upvote_ratio": 0.95,
                    "history": f"{q} I have tried a few things already but nothing stuck. Any advice?",
                    "c_root_id_A": f"c{i:04d}{a}",
                    "c_root_id_B": f"c{i:04d}{b}",
                    "created_at_utc_A": 1_600_000_000 + 60 * a,
                    "created_at_utc_B": 1_600_000_000 + 60 * b,
                    "score_A": score_a,
                    "score_B": score_b,
                    "human_ref_A": ref_a,
                    "human_ref_B": ref_b,
                    "labels": int(score_a > score_b),
                    "seconds_difference": 60.0 * abs(a - b),
                    "score_ratio": max(score_a, score_b) / min(score_a, score_b),
                }
            )
    return rows


def write_shp2(path: str | Path) -> Path:
    """stanfordnlp/SHP-2 layout, 50 pair rows over 10 posts (4 distinct comments each)."""
    return _write_jsonl(path, shp2_rows())


_ASPECTS = (("helpfulness", 0), ("honesty", 1), ("instruction_following", 0), ("truthfulness", -1))


def _annotations(rating: int) -> dict[str, dict[str, str]]:
    return {
        aspect: {"Rating": str(max(1, min(5, rating + d))), "Rationale": f"{aspect} looks {rating}/5."}
        for aspect, d in (
            ("helpfulness", 0),
            ("honesty", 1),
            ("instruction_following", 0),
            ("truthfulness", -1),
        )
    }


def ultrafeedback_rows() -> list[dict[str, Any]]:
    """openbmb/UltraFeedback layout: 20 instructions x 4 completions; every fifth row has no
    overall_score, so the mean of the annotation ratings is used."""
    models = ("gpt-4", "llama-2-13b-chat", "alpaca-7b", "falcon-40b-instruct")
    rows = []
    for i in range(20):
        q, best, decent, poor = QA_BANK[i]
        texts = (best, decent, f"{decent} Let me know if you need more detail.", poor)
        ratings = (5, 4, 3, 1)
        completions = []
        for k, (model, text, rating) in enumerate(zip(models, texts, ratings, strict=True)):
            c: dict[str, Any] = {
                "model": model,
                "principle": "helpfulness",
                "custom_system_prompt": "",
                "response": text,
                "annotations": _annotations(rating),
                "critique": f"Response {k + 1} is rated {rating}.",
                "fine-grained_score": float(rating),
            }
            if i % 5 != 4:
                c["overall_score"] = float(2 * rating) - 0.5 * k
            else:
                c.pop("fine-grained_score")
            completions.append(c)
        rows.append(
            {
                "source": "sharegpt",
                "instruction": q,
                "models": list(models),
                "completions": completions,
                "correct_answers": ["None"],
                "incorrect_answers": ["None"],
            }
        )
    return rows


def write_ultrafeedback(path: str | Path) -> Path:
    """openbmb/UltraFeedback layout (instruction, completions), 20 rows, 80 responses."""
    return _write_jsonl(path, ultrafeedback_rows())


def ultrafeedback_binarized_rows() -> list[dict[str, Any]]:
    """HuggingFaceH4/ultrafeedback_binarized layout: 24 rows; rows 20-23 repeat prompts 0-3 with a
    different pair; rows 8-11 have no score_chosen / score_rejected (defaults 1.0 / 0.0)."""
    rows = []
    for i in range(24):
        q, best, decent, poor = QA_BANK[i % 20]
        chosen, rejected, sc, sr = (best, poor, 9.0, 2.5) if i < 20 else (decent, poor, 6.5, 2.5)
        row: dict[str, Any] = {
            "prompt": q,
            "prompt_id": f"{i:064x}",
            "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": chosen}],
            "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": rejected}],
            "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": chosen}],
        }
        if not 8 <= i < 12:
            row["score_chosen"], row["score_rejected"] = sc, sr
        rows.append(row)
    return rows


def write_ultrafeedback_binarized(path: str | Path) -> Path:
    """HuggingFaceH4/ultrafeedback_binarized layout (prompt, chosen/rejected message lists), 24 rows."""
    return _write_jsonl(path, ultrafeedback_binarized_rows())


def table_point_rows() -> list[dict[str, Any]]:
    """prompt, response, score: 12 prompts x 4 responses (48 rows)."""
    rows = []
    for i in range(12):
        q, best, decent, poor = QA_BANK[i]
        for text, score in ((best, 4.5), (decent, 3.0), (f"{decent} Good luck!", 2.5), (poor, 0.5)):
            rows.append({"prompt": q, "response": text, "score": score})
    return rows


def write_table_csv(path: str | Path) -> Path:
    """`table` source, pointwise layout: CSV with columns prompt, response, score (48 rows)."""
    path = Path(path)
    with _open_text(path) as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "response", "score"])
        w.writeheader()
        w.writerows(table_point_rows())
    return path


def table_pair_rows() -> list[dict[str, Any]]:
    """prompt, chosen, rejected: 24 prompts x 2 pairs (48 rows)."""
    rows = []
    for q, best, decent, poor in QA_BANK:
        rows.append({"prompt": q, "chosen": best, "rejected": poor})
        rows.append({"prompt": q, "chosen": decent, "rejected": poor})
    return rows


def write_table_parquet(path: str | Path) -> Path:
    """`table` source, pair layout: Parquet with columns prompt, chosen, rejected (48 rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(table_pair_rows()), path, row_group_size=16)
    return path


def write_large_table_jsonl(path: str | Path, n_rows: int, responses_per_prompt: int = 4) -> Path:
    """`table` pointwise JSONL of n_rows rows (for benchmarks), streamed to disk in chunks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dumps = json.dumps
    with open(path, "w", encoding="utf-8") as f:
        chunk: list[str] = []
        for i in range(n_rows):
            p, k = divmod(i, responses_per_prompt)
            q, best, decent, poor = QA_BANK[p % len(QA_BANK)]
            text = (best, decent, poor)[k % 3]
            chunk.append(
                dumps(
                    {
                        "prompt": f"{q} (variant {p})",
                        "response": f"{text} (take {k})",
                        "score": float((7 * i) % 11),
                    }
                )
            )
            if len(chunk) >= 10_000:
                f.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            f.write("\n".join(chunk) + "\n")
    return path


# ------------------------------------------------------------------------------------------ bad corpus


@dataclass(frozen=True)
class Expected:
    """What iter_source must report for one file of the bad corpus."""

    source: str
    input_rows: int
    accepted_rows: int
    rejects: dict[str, int]
    """reason -> count."""
    responses: int
    """ResponseRecords yielded."""
    column_map: dict[str, str] | None = None
    max_chars: int = 8000
    reject_fields: dict[str, str] = field(default_factory=dict)
    """reason -> field named by (every) reject of that reason, where it is fixed."""


def _hh(q: str, a: str) -> str:
    return _transcript([("Human", q), ("Assistant", a)])


def write_bad_corpus(directory: str | Path) -> dict[str, Expected]:
    """Write files with known defects; return {file name: Expected}. all 15 reject reasons are covered."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Expected] = {}
    q0, best0, _, poor0 = QA_BANK[0]
    q1, best1, decent1, poor1 = QA_BANK[1]
    good_hh = {"chosen": _hh(q0, best0), "rejected": _hh(q0, poor0)}

    # --- hh_rlhf, JSON lines with bad bytes, bad JSON and bad transcripts.
    lines: list[bytes] = [
        json.dumps(good_hh).encode(),  # 1 ok
        b'{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello", "rejected": ',  # 2 invalid_json
        b'["chosen", "rejected"]',  # 3 not_an_object
        json.dumps({"chosen": _hh(q1, best1)}).encode(),  # 4 missing_field rejected
        json.dumps({"chosen": 42, "rejected": _hh(q1, poor1)}).encode(),  # 5 wrong_type chosen
        json.dumps({"chosen": _hh(q1, best1), "rejected": _hh(q1, "   ")}).encode(),  # 6 empty_text
        json.dumps({"chosen": "\n\nHuman: hi there", "rejected": "\n\nHuman: hello"}).encode(),  # 7 no turn
        json.dumps({"chosen": _hh(q1, best1), "rejected": _hh(q0, poor1)}).encode(),  # 8 prompt_mismatch
        json.dumps({"chosen": _hh(q1, best1), "rejected": _hh(q1, best1 + "  ")}).encode(),  # 9 identical
        json.dumps({"chosen": _hh(q1, "word " * 2000), "rejected": _hh(q1, poor1)}).encode(),  # 10 too long
        b"",  # blank line: not a row
        json.dumps(good_hh).encode(),  # 12 duplicate_row of line 1
        b'{"chosen": "\\n\\nHuman: caf\xe9\\n\\nAssistant: ok", "rejected": "x"}',  # 13 undecodable_bytes
        json.dumps({"chosen": _hh(q1, best1), "rejected": _hh(q1, decent1)}).encode(),  # 14 ok
        json.dumps({"chosen": None, "rejected": _hh(q1, decent1)}).encode(),  # 15 missing_field (null)
    ]
    (d / "hh_bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out["hh_bad.jsonl"] = Expected(
        source="hh_rlhf",
        input_rows=14,
        accepted_rows=2,
        responses=4,
        rejects={
            "invalid_json": 1,
            "not_an_object": 1,
            "missing_field": 2,
            "wrong_type": 1,
            "empty_text": 1,
            "no_assistant_turn": 1,
            "prompt_mismatch": 1,
            "identical_responses": 1,
            "text_too_long": 1,
            "duplicate_row": 1,
            "undecodable_bytes": 1,
        },
        reject_fields={
            "invalid_json": "row",
            "not_an_object": "row",
            "wrong_type": "chosen",
            "empty_text": "rejected",
            "no_assistant_turn": "chosen",
            "prompt_mismatch": "rejected",
            "identical_responses": "rejected",
            "text_too_long": "chosen",
            "duplicate_row": "row",
            "undecodable_bytes": "row",
        },
    )

    # --- shp2: bad scores and texts; gzip-compressed.
    base = shp2_rows()[:4]  # post 0: 4 rows, comments 0..3 -> 4 distinct responses
    bad = [
        {**base[0], "score_A": float("nan")},  # non_finite_score
        {**base[1], "score_B": float("inf")},  # non_finite_score
        {**base[2], "score_A": "lots"},  # wrong_type
        {**base[3], "score_B": True},  # wrong_type
        {k: v for k, v in base[0].items() if k != "history"},  # missing_field
        {**base[1], "human_ref_B": base[1]["human_ref_A"]},  # identical_responses
        {**base[2], "human_ref_B": " \n\t "},  # empty_text
        {**base[3], "history": "x" * 301},  # text_too_long (max_chars=300)
        {**base[0], "score_A": "17"},  # ok: numeric strings are scores
    ]
    with gzip.open(d / "shp2_bad.jsonl.gz", "wt", encoding="utf-8") as f:
        for row in [*base, *bad, base[0]]:  # last: duplicate_row
            f.write(json.dumps(row) + "\n")  # json writes NaN / Infinity literals
    out["shp2_bad.jsonl.gz"] = Expected(
        source="shp2",
        input_rows=14,
        accepted_rows=5,
        responses=4,  # the 4 comments of post 0, each yielded once (the "17"-score row repeats texts)
        max_chars=300,
        rejects={
            "non_finite_score": 2,
            "wrong_type": 2,
            "missing_field": 1,
            "identical_responses": 1,
            "empty_text": 1,
            "text_too_long": 1,
            "duplicate_row": 1,
        },
        reject_fields={
            "missing_field": "history",
            "identical_responses": "human_ref_B",
            "empty_text": "human_ref_B",
            "text_too_long": "history",
        },
    )

    # --- ultrafeedback, original layout.
    good = ultrafeedback_rows()[:2]
    comps = good[0]["completions"]
    no_score = {k: v for k, v in comps[1].items() if k not in ("overall_score", "fine-grained_score")}
    no_score["annotations"] = {"helpfulness": {"Rating": "N/A"}}
    uf = [
        *good,  # 2 ok
        {**good[0], "completions": []},  # empty_completions
        {**good[0], "completions": "gpt-4 said hi"},  # wrong_type
        {k: v for k, v in good[0].items() if k != "completions"},  # missing_field completions
        {**good[0], "completions": [comps[0], {**comps[1], "response": ""}]},  # empty_text
        {**good[0], "completions": [comps[0], no_score]},  # missing_field (no score at all)
        {**good[0], "completions": [comps[0], {**comps[1], "overall_score": float("-inf")}]},  # non_finite
        {**good[0], "instruction": 7},  # wrong_type
        {**good[1], "completions": [comps[0], "text"]},  # wrong_type completions[1]
    ]
    _write_jsonl(d / "uf_bad.jsonl", uf)
    out["uf_bad.jsonl"] = Expected(
        source="ultrafeedback",
        input_rows=10,
        accepted_rows=2,
        responses=8,
        rejects={
            "empty_completions": 1,
            "wrong_type": 3,
            "missing_field": 2,
            "empty_text": 1,
            "non_finite_score": 1,
        },
        reject_fields={
            "empty_completions": "completions",
            "empty_text": "completions[1].response",
            "non_finite_score": "completions[1].overall_score",
        },
    )

    # --- ultrafeedback, binarized layout.
    good_b = ultrafeedback_binarized_rows()[:3]
    row0 = good_b[0]
    user0 = row0["chosen"][0]
    other_user = {"role": "user", "content": "something else"}
    ufb = [
        *good_b,  # 3 ok
        {**row0, "chosen": 17},  # bad_message_list
        {**row0, "chosen": []},  # bad_message_list
        {**row0, "rejected": [user0]},  # bad_message_list (no assistant reply last)
        {**row0, "chosen": [user0, {"role": "assistant"}]},  # bad_message_list (no content)
        {**row0, "chosen": [user0, "hello"]},  # bad_message_list
        {**row0, "rejected": [other_user, row0["rejected"][1]]},  # prompt_mismatch
        {**row0, "rejected": row0["chosen"]},  # identical_responses
        {**row0, "score_chosen": "NaN"},  # non_finite_score
        {**row0, "chosen": [user0, {"role": "assistant", "content": ""}]},  # empty_text
        {**row0, "prompt": None, "score_chosen": 8.0},  # ok: prompt taken from the user message
    ]
    _write_jsonl(d / "ufb_bad.jsonl", ufb)
    out["ufb_bad.jsonl"] = Expected(
        source="ultrafeedback",
        input_rows=13,
        accepted_rows=4,
        responses=8,
        rejects={
            "bad_message_list": 5,
            "prompt_mismatch": 1,
            "identical_responses": 1,
            "non_finite_score": 1,
            "empty_text": 1,
        },
        reject_fields={
            "prompt_mismatch": "rejected",
            "identical_responses": "rejected",
            "non_finite_score": "score_chosen",
            "empty_text": "chosen",
        },
    )

    # --- table, CSV with custom column names.
    header = b"question,answer,rating\r\n"
    csv_lines = [
        b'"How do I keep basil alive?","Give it sun and water when dry.",4.5',  # ok
        b'"How do I keep basil alive?","Water it daily.",2',  # ok
        b'"How do I keep basil alive?","Talk to it.",',  # missing_field (empty score)
        b'"How do I keep basil alive?","Sing to it.",high',  # wrong_type
        b'"How do I keep basil alive?","Ignore it.",nan',  # non_finite_score
        b'"How do I keep basil alive?","Move it.",1,extra',  # bad_csv_row
        b'"How do I keep basil alive?","Caf\xe9 style.",1',  # undecodable_bytes
        b'"  ","Something.",1',  # empty_text
        b'"How do I keep basil alive?","Water it daily."',  # missing_field (short row)
        b"",  # blank: not a row
        b'"How do I keep basil alive?","Give it sun and water when dry.",4.5',  # duplicate_row
        b'"Multi-line ""quoted""\nprompt?","Yes, quoted fields may span lines.",3',  # ok
    ]
    (d / "table_bad.csv").write_bytes(header + b"\r\n".join(csv_lines) + b"\r\n")
    out["table_bad.csv"] = Expected(
        source="table",
        column_map={"prompt": "question", "response": "answer", "score": "rating"},
        input_rows=11,
        accepted_rows=3,
        responses=3,
        rejects={
            "missing_field": 2,
            "wrong_type": 1,
            "non_finite_score": 1,
            "bad_csv_row": 1,
            "undecodable_bytes": 1,
            "empty_text": 1,
            "duplicate_row": 1,
        },
        reject_fields={
            "missing_field": "rating",
            "wrong_type": "rating",
            "non_finite_score": "rating",
            "empty_text": "question",
        },
    )

    # --- table, Parquet pair layout with nulls.
    import pyarrow as pa
    import pyarrow.parquet as pq

    pairs = table_pair_rows()[:4]
    prq = [
        *pairs,  # 4 ok
        {**pairs[0], "prompt": None},  # missing_field
        {**pairs[1], "rejected": pairs[1]["chosen"]},  # identical_responses
        {**pairs[2], "chosen": ""},  # empty_text
        pairs[3],  # duplicate_row
    ]
    pq.write_table(pa.Table.from_pylist(prq), d / "table_bad.parquet", row_group_size=3)
    out["table_bad.parquet"] = Expected(
        source="table",
        input_rows=8,
        accepted_rows=4,
        responses=8,
        rejects={"missing_field": 1, "identical_responses": 1, "empty_text": 1, "duplicate_row": 1},
        reject_fields={"missing_field": "prompt", "identical_responses": "rejected", "empty_text": "chosen"},
    )
    return out
