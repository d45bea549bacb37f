-- key: prompt_id, chosen_id, rejected_id
-- incremental: prompt_id
-- Every directed candidate pair: chosen/rejected by label score (pairs with tied labels have no direction
-- and are left out), the score and gold gaps and the pair's similarity.
-- Where a prompt's labels are chosen/rejected comparisons without scores (raw.comparisons, HH-RLHF), only
-- the compared pairs are candidates: no annotator ever ranked chosen-of-one-row against rejected-of-another.
-- A compared pair is directed by its comparisons (annotated candidates have no score at all); a pair
-- compared both ways (annotators who disagree) has no direction and is left out.
with compared as (
    select distinct prompt_id, chosen_id, rejected_id from raw.comparisons
),
agreed as (
    select
        c.prompt_id,
        c.chosen_id,
        least(c.chosen_id, c.rejected_id) as id_a,
        greatest(c.chosen_id, c.rejected_id) as id_b
    from compared as c
    where not exists (
        select 1 from compared as o
        where o.prompt_id = c.prompt_id and o.chosen_id = c.rejected_id and o.rejected_id = c.chosen_id
    )
),
pairs as (
    select
        s.prompt_id,
        s.cosine,
        ra.response_id as id_a,
        rb.response_id as id_b,
        ra.score as score_a,
        rb.score as score_b,
        ra.gold as gold_a,
        rb.gold as gold_b,
        case
            when agreed.prompt_id is not null then agreed.chosen_id = ra.response_id
            when ra.score <> rb.score then ra.score > rb.score
        end as a_chosen,
        agreed.prompt_id is not null as labelled_pair
    from features.response_similarity as s
    join raw.responses as ra on ra.response_id = s.response_id_a
    join raw.responses as rb on rb.response_id = s.response_id_b
    left join agreed
        on agreed.prompt_id = s.prompt_id
        and agreed.id_a = s.response_id_a
        and agreed.id_b = s.response_id_b
    where agreed.prompt_id is not null
        or s.prompt_id not in (select prompt_id from compared)
),
directed as (
    select
        prompt_id,
        cosine,
        labelled_pair,
        case when a_chosen then id_a else id_b end as chosen_id,
        case when a_chosen then id_b else id_a end as rejected_id,
        case when a_chosen then score_a else score_b end as chosen_score,
        case when a_chosen then score_b else score_a end as rejected_score,
        case when a_chosen then gold_a - gold_b else gold_b - gold_a end as gold_gap
    from pairs
    where a_chosen is not null
)
select
    directed.prompt_id,
    p.split,
    directed.chosen_id,
    directed.rejected_id,
    directed.chosen_score,
    directed.rejected_score,
    directed.chosen_score - directed.rejected_score as score_gap,
    directed.gold_gap,
    directed.gold_gap < 0 as label_error,
    directed.cosine,
    directed.labelled_pair,
    p.n_responses
from directed
join raw.prompts as p on p.prompt_id = directed.prompt_id
