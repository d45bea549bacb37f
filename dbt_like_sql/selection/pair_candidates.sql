-- Every directed candidate pair: chosen/rejected by label score (pairs with tied labels have no direction
-- and are left out), the score and gold gaps, and the pair's similarity rank within its prompt and overall.
with scored as (
    select
        s.prompt_id,
        s.cosine,
        case when ra.score > rb.score then ra.response_id else rb.response_id end as chosen_id,
        case when ra.score > rb.score then rb.response_id else ra.response_id end as rejected_id,
        greatest(ra.score, rb.score) as chosen_score,
        least(ra.score, rb.score) as rejected_score,
        case when ra.score > rb.score then ra.gold - rb.gold else rb.gold - ra.gold end as gold_gap
    from features.response_similarity as s
    join raw.responses as ra on ra.response_id = s.response_id_a
    join raw.responses as rb on rb.response_id = s.response_id_b
    where ra.score <> rb.score
)
select
    scored.prompt_id,
    p.split,
    scored.chosen_id,
    scored.rejected_id,
    scored.chosen_score,
    scored.rejected_score,
    scored.chosen_score - scored.rejected_score as score_gap,
    scored.gold_gap,
    scored.gold_gap < 0 as label_error,
    scored.cosine,
    p.n_responses,
    row_number() over (
        partition by scored.prompt_id order by scored.cosine, scored.chosen_id, scored.rejected_id
    ) as rank_least_similar,
    row_number() over (
        partition by scored.prompt_id order by scored.cosine desc, scored.chosen_id, scored.rejected_id
    ) as rank_most_similar,
    count(*) over (partition by scored.prompt_id) as pairs_in_prompt
from scored
join raw.prompts as p on p.prompt_id = scored.prompt_id
