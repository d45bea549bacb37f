"""Features domain: response embeddings (GPU when present) and the SQL models built on them."""

import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from real_assets.core.embedding import DEFAULT_EMBEDDER, loadable_model_id
from real_assets.core.progress import Progress, Report
from real_assets.defs.common import Step, step_asset
from real_assets.defs.conditions import EAGER
from real_assets.defs.ingest import raw_responses
from real_assets.defs.versions import WarehouseTable, content_version, digest_metadata, table_metadata
from real_assets.resources import Compute, Home, Warehouse, replace_rows, table_exists

EMBEDDINGS = WarehouseTable("features.response_embeddings", ("response_id",))
EMBEDDINGS_TABLE = EMBEDDINGS.name


class EmbeddingConfig(dg.Config):
    """`model` is a sentence-transformers id or path (default: the packaged all-MiniLM-L6-v2), or
    `policy-lm:<causal LM id or path>` for the paper's mean-pooled policy-LM embeddings
    (`policy-lm:packaged:smollm2-135m-instruct`: the packaged SmolLM2, no hub)."""

    model: str = DEFAULT_EMBEDDER
    trust_remote_code: bool = False
    progress_every_s: float = 5.0
    """Seconds between progress lines in the run log (texts done/total, rate, ETA)."""


EMBED_CHUNK = 20_000
"""Responses embedded and written per step of the loop: bounds memory for large tables."""


def embed_new_responses(
    warehouse: Warehouse,
    compute: Compute,
    config: EmbeddingConfig,
    report: Report | None = None,
    models_dir: Path | None = None,
) -> dict:
    """Embed the responses that have no embedding from this model yet, a chunk at a time; drop embeddings
    of responses that are gone. A change of model re-embeds everything. The model work holds no warehouse
    connection: each chunk is written with a short one. Progress lines go to `report` (the run log)."""
    with warehouse.connect() as con:
        # One model per table: a change of model (or of its dimension) starts the table afresh.
        if (
            table_exists(con, EMBEDDINGS_TABLE)
            and con.execute(
                "select count(*) from features.response_embeddings where model_id <> ?", [config.model]
            ).fetchone()[0]
        ):
            con.execute("drop table features.response_embeddings")
        done = (
            "where response_id not in (select response_id from features.response_embeddings)"
            if table_exists(con, EMBEDDINGS_TABLE)
            else ""
        )
        todo = con.execute(
            f"select response_id, prompt_id, response from raw.responses {done} order by response_id"
        ).fetchall()
        if not todo and not table_exists(con, EMBEDDINGS_TABLE):
            raise ValueError(
                "raw.responses has no rows to embed: every input row was rejected (see raw.rejects)"
            )
    chunks = [todo[start : start + EMBED_CHUNK] for start in range(0, len(todo), EMBED_CHUNK)]
    progress = Progress(
        "response_embeddings", total=len(todo), report=report, unit="texts", every_s=config.progress_every_s
    )
    vectors_per_chunk, device = compute.embed_chunks(
        [[text for _, _, text in chunk] for chunk in chunks],
        loadable_model_id(config.model, models_dir),
        config.trust_remote_code,
        progress,
    )
    seconds = 0.0
    for chunk in chunks:
        started = time.perf_counter()
        vectors = next(vectors_per_chunk)
        seconds += time.perf_counter() - started
        _write_embeddings(warehouse, chunk, vectors, config.model)
    vectors_per_chunk.close()
    with warehouse.connect() as con:
        con.execute(
            "delete from features.response_embeddings where response_id not in "
            "(select response_id from raw.responses)"
        )
        content = content_version(con, [EMBEDDINGS])
        dim = con.execute(
            "select array_length(embedding) from features.response_embeddings limit 1"
        ).fetchone()
    local = compute.engine == "local"
    return {
        "model": config.model,
        "device": device,
        "engine": compute.engine,
        **({"dtype": compute.choice().dtype_name} if local else {}),
        "rows": content.rows,
        "embedded_now": len(todo),
        "dimensions": int(dim[0]) if dim else 0,
        "rows_per_second": len(todo) / seconds if todo and seconds else 0.0,
        "embed_seconds": seconds,
        "data_version": content.version,
        "table_digests": content.digests,
    }


def _write_embeddings(warehouse: Warehouse, chunk: list[tuple], vectors: np.ndarray, model: str) -> None:
    dim = vectors.shape[1]
    staged = pa.table(
        {
            "response_id": [response_id for response_id, _, _ in chunk],
            "prompt_id": [prompt_id for _, prompt_id, _ in chunk],
            "model_id": [model] * len(chunk),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        }
    )
    with warehouse.connect() as con:
        con.execute(
            "create table if not exists features.response_embeddings (response_id varchar not null, "
            "prompt_id varchar not null, model_id varchar not null, embedding float[] not null)"
        )
        replace_rows(con, EMBEDDINGS_TABLE, staged, ["response_id"])


@step_asset(
    config=EmbeddingConfig,
    kinds={"duckdb", "pytorch"},
    deps=[raw_responses],
    automation_condition=EAGER,
    metadata=table_metadata(EMBEDDINGS),
)
def response_embeddings(
    step: Step, home: Home, warehouse: Warehouse, compute: Compute
) -> dg.MaterializeResult:
    """L2-normalised embedding of every response (features.response_embeddings, FLOAT[]), computed
    independently of the prompt, on CUDA in half precision when present."""
    step.log_params({"batch_size": compute.embed_batch_size})
    result = embed_new_responses(
        warehouse, compute, step.config, report=step.log.info, models_dir=home.models
    )
    version = result.pop("data_version")
    digests = result.pop("table_digests")
    metadata = {
        **result,
        **digest_metadata(digests),
        "dagster/row_count": result["rows"],
    }
    return step.finish(version, metadata)
