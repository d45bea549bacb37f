"""Features domain: response embeddings (GPU when present) and the SQL models built on them."""

import time

import dagster as dg
import numpy as np
import pyarrow as pa

from real_assets.core.embedding import DEFAULT_EMBEDDER, embed_texts
from real_assets.defs.common import GPU_POOL, finish, upstream_versions
from real_assets.defs.ingest import raw_responses
from real_assets.defs.versions import content_version
from real_assets.resources import Compute, Tracking, Warehouse

EMBEDDINGS_VERSION = "1"


class EmbeddingConfig(dg.Config):
    """`model` is a sentence-transformers id or path (default: the packaged all-MiniLM-L6-v2), or
    `policy-lm:<causal LM id or path>` for the paper's mean-pooled policy-LM embeddings."""

    model: str = DEFAULT_EMBEDDER
    trust_remote_code: bool = False


def embed_new_responses(warehouse: Warehouse, compute: Compute, config: EmbeddingConfig) -> dict:
    """Embed the responses that have no embedding from this model yet; drop embeddings of responses that
    are gone. A change of model re-embeds everything. The GPU work holds no warehouse connection."""
    with warehouse.connect(read_only=True) as con:
        current = con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = 'features' and table_name = 'response_embeddings'"
        ).fetchone()[0]
        if current:
            todo = con.execute(
                "select response_id, prompt_id, response from raw.responses where response_id not in "
                "(select response_id from features.response_embeddings where model_id = ?) "
                "order by response_id",
                [config.model],
            ).fetchall()
        else:
            todo = con.execute(
                "select response_id, prompt_id, response from raw.responses order by response_id"
            ).fetchall()
    device = compute.choice()
    started = time.perf_counter()
    vectors = (
        embed_texts(
            [t[2] for t in todo], config.model, device, compute.embed_batch_size, config.trust_remote_code
        )
        if todo
        else np.zeros((0, 0), np.float32)
    )
    seconds = time.perf_counter() - started
    with warehouse.connect() as con:
        if todo:
            dim = vectors.shape[1]
            if current:
                existing_dim = con.execute(
                    "select array_length(embedding) from features.response_embeddings limit 1"
                ).fetchone()
                stale_model = con.execute(
                    "select count(*) from features.response_embeddings where model_id <> ?", [config.model]
                ).fetchone()[0]
                if stale_model or (existing_dim and existing_dim[0] != dim):
                    con.execute("drop table features.response_embeddings")
            con.execute(
                f"create table if not exists features.response_embeddings (response_id varchar primary key, "
                f"prompt_id varchar not null, model_id varchar not null, embedding float[{dim}] not null)"
            )
            staged = pa.table(  # noqa: F841 - read by DuckDB by name
                {
                    "response_id": [t[0] for t in todo],
                    "prompt_id": [t[1] for t in todo],
                    "model_id": [config.model] * len(todo),
                    "embedding": pa.FixedSizeListArray.from_arrays(
                        pa.array(vectors.reshape(-1), pa.float32()), dim
                    ),
                }
            )
            con.execute("insert or replace into features.response_embeddings select * from staged")
        con.execute(
            "delete from features.response_embeddings where response_id not in "
            "(select response_id from raw.responses)"
        )
        version, rows = content_version(con, "response_embeddings")
        dim = con.execute(
            "select array_length(embedding) from features.response_embeddings limit 1"
        ).fetchone()
    return {
        "model": config.model,
        "device": device.device,
        "dtype": device.dtype_name,
        "rows": rows,
        "embedded_now": len(todo),
        "dimensions": int(dim[0]) if dim else 0,
        "rows_per_second": len(todo) / seconds if todo and seconds else 0.0,
        "embed_seconds": seconds,
        "data_version": version,
    }


@dg.asset(
    group_name="features",
    kinds={"duckdb", "pytorch"},
    deps=[raw_responses],
    code_version=EMBEDDINGS_VERSION,
    pool=GPU_POOL,
    description="L2-normalised embedding of every response (features.response_embeddings, FLOAT[d]), "
    "computed independently of the prompt, on CUDA in half precision when present.",
)
def response_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    warehouse: Warehouse,
    compute: Compute,
    tracking: Tracking,
) -> dg.MaterializeResult:
    with tracking.step(context, EMBEDDINGS_VERSION, upstream_versions(context)) as step:
        step.log_params(config.model_dump() | {"batch_size": compute.embed_batch_size})
        result = embed_new_responses(warehouse, compute, config)
        version = result.pop("data_version")
        metadata = {**result, "table": "features.response_embeddings", "dagster/row_count": result["rows"]}
        return finish(context, tracking, step, version, metadata)
