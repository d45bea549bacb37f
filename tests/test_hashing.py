from real_assets.core.hashing import (
    digest,
    digest_rows,
    normalise_text,
    prompt_id,
    response_id,
    split_for,
)


def test_ids_ignore_whitespace_and_unicode_form_but_not_content():
    assert prompt_id("How  do I\n bake?") == prompt_id(" How do I bake? ")
    assert prompt_id("caf\u00e9") == prompt_id("cafe\u0301")  # NFC
    assert prompt_id("How do I bake?") != prompt_id("How do I bake bread?")
    pid = prompt_id("q")
    assert response_id(pid, "a b") == response_id(pid, "a  b")
    assert response_id(pid, "a") != response_id(prompt_id("other"), "a")


def test_digest_separates_parts():
    assert digest("ab", "c") != digest("a", "bc")
    assert digest_rows([(1, "a")]) != digest_rows([(1, "b")])
    assert normalise_text("  a \t b ") == "a b"


def test_split_is_deterministic_and_near_the_fraction():
    ids = [prompt_id(f"prompt {i}") for i in range(4000)]
    splits = [split_for(i, 0.2) for i in ids]
    assert splits == [split_for(i, 0.2) for i in ids]
    share = splits.count("test") / len(splits)
    assert 0.17 < share < 0.23
    assert {split_for(i, 0.0) for i in ids} == {"train"}
