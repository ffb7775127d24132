"""Flow parameters: unset means the running process's settings; forms a person can fill that
carry nothing of the process that registered them; ingest.json records what was given; no
password travels in parameters, state files, markers or logs."""

import json

import pytest
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError

from promptlake.flows.form import Param
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
    state = ingest(**params.flow_kwargs(), return_state=True)
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


def _flows():
    from promptlake.flows.feedback import feedback_flow
    from promptlake.flows.ingest import resume
    from promptlake.flows.params import ResumeParams
    from promptlake.flows.refine import refine_flow
    from promptlake.flows.search import search_flow

    return {
        ingest: IngestParams,
        resume: ResumeParams,
        search_flow: SearchParams,
        refine_flow: RefineParams,
        feedback_flow: FeedbackParams,
    }


def _schemas() -> dict:
    return {f.name: parameter_schema(f.fn).model_dump_for_openapi() for f in _flows()}


def test_forms_carry_nothing_of_the_registering_process(monkeypatch, tmp_path):
    """The schemas the UI's forms are drawn from are the same under any environment; a field
    that mirrors a setting has no default (the form leaves it empty and sends nothing), no
    null switch and is no switch at all (the v1 form always sends a switch's value); each form
    leads with its main field; descriptions survive the UI's HTML."""
    for var in ("DATA_DIR", "SHARD_SIZE", "RUNNER", "CLIP_MODEL", "ALLOW_FILE_URLS"):
        monkeypatch.delenv(f"PROMPTLAKE_{var}", raising=False)
    plain = _schemas()
    monkeypatch.setenv("PROMPTLAKE_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("PROMPTLAKE_SHARD_SIZE", "7")
    monkeypatch.setenv("PROMPTLAKE_RUNNER", "thread")
    monkeypatch.setenv("PROMPTLAKE_CLIP_MODEL", str(tmp_path / "clip"))
    monkeypatch.setenv("PROMPTLAKE_ALLOW_FILE_URLS", "1")
    assert _schemas() == plain
    text = json.dumps(plain)
    assert str(tmp_path) not in text and "<" not in text and "<object" not in text
    for flow_fn, model in _flows().items():
        props = plain[flow_fn.name]["properties"]
        assert next(iter(props)) == model.MAIN, flow_fn.name
        for name, prop in props.items():
            assert "anyOf" not in prop and prop.get("description"), (flow_fn.name, name)
            if any(isinstance(m, Param) and m.setting for m in model.model_fields[name].metadata):
                assert "default" not in prop and prop["type"] != "boolean", (flow_fn.name, name)
                assert "Blank:" in prop["description"], (flow_fn.name, name)
    ingest_form = plain["ingest"]
    assert ingest_form["required"] == ["source"]
    assert {"allow_file_urls", "progress"}.isdisjoint(ingest_form["properties"])
    assert ingest_form["properties"]["shard_size"]["minimum"] == 1


def test_each_flow_takes_its_records_fields():
    """One set of fields per flow: the signature (keyword-only after the main field) and the
    record it is turned into agree, so the CLI's ``flow(**record.flow_kwargs())`` and a form's
    run see the same parameters."""
    import inspect

    for flow_fn, model in _flows().items():
        sig = inspect.signature(flow_fn.fn, eval_str=True)
        assert next(iter(sig.parameters)) == model.MAIN, flow_fn.name
        assert set(sig.parameters) == set(model.model_fields), flow_fn.name
        for name, param in sig.parameters.items():
            assert param.annotation == model.model_fields[name].rebuild_annotation(), name
            if name != model.MAIN:
                assert param.kind is inspect.Parameter.KEYWORD_ONLY, (flow_fn.name, name)


def test_ingest_json_records_what_was_given_and_moves_with_the_data_dir(tmp_path):
    """Format 2: only given values; no data dir; a source inside the data dir relative to it.
    Moved elsewhere, the data dir resumes in place. A format-1 record (every pre-filled value)
    drops its data dir and shard size, and says which values it keeps."""
    import shutil

    data = DataDir(tmp_path / "a")
    (data.root / "in").mkdir(parents=True)
    src = write_csv(data.root / "in" / "p.csv", [])
    given = IngestParams(source=str(src), data_dir=str(data.root), clip_model="m", force=True)
    given.record(data)
    assert json.loads(data.ingest_record.read_text()) == {
        "format": 2,
        "source": "in/p.csv",
        "until": "index",
        "clip_model": "m",
    }
    shutil.move(data.root, tmp_path / "b")
    moved = DataDir(tmp_path / "b")
    again = IngestParams.recorded(moved)
    assert (again.source, again.data_dir) == (str(moved.root / "in" / "p.csv"), str(moved.root))
    assert (again.shard_size, again.runner, again.force) == (None, None, False)
    legacy = {**IngestParams(source=str(src)).model_dump(mode="json"), "data_dir": str(data.root)}
    legacy.update(shard_size=1000, runner="process", fetch_workers=32)
    moved.ingest_record.write_text(json.dumps(legacy))
    said: list[str] = []
    old = IngestParams.recorded(moved, say=said.append)
    assert (old.data_dir, old.shard_size, old.runner, old.fetch_workers) == (
        str(moved.root),
        None,
        "process",
        32,
    )
    assert old.source == str(moved.root / "in" / "p.csv")  # under the old place: rebased
    assert len(said) == 1 and "fetch_workers=32, runner=process" in said[0]


@pytest.mark.usefixtures("prefect_server")
def test_the_environment_is_not_a_given_shard_size(tmp_path, server, monkeypatch):
    """A data dir keeps its own shard size unless one is given: PROMPTLAKE_SHARD_SIZE does not
    count as given (a grown source plans its new shards at the data dir's size), a size given
    in the call does."""
    from promptlake.tasks.plan import PlanError

    rows = [[f"r{i}", f"prompt {i}", server.url("img", f"r{i}"), 64, 64, "s"] for i in range(8)]
    src = tmp_path / "p.csv"
    data_dir = str(tmp_path / "d")
    write_csv(src, rows[:4])
    ingest(source=str(src), data_dir=data_dir, shard_size=2, until="plan")
    write_csv(src, rows)
    monkeypatch.setenv("PROMPTLAKE_SHARD_SIZE", "3")
    summary = ingest(**IngestParams(source=str(src), data_dir=data_dir, until="plan").flow_kwargs())
    assert [s.rows for s in summary.plan.shards] == [2, 2, 2, 2]
    write_csv(src, rows[:6])
    state = ingest(
        source=str(src), data_dir=data_dir, shard_size=3, until="plan", return_state=True
    )
    assert state.is_failed() and "planned with shard size 2, not 3" in state.message
    with pytest.raises(PlanError):
        state.result()


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


def test_the_readme_usage_names_every_option_of_each_command():
    """The README's usage block ("Using it") lists each command with exactly the options its
    parser takes (-h and -v apart: the block's last line says -v once for all)."""
    import argparse
    import re

    from promptlake.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Using it", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    listed: dict[str, set[str]] = {}
    command = ""
    for line in block.splitlines():
        if line.startswith("promptlake --version"):
            break
        if line.startswith("promptlake "):
            command = line.split()[1]
        listed.setdefault(command, set()).update(re.findall(r"\[(-[-\w]+)", line))
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    takes = {
        name: {
            opt
            for action in parser._actions
            for opt in action.option_strings[-1:]  # the long spelling, as the README writes it
            if opt not in ("--help", "--verbose")
        }
        for name, parser in sub.choices.items()
    }
    assert listed == takes


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
