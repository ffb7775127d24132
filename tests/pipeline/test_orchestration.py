"""Orchestration at the dataset's scale (900 shards × the stages): status reads each marker once,
the run's summary artifact stays a summary, and progress artifacts are not sent per shard."""

import json

import pytest

from promptlake.flows import progress as progress_mod
from promptlake.flows.progress import Progress, StageResult, publish_summary
from promptlake.storage.datadir import markers as markers_mod
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.status import format_status, status
from tests.conftest import artifacts_of
from tests.helpers.marker_dirs import NAMESPACE, build_marker_dir

SHARDS = 900


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A data dir of 900 shards of 1,000 rows (markers only), the last three failed in fetch."""
    return build_marker_dir(tmp_path_factory.mktemp("big") / "d", SHARDS, failed=3)


def test_status_of_900_shards_reads_each_marker_once(big, monkeypatch):
    reads = []

    def counted(path):
        reads.append(path)
        return read_json(path)

    read_json = markers_mod.read_json
    monkeypatch.setattr(markers_mod, "read_json", counted)
    report = status(big)
    assert len(reads) == len(set(reads)) == 3 * (SHARDS - 3) + 3
    fetch = report["stages"]["fetch"]
    assert (fetch["shards_done"], fetch["shards_failed"], fetch["shards_pending"]) == (897, 3, 0)
    assert fetch["rows_failed"] == 897 * 2 + 90 * 10  # every tenth shard had 10 more 404s
    assert fetch["by_status"]["ok"] == fetch["rows_ok"] == 897_000 - fetch["rows_failed"]
    assert report["stages"]["embed"]["model"]["model"] == "tiny"
    assert report["store"] == {"prompts": 897_000, "images": fetch["rows_ok"]}
    assert report["resume"]["stages"]["fetch"]["rerun_failed"] == ["00897", "00898", "00899"]
    text = format_status(report)
    assert "shard 00899 failed: OSError: disk full" in text
    assert report["stages"]["embed"]["by_status"]["image_error"] == 0
    assert "no_image: " in text and "image_error" not in text  # no line for a zero count


@pytest.mark.usefixtures("prefect_server")
def test_the_summary_of_900_shards_is_a_summary(big):
    from prefect import flow

    done = {
        stage: Markers(big, path).all_done()
        for stage, path in [("fetch", "fetch"), ("embed", f"embed/{NAMESPACE}"), ("load", "load")]
    }
    failed = Markers(big, "fetch").failures()
    results = [StageResult(stage, found) for stage, found in done.items()]
    results[0].failed = failed

    @flow
    def summarise() -> str:
        publish_summary(results, key="ingest-shards")
        from prefect.runtime import flow_run

        return flow_run.get_id()

    (table,) = [a for a in artifacts_of(summarise()) if a.key == "ingest-shards"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [r["row"] for r in rows if r["stage"] == "fetch"] == ["total"] + ["failed"] * 3 + [
        "slowest"
    ] * 3
    assert len(rows) == 3 + 3 + 3 * 3
    fetch = rows[0]
    assert (fetch["shards"], fetch["rows"], fetch["failed"]) == (
        "897 done, 3 failed",
        897_000,
        2694,
    )
    assert fetch["detail"] == "http_404=2,694, ok=894,306"
    assert {r["shards"] for r in rows if r["row"] == "failed"} == {"00897", "00898", "00899"}
    slowest = [r for r in rows if r["stage"] == "fetch" and r["row"] == "slowest"]
    assert [r["seconds"] for r in slowest] == [7.0, 7.0, 7.0]  # seconds run 1..7 by shard


@pytest.mark.usefixtures("prefect_server")
def test_progress_is_sent_when_its_percent_moves_not_per_shard(monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter

    sent = []

    def counted(artifact_id, progress, **kwargs):
        sent.append(progress)
        return update(artifact_id, progress, **kwargs)

    update = progress_mod.update_progress_artifact
    monkeypatch.setattr(progress_mod, "update_progress_artifact", counted)

    @flow
    def progress():
        bar = Progress("fetch", SHARDS)
        for finished in range(1, SHARDS + 1):
            bar.show(finished)
        return bar.id

    artifact_id = progress()
    assert len(sent) == 100 and sent[-1] == 100.0
    assert sent == sorted(sent)
    with get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(artifact_filter=ArtifactFilter(id={"any_": [artifact_id]}))
    assert float(art.data) == 100.0
