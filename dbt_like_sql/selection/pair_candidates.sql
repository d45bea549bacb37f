-- key: prompt_id, chosen_id, rejected_id
-- incremental: prompt_id
-- Every directed candidate pair: chosen/rejected by label score (pairs with tied labels have no direction
-- and are left out), the score and gold gaps and the pair's similarity.
-- Where a prompt's labels are chosen/rejected comparisons without scores (raw.comparisons, HH-RLHF), only
-- the compared pairs are candidates: no annotator ever ranked chosen-of-one-row against rejected-of-another.
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
),
compared as (
    select distinct prompt_id, chosen_id, rejected_id from raw.comparisons
),
candidates as (
    select
        scored.prompt_id,
        scored.cosine,
        scored.chosen_id,
        scored.rejected_id,
        scored.chosen_score,
        scored.rejected_score,
        scored.gold_gap,
        compared.prompt_id is not null as labelled_pair
    from scored
    left join compared
        on compared.prompt_id = scored.prompt_id
        and compared.chosen_id = scored.chosen_id
        and compared.rejected_id = scored.rejected_id
    where compared.prompt_id is not null
        or scored.prompt_id not in (select prompt_id from compared)
)
select
    candidates.prompt_id,
    p.split,
    candidates.chosen_id,
    candidates.rejected_id,
    candidates.chosen_score,
    candidates.rejected_score,
    candidates.chosen_score - candidates.rejected_score as score_gap,
    candidates.gold_gap,
    candidates.gold_gap < 0 as label_error,
    candidates.cosine,
    candidates.labelled_pair,
    p.n_responses
from candidates
join raw.prompts as p on p.prompt_id = candidates.prompt_id
