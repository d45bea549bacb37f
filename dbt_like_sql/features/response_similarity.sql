-- key: prompt_id, response_id_a, response_id_b
-- Cosine similarity of every unordered pair of responses to one prompt (embeddings are L2-normalised).
-- Clamped to [-1, 1] against float rounding; a zero vector gives NaN, kept as null so the range check fails
-- loudly instead of the clamp turning it into 1.0.
with pairs as (
    select
        a.prompt_id,
        a.response_id as response_id_a,
        b.response_id as response_id_b,
        list_cosine_similarity(a.embedding, b.embedding) as raw_cosine
    from features.response_embeddings as a
    join features.response_embeddings as b
        on a.prompt_id = b.prompt_id
        and a.response_id < b.response_id
)
select
    prompt_id,
    response_id_a,
    response_id_b,
    case when isnan(raw_cosine) then null else greatest(-1.0, least(1.0, raw_cosine)) end as cosine
from pairs
