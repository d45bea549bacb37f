"""Reject reason codes (`RejectRecord.reason`), each with what it means."""

INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
UNDECODABLE_BYTES = "undecodable_bytes"
INVALID_UNICODE = "invalid_unicode"
TOO_DEEPLY_NESTED = "too_deeply_nested"
DUPLICATE_KEY = "duplicate_key"
BAD_CSV_ROW = "bad_csv_row"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
NON_FINITE_SCORE = "non_finite_score"
NO_ASSISTANT_TURN = "no_assistant_turn"
PROMPT_MISMATCH = "prompt_mismatch"
IDENTICAL_RESPONSES = "identical_responses"
EMPTY_COMPLETIONS = "empty_completions"
BAD_MESSAGE_LIST = "bad_message_list"
DUPLICATE_ROW = "duplicate_row"

REASONS: dict[str, str] = {
    INVALID_JSON: "a JSONL line that is not valid JSON (numbers too long for Python included)",
    NOT_AN_OBJECT: "a JSONL line that is valid JSON but not an object",
    UNDECODABLE_BYTES: "a line or CSV record that is not valid UTF-8",
    INVALID_UNICODE: 'a text with a lone UTF-16 surrogate (e.g. JSON "\\ud800"), which UTF-8 cannot carry',
    TOO_DEEPLY_NESTED: "a JSONL line nested deeper than Python's parser allows",
    DUPLICATE_KEY: "a JSONL object that names one of the fields read twice (which one counts is ambiguous)",
    BAD_CSV_ROW: "a CSV record with more fields than the header, an unbalanced quote (reported at the line "
    "where the quote opens; parsing resumes at the next line), or that the csv module cannot parse",
    MISSING_FIELD: "a required field is absent, null, or (CSV) an empty score cell",
    WRONG_TYPE: "a field of the wrong type (text not a string, score not a number, completions not a list)",
    EMPTY_TEXT: "a prompt or response that is empty or whitespace only",
    TEXT_TOO_LONG: "a prompt or response longer than SourceSpec.max_chars characters",
    NON_FINITE_SCORE: "a score that is NaN or infinite (or too large for a float)",
    NO_ASSISTANT_TURN: "an hh-rlhf transcript without a '\\n\\nAssistant:' turn",
    PROMPT_MISMATCH: "chosen and rejected do not share the same prompt / conversation",
    IDENTICAL_RESPONSES: "chosen and rejected are the same text after normalisation",
    EMPTY_COMPLETIONS: "an UltraFeedback row whose completions list is empty",
    BAD_MESSAGE_LIST: "chosen/rejected is not a [{role, content}, ...] list ending with an assistant message",
    DUPLICATE_ROW: "an exact duplicate of an earlier accepted input row in this run",
}

ROW_FIELD = "row"
"""RejectRecord.field for defects of the whole row (bad bytes, bad JSON, duplicate)."""
