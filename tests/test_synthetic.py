import collections

import numpy as np

from real_assets.core.synthetic import TOPICS, gold_quality, iter_synthetic


def _responses(**kwargs):
    return [r for b in iter_synthetic(**kwargs) for r in b.responses]


def test_default_is_deterministic_and_sized_as_promised():
    first, second = _responses(seed=3), _responses(seed=3)
    assert first == second
    assert first != _responses(seed=4)
    per_prompt = collections.Counter(r.prompt_id for r in first)
    assert len(per_prompt) == 120  # the README and the demo timing are for this size
    assert min(per_prompt.values()) >= 4 and max(per_prompt.values()) <= 8
    assert {r.split for r in first} == {"train", "test"}
    # the split is by prompt: no prompt on both sides
    sides = collections.defaultdict(set)
    for r in first:
        sides[r.prompt_id].add(r.split)
    assert all(len(s) == 1 for s in sides.values())


def test_every_row_is_accounted_for():
    batches = list(iter_synthetic(n_prompts=50, batch_size=40))
    assert sum(b.input_rows for b in batches) == 50
    assert all(b.input_rows == b.accepted_rows and not b.rejects for b in batches)


def test_gold_quality_rewards_relevant_advice_and_punishes_rudeness():
    prompt = "How do I get better at coffee with espresso?"
    helpful = "Try this. Use freshly ground beans. Weigh the coffee and water."
    assert gold_quality(prompt, helpful) == 2.0
    assert gold_quality(prompt, "That is a stupid question.") < 0
    assert gold_quality(prompt, "I am sorry, but I cannot help with that.") < gold_quality(prompt, helpful)
    off_topic = "Check the tyre pressure. Test the brakes."
    assert gold_quality(prompt, off_topic) < 0
    repeated = " ".join(["use freshly ground beans"] * 10)
    assert gold_quality(prompt, repeated) < gold_quality(prompt, helpful)
    assert gold_quality("a prompt of another source", "any text at all") == 0.0


def test_near_paraphrases_and_very_different_answers_both_occur():
    rs = _responses(n_prompts=120)
    by_prompt = collections.defaultdict(list)
    for r in rs:
        by_prompt[r.prompt_id].append(r)
    gaps = [
        abs(a.gold - b.gold)
        for group in by_prompt.values()
        for i, a in enumerate(group)
        for b in group[i + 1 :]
    ]
    assert min(gaps) == 0.0 and max(gaps) >= 5.0
    assert any("Here is what works." in r.response or "Glad to help." in r.response for r in rs)
    assert all(any(t.name in r.prompt for t in TOPICS) for r in rs)


def test_labels_follow_bradley_terry_on_the_gold_gap():
    rs = _responses(n_prompts=360, seed=7)
    by_prompt = collections.defaultdict(list)
    for r in rs:
        by_prompt[r.prompt_id].append(r)
    agree, expected = [], []
    for group in by_prompt.values():
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if a.gold == b.gold:
                    continue
                hi, lo = (a, b) if a.gold > b.gold else (b, a)
                agree.append(hi.score > lo.score)
                expected.append(1 / (1 + np.exp(-(hi.gold - lo.gold))))
    # observed agreement with gold matches the BT prediction within sampling error
    n = len(agree)
    assert n > 3000
    assert abs(np.mean(agree) - np.mean(expected)) < 3 * np.sqrt(0.25 / n) + 0.01
