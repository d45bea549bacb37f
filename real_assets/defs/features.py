"""Features domain: response embeddings (GPU when present) and the SQL models built on them."""

import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from real_assets.core import table_digests
from real_assets.core.embedding import DEFAULT_EMBEDDER, loadable_model_id
from real_assets.core.hashing import digest
from real_assets.core.progress import Progress, Report
from real_assets.defs.common import Step, step_asset
from real_assets.defs.conditions import EAGER
from real_assets.defs.ingest import raw_responses
from real_assets.defs.versions import WarehouseTable, digest_metadata, table_metadata
from real_assets.resources import Compute, Home, Warehouse, table_exists

EMBEDDINGS = WarehouseTable(
    "features.response_embeddings",
    ("response_id",),
    columns=(
        ("response_id", "varchar not null"),
        ("prompt_id", "varchar not null"),
        ("model_id", "varchar not null"),
        ("embedding", "float[] not null"),
    ),
)
EMBEDDINGS_TABLE = EMBEDDINGS.name
EMBEDDINGS_KEY = "prompt_id"
"""The table's digest is tracked per prompt, for the SQL models downstream (`core.table_digests`)."""


class EmbeddingConfig(dg.Config):
    """`model` is a sentence-transformers id or path (default: the packaged all-MiniLM-L6-v2), or
    `policy-lm:<causal LM id or path>` for the paper's mean-pooled policy-LM embeddings
    (`policy-lm:packaged:smollm2-135m-instruct`: the packaged SmolLM2, no hub)."""

    model: str = DEFAULT_EMBEDDER
    trust_remote_code: bool = False
    progress_every_s: float = 5.0
    """Seconds between progress lines in the run log (texts done/total, rate, ETA)."""


EMBED_CHUNK = 20_000
"""Responses read, embedded and written per step of the loop: memory holds one chunk, whatever the number
pending."""
_PENDING = """
select r.response_id, r.prompt_id, r.response from raw.responses as r
where r.response_id > ?
  and not exists (select 1 from features.response_embeddings as e where e.response_id = r.response_id)
order by r.response_id
limit ?
"""


