-- key: prompt_id, response_id_a, response_id_b
-- incremental: prompt_id
-- Cosine similarity of every unordered pair of responses to one prompt (embeddings are L2-normalised).
-- Clamped to [-1, 1] against float rounding; a zero vector (no direction: list_cosine_similarity gives -1
-- for it) or a NaN is kept as null so that the range check fails loudly instead of the clamp hiding it.
with pairs as (
    select
        a.prompt_id,
        a.response_id as response_id_a,
        b.response_id as response_id_b,
        case
            when list_dot_product(a.embedding, a.embedding) = 0 or list_dot_product(b.embedding, b.embedding) = 0
                then null
            else list_cosine_similarity(a.embedding, b.embedding)
        end as raw_cosine
    from features.response_embeddings as a
    join features.response_embeddings as b
        on a.prompt_id = b.prompt_id
        and a.response_id < b.response_id
)
select
    prompt_id,
    response_id_a,
    response_id_b,
    case
        when raw_cosine is null or isnan(raw_cosine) then null
        else greatest(-1.0, least(1.0, raw_cosine))
    end as cosine
from pairs
