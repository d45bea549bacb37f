-- key: prompt_id, response_id_a, response_id_b
-- incremental: prompt_id
-- Cosine similarity of every unordered pair of responses to one prompt: the dot product over the product
-- of the two norms, each norm computed once per response rather than once per pair. Clamped to [-1, 1]
-- against float rounding; a zero vector (no direction) or a NaN gives null, so that the range check fails
-- loudly instead of the clamp hiding it. Stored as FLOAT, the precision of the embeddings.
with embedded as (
    select prompt_id, response_id, embedding, sqrt(list_dot_product(embedding, embedding)) as norm
    from features.response_embeddings
),
pairs as (
    select
        a.prompt_id,
        a.response_id as response_id_a,
        b.response_id as response_id_b,
        list_dot_product(a.embedding, b.embedding) / nullif(a.norm * b.norm, 0) as raw_cosine
    from embedded as a
    join embedded as b
        on a.prompt_id = b.prompt_id
        and a.response_id < b.response_id
)
select
    prompt_id,
    response_id_a,
    response_id_b,
    case
        when raw_cosine is null or isnan(raw_cosine) then null
        else greatest(-1.0, least(1.0, raw_cosine))::float
    end as cosine
from pairs