def embed_new_responses(
    warehouse: Warehouse,
    compute: Compute,
    config: EmbeddingConfig,
    report: Report | None = None,
    models_dir: Path | None = None,
) -> dict:
    """Embed the responses that have no embedding from this model yet, a chunk at a time: each chunk is
    read (the next range of pending response ids), embedded and written before the next is read, so
    memory does not grow with the number pending. Embeddings of responses that are gone are dropped.
    A change of model re-embeds everything. The model work holds no warehouse connection. The table's
    digest is kept up to date from the rows removed and added (`core.table_digests`). Progress lines go to
    `report` (the run log)."""
    model = compute.embedder_id(config.model)
    with warehouse.connect() as con:
        # One model per table: a change of model (or of its dimension) starts the table afresh.
        if (
            table_exists(con, EMBEDDINGS_TABLE)
            and con.execute(
                "select count(*) from features.response_embeddings where model_id <> ?", [model]
            ).fetchone()[0]
        ):
            con.execute("drop table features.response_embeddings")
        con.execute(EMBEDDINGS.ddl())
        table_digests.ensure_tracked(con, EMBEDDINGS_TABLE, EMBEDDINGS_KEY)
        # Found by id first: reading the vectors of the whole table to find none would cost a full scan.
        con.execute(
            "create or replace temp table _gone as select e.response_id from features.response_embeddings "
            "as e anti join raw.responses as r on r.response_id = e.response_id"
        )
        if con.execute("select count(*) from _gone").fetchone()[0]:
            gone = "(select * from features.response_embeddings where response_id in (select * from _gone))"
            con.execute("begin transaction")
            table_digests.apply_delta(con, EMBEDDINGS_TABLE, EMBEDDINGS_KEY, gone, -1)
            con.execute("delete from features.response_embeddings where response_id in (select * from _gone)")
            con.execute("commit")
        pending = con.execute(
            "select count(*) from raw.responses as r where not exists "
            "(select 1 from features.response_embeddings as e where e.response_id = r.response_id)"
        ).fetchone()[0]
        if not pending and not con.execute("select count(*) from features.response_embeddings").fetchone()[0]:
            raise ValueError(
                "raw.responses has no rows to embed: every input row was rejected (see raw.rejects)"
            )
    progress = Progress(
        "response_embeddings", total=pending, report=report, unit="texts", every_s=config.progress_every_s
    )
    in_flight: list[list[tuple]] = []  # the rows of the chunks handed to the model, oldest first

    def texts_per_chunk():
        for chunk in _pending_chunks(warehouse):
            in_flight.append(chunk)
            yield [text for _, _, text in chunk]

    vectors_per_chunk, device = compute.embed_chunks(
        texts_per_chunk(), loadable_model_id(model, models_dir), config.trust_remote_code, progress
    )
    seconds, embedded = 0.0, 0
    try:
        while True:
            started = time.perf_counter()
            vectors = next(vectors_per_chunk, None)
            seconds += time.perf_counter() - started
            if vectors is None:
                break
            chunk = in_flight.pop(0)
            _write_embeddings(warehouse, chunk, vectors, model)
            embedded += len(chunk)
    finally:
        vectors_per_chunk.close()
    with warehouse.connect() as con:
        content_digest, rows = table_digests.tracked_digest(con, EMBEDDINGS_TABLE)
        dim = con.execute(
            "select array_length(embedding) from features.response_embeddings limit 1"
        ).fetchone()
    dtype = compute.local_dtype()
    return {
        "model": model,
        "device": device,
        "engine": compute.engine,
        **({"dtype": dtype} if dtype else {}),
        "rows": rows,
        "embedded_now": embedded,
        "dimensions": int(dim[0]) if dim else 0,
        "rows_per_second": embedded / seconds if embedded and seconds else 0.0,
        "embed_seconds": seconds,
        "chunk_rows": EMBED_CHUNK,
        "data_version": digest(content_digest)[:16],
        "table_digests": {EMBEDDINGS_TABLE: content_digest},
    }


def _pending_chunks(warehouse: Warehouse) -> Iterator[list[tuple]]:
    """The pending responses (no embedding yet) in ranges of `EMBED_CHUNK` response ids, each read with a
    short connection when the previous chunk has been written."""
    after = ""
    while True:
        with warehouse.connect(read_only=True) as con:
            chunk = con.execute(_PENDING, [after, EMBED_CHUNK]).fetchall()
        if not chunk:
            return
        yield chunk
        after = chunk[-1][0]


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
        con.execute(EMBEDDINGS.ddl())
        con.register("_staged_embeddings", staged)
        con.execute("begin transaction")
        try:
            # In the table's own types, so that the digest parts are those of the stored rows.
            con.execute(
                "create or replace temp table _new_embeddings as "
                "select * from features.response_embeddings limit 0"
            )
            con.execute("insert into _new_embeddings by name select * from _staged_embeddings")
            # A response embedded meanwhile by another run is replaced, not doubled (found by id first).
            stale = (
                "(select * from features.response_embeddings "
                "where response_id in (select response_id from _new_embeddings))"
            )
            if con.execute(
                "select count(*) from features.response_embeddings "
                "where response_id in (select response_id from _new_embeddings)"
            ).fetchone()[0]:
                table_digests.apply_delta(con, EMBEDDINGS_TABLE, EMBEDDINGS_KEY, stale, -1)
                con.execute(
                    "delete from features.response_embeddings "
                    "where response_id in (select response_id from _new_embeddings)"
                )
            con.execute("insert into features.response_embeddings select * from _new_embeddings")
            table_digests.apply_delta(con, EMBEDDINGS_TABLE, EMBEDDINGS_KEY, "_new_embeddings", 1)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        finally:
            con.unregister("_staged_embeddings")


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
