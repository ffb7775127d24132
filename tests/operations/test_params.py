"""Flow parameters: unset means the running process's settings; forms a person can fill; no
password travels in parameters, state files, markers or logs."""

import json

import pytest
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError

from promptlake.flows.ingest import ingest
from promptlake.flows.params import FeedbackParams, IngestParams, RefineParams, SearchParams
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store.hits import StoreError
from promptlake.storage.store.urls import parse_store_url, redact_url
from tests.conftest import write_csv
from tests.helpers import ROOT

SECRET = "s3cret-pw"


def test_unset_parameters_resolve_from_the_environment(monkeypatch):
    monkeypatch.setenv("PROMPTLAKE_SHARD_SIZE", "7")
    monkeypatch.setenv("PROMPTLAKE_ALLOW_FILE_URLS", "1")
    monkeypatch.setenv("PROMPTLAKE_REFINE_N", "5")
    monkeypatch.setenv("PROMPTLAKE_SEARCH_K", "4")
    s = IngestParams(source="x.csv").settings()
    assert (s.shard_size, s.allow_file_urls, s.runner) == (7, True, "process")
    s = IngestParams(source="x.csv", shard_size=3, allow_file_urls=False).settings()
    assert (s.shard_size, s.allow_file_urls) == (3, False)  # what the user set wins
    assert RefineParams(idea="x").settings().refine_n == 5
    assert FeedbackParams().settings().refine_n == 5  # feedback -n follows PROMPTLAKE_REFINE_N
    assert SearchParams(text="x").settings().search_k == 4


def test_forms_show_plain_inputs_with_the_settings_as_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTLAKE_DATA_DIR", str(tmp_path / "pl"))
    monkeypatch.setenv("PROMPTLAKE_SHARD_SIZE", "250")
    props = parameter_schema(ingest.fn).model_dump()["definitions"]["IngestParams"]["properties"]
    assert props["shard_size"]["type"] == "integer" and props["shard_size"]["default"] == 250
    assert "anyOf" not in props["shard_size"] and props["shard_size"]["maximum"] == 1_000_000
    assert props["allow_file_urls"] == {**props["allow_file_urls"], "type": "boolean"}
    assert props["allow_file_urls"]["default"] is False
    assert props["data_dir"]["default"] == str(tmp_path / "pl")
    assert "PROMPTLAKE_DATA_DIR" in props["data_dir"]["description"]
    assert "default" not in props["store_url"]  # no setting: empty, not "null"


def test_a_misspelt_parameter_is_an_error():
    with pytest.raises(ValidationError, match="shardsize"):
        IngestParams(source="x.csv", shardsize=3)


def test_store_url_passwords_stay_out_of_parameters():
    with pytest.raises(ValidationError, match="must not carry a password") as err:
        IngestParams(source="x.csv", store_url=f"clickhouse://u:{SECRET}@h:8123/db")
    assert SECRET not in str(err.value).split("input_value")[0]
    url = f"clickhouse://u:{SECRET}@h:8123/db"
    assert redact_url(url) == "clickhouse://u:***@h:8123/db"
    assert redact_url("chdb:///tmp/s") == "chdb:///tmp/s"


@pytest.mark.parametrize("db", ["db;DROP TABLE x", "1db", "a.b", "db`x"])
def test_the_database_name_is_an_identifier(db):
    with pytest.raises(StoreError, match="database name") as err:
        parse_store_url(f"clickhouse://u:{SECRET}@h:8123/{db}")
    assert SECRET not in str(err.value)


