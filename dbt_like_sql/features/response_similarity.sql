-- Cosine similarity of every unordered pair of responses to one prompt (embeddings are L2-normalised).
-- Clamped to [-1, 1] against float rounding.
select
    a.prompt_id,
    a.response_id as response_id_a,
    b.response_id as response_id_b,
    greatest(-1.0, least(1.0, array_cosine_similarity(a.embedding, b.embedding))) as cosine
from features.response_embeddings as a
join features.response_embeddings as b
    on a.prompt_id = b.prompt_id
    and a.response_id < b.response_id
