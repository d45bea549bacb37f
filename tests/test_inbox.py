"""The inbox sensor: one run per new or changed regular file; never a symlink or special file."""

import json
import os
import time

import dagster as dg
from sample_files import write_shp2, write_table_csv

from real_assets.definitions import defs
from real_assets.defs import inbox as inbox_module
from real_assets.resources import Home


def _age(path, seconds=60):
    old = time.time() - seconds
    os.utime(path, (old, old), follow_symlinks=False)
    return path


def _tick(instance, inbox, cursor=None):
    home = Home(path=str(inbox.parent / "home"), inbox_path=str(inbox))
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"home": home})
    result = inbox_module.inbox_sensor.evaluate_tick(context)
    return result, result.cursor


def test_inbox_sensor_once_per_file_and_skips_unreadable(tmp_path, monkeypatch):
    inbox = tmp_path / "drop"
    inbox.mkdir()
    with dg.instance_for_test() as instance:
        result, cursor = _tick(instance, inbox)
        assert result.run_requests == []

        _age(write_shp2(inbox / "shp2__batch1.jsonl"))
        result, cursor = _tick(instance, inbox, cursor)
        [request] = result.run_requests
        config = request.run_config["ops"]["raw_responses"]["config"]
        assert config == {"source": "shp2", "path": str(inbox / "shp2__batch1.jsonl")}
        assert request.run_key.startswith("inbox:shp2__batch1.jsonl:")
        dg.validate_run_config(defs.get_job_def("refresh_raw_responses"), request.run_config)

        # The same file again: nothing.
        result, cursor = _tick(instance, inbox, cursor)
        assert result.run_requests == []

        # A file that cannot be read is skipped and recorded; the good file next to it still runs;
        # a file still being written waits; a sidecar sets the source.
        (inbox / "broken.jsonl").write_text("not json at all\n")
        _age(inbox / "broken.jsonl")
        _age(write_table_csv(inbox / "labels.csv"))
        (inbox / "fresh.csv").write_text((inbox / "labels.csv").read_text())
        (inbox / "pairs.jsonl.source.json").write_text(json.dumps({"source": "shp2"}))
        _age(write_shp2(inbox / "pairs.jsonl"))
        result, cursor = _tick(instance, inbox, cursor)
        by_file = {r.tags["real_assets/inbox_file"]: r for r in result.run_requests}
        assert set(by_file) == {"labels.csv", "pairs.jsonl"}
        assert by_file["labels.csv"].run_config["ops"]["raw_responses"]["config"]["source"] == "table"
        assert by_file["pairs.jsonl"].run_config["ops"]["raw_responses"]["config"]["source"] == "shp2"
        assert "broken.jsonl" in json.loads(cursor)
        assert "fresh.csv" not in json.loads(cursor)

        # Next tick: the broken file is not retried; the settled fresh file runs once.
        _age(inbox / "fresh.csv")
        result, cursor = _tick(instance, inbox, cursor)
        assert [r.tags["real_assets/inbox_file"] for r in result.run_requests] == ["fresh.csv"]
        result, cursor = _tick(instance, inbox, cursor)
        assert result.run_requests == []

        # A changed file is new content: one more run.
        with open(inbox / "shp2__batch1.jsonl", "a") as f:
            f.write("\n")
        _age(inbox / "shp2__batch1.jsonl", 30)
        result, cursor = _tick(instance, inbox, cursor)
        assert [r.tags["real_assets/inbox_file"] for r in result.run_requests] == ["shp2__batch1.jsonl"]


def test_inbox_reads_only_regular_files_inside_it(tmp_path, monkeypatch):
    inbox_path = tmp_path / "drop"
    inbox_path.mkdir()
    private = tmp_path / "private" / "secrets.csv"
    private.parent.mkdir()
    _age(write_table_csv(private))
    (inbox_path / "link.csv").symlink_to(private)
    _age(inbox_path / "link.csv")
    os.mkfifo(inbox_path / "pipe.csv")  # reading it would block the sensor forever
    (inbox_path / "folder.csv").mkdir()
    _age(write_table_csv(inbox_path / "real.csv"))
    # A sidecar that links elsewhere is refused, and so is its data file.
    _age(write_shp2(inbox_path / "pairs.jsonl"))
    (tmp_path / "private" / "cfg.json").write_text(json.dumps({"source": "shp2"}))
    (inbox_path / "pairs.jsonl.source.json").symlink_to(tmp_path / "private" / "cfg.json")
    with dg.instance_for_test() as instance:
        result, cursor = _tick(instance, inbox_path)
    assert [r.tags["real_assets/inbox_file"] for r in result.run_requests] == ["real.csv"]
    assert set(json.loads(cursor)) == {"real.csv", "pairs.jsonl"}