@pytest.mark.usefixtures("prefect_server")
def test_a_store_password_from_the_environment_is_never_written(
    tmp_path, server, monkeypatch, tiny_clip
):
    """The store is a server that refuses connections: the load fails, and neither the data dir
    (ingest record, markers, error records) nor the run's logs and state carry the password."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    monkeypatch.setenv("PROMPTLAKE_STORE_URL", f"clickhouse://u:{SECRET}@127.0.0.1:1/pl")
    monkeypatch.setenv("PROMPTLAKE_TASK_RETRIES", "0")
    monkeypatch.setenv("PROMPTLAKE_DEVICE", "cpu")
    rows = [[f"r{i}", f"prompt {i}", server.url("img", f"r{i}"), 64, 64, "s"] for i in range(3)]
    data = DataDir(tmp_path / "d")
    params = IngestParams(
        source=str(write_csv(tmp_path / "p.csv", rows)),
        data_dir=str(data.root),
        runner="thread",
        clip_model=tiny_clip,
    )
    state = ingest(params, return_state=True)
    assert state.is_failed() and "load" in state.message
    written = list(data.root.rglob("*.json"))
    assert data.ingest_record in written and any(p.name.endswith(".error.json") for p in written)
    for path in written:
        assert SECRET not in path.read_text(), path
    assert SECRET not in (state.message or "")
    APILogHandler().flush()  # the run's log lines reach the server in the background
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    assert logs and not [log.message for log in logs if SECRET in log.message]


def test_forms_lead_with_their_main_field_and_descriptions_survive_html():
    from promptlake.flows.feedback import feedback_flow
    from promptlake.flows.ingest import resume
    from promptlake.flows.refine import refine_flow
    from promptlake.flows.search import search_flow

    flows = {search_flow: "text", refine_flow: "idea", ingest: "source"}
    for flow_fn, main_field in flows.items():
        defs = parameter_schema(flow_fn.fn).model_dump()["definitions"]
        (model,) = (d for name, d in defs.items() if name.endswith("Params"))
        assert next(iter(model["properties"])) == main_field, flow_fn.name
    for flow_fn in (*flows, feedback_flow, resume):
        text = json.dumps(parameter_schema(flow_fn.fn).model_dump())
        assert "<" not in text, flow_fn.name  # the UI renders descriptions as HTML
    required = parameter_schema(ingest.fn).model_dump()["definitions"]["IngestParams"]
    assert required["required"] == ["source"]


def test_the_readme_lists_every_setting():
    """The README's Configuration table has a row for each field of Settings, and no other."""
    import re

    from promptlake.settings import Settings

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    named = set()
    for row in table.splitlines():
        if row.startswith("| `PROMPTLAKE_"):
            first = row.split("|")[1]
            named |= {
                f"PROMPTLAKE_{m}" for m in re.findall(r"`(?:PROMPTLAKE)?_([A-Z0-9_]+)`", first)
            }
    fields = {f"PROMPTLAKE_{name.upper()}" for name in Settings.model_fields}
    assert sorted(fields - named) == [] and sorted(named - fields) == []


@pytest.mark.usefixtures("prefect_server")
def test_a_relative_model_folder_works_from_any_folder(tmp_path, tiny_clip, monkeypatch, capsys):
    """`ingest --model clip` in one folder, `search` in another: the folder was recorded as its
    absolute path (state/ingest.json, model.json); a record of the older kind, relative, is a
    one-line error at once, not a model hub's retries."""
    import shutil

    from promptlake.cli import main
    from promptlake.storage.datadir.layout import read_json, write_json
    from promptlake.storage.datadir.vectors import namespaces

    here, there = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_clip, here / "clip")
    there.mkdir()
    row = ["r1", "a red fox, oil", "file:///nowhere.png", 8, 8, "s"]
    src = write_csv(tmp_path / "p.csv", [row])
    data_dir = str(tmp_path / "d")
    monkeypatch.setenv("PROMPTLAKE_RUNNER", "thread")
    monkeypatch.chdir(here)
    argv = ["ingest", str(src), "--data-dir", data_dir, "--model", "clip", "--device", "cpu"]
    assert main(argv) == 0
    data = DataDir(data_dir)
    absolute = str((here / "clip").resolve())
    assert read_json(data.ingest_record)["clip_model"] == absolute
    ((ns, model),) = namespaces(data).items()
    assert model["model"] == absolute
    monkeypatch.chdir(there)
    capsys.readouterr()
    assert main(["search", "a fox", "--data-dir", data_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "r1"

    path = data.embed_dir(ns) / "model.json"  # as an ingest before this fix recorded it
    write_json(path, {**model, "model": "clip"})
    assert main(["search", "a fox", "--data-dir", data_dir]) == 2
    err = capsys.readouterr().err
    assert "recorded as 'clip'" in err and "--model /path/to/that/folder" in err
