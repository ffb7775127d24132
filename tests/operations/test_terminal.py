"""What a person at the terminal sees: wrong input refused at once in one line, a failed run's
error first and alone (its log in a file), messages that name the real problem, plain output."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from promptlake.cli import build_parser, main
from promptlake.storage.datadir.layout import DataDir
from tests.conftest import HEADER, write_csv
from tests.helpers.cli_proc import ROOT, Cli

PROBE = """
import json, sys
from promptlake.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted({"prefect", "torch"} & set(sys.modules))}))
"""


def probe(tmp_path: Path, *args: str) -> tuple[int, list[str], str]:
    """Run the CLI in a fresh process: its exit code, the heavy modules it imported, stderr."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PREFECT_HOME": str(tmp_path / "ph")},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], result["heavy"], done.stderr


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, str]:
    ok = write_csv(tmp_path / "ok.csv", [["a", "a cat", "http://x/a.png", 512, 512, "s"]])
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "binary.csv").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00" + bytes(range(256)) * 8)
    write_csv(tmp_path / "cols.csv", [["a", "a cat"]], header=["id", "prompt"])
    write_csv(tmp_path / "header.csv", [])
    no_rows = pa.table({c: pa.array([], pa.string()) for c in HEADER})
    pq.write_table(no_rows, tmp_path / "none.parquet")
    (tmp_path / "note.png").write_text("not an image")
    (tmp_path / "model").mkdir()
    (tmp_path / "planned").mkdir()  # a data dir without embeddings yet
    return {"ok": str(ok), "missing": str(tmp_path / "nodir")}


BAD = [
    (["ingest", "nope.csv"], "source not found: 'nope.csv'"),
    (["ingest", "empty.csv"], "empty.csv is empty: a CSV needs a header line"),
    (["ingest", "binary.csv"], "binary.csv is not a text CSV (binary or non-UTF-8 data at byte"),
    (["ingest", "cols.csv"], "lacks the column(s) url, width, height, source_site"),
    (["ingest", "header.csv"], "header.csv has its header but no rows: nothing to ingest"),
    (["ingest", "none.parquet"], "none.parquet has its header but no rows: nothing to ingest"),
    (["ingest", "ok.csv", "--model", "/no/such/clip"], "--model /no/such/clip: no such model"),
    (["ingest", "ok.csv", "--model", "model"], "--model model: the folder has no config.json"),
    (["ingest", "ok.csv", "--device", "gpu"], "DEVICE 'gpu': give auto, cpu, mps or cuda[:N]"),
    (["ingest", "ok.csv", "--shard-size", "0"], "between 1 and 1,000,000, got 0"),
    (["search", "cat", "-k", "100000"], "argument -k: must be between 1 and 1000, got 100000"),
    (["search", "cat", "-k", "0"], "argument -k: must be between 1 and 1000, got 0"),
    (["refine", "cat", "-k", "0"], "argument -k: must be between 1 and 200, got 0"),
    (["refine", "cat", "-n", "0"], "argument -n: must be between 1 and 20, got 0"),
    (["feedback", "-n", "0"], "argument -n: must be between 1 and 20, got 0"),
    (["search", "--data-dir", "nodir"], "give a TEXT to search for, an --image, or both"),
    (["search", "cat", "--data-dir", "nodir"], "no data dir at "),
    (["refine", "cat", "--data-dir", "nodir"], "no data dir at "),
    (["status", "--data-dir", "nodir"], "no data dir at "),
    (["feedback", "an idea", "--data-dir", "nodir"], "no data dir at "),
    (["feedback", "a", "paper", "boat"], "3 ideas, among them 'a': each IDEA is one argument"),
    (["resume", "--data-dir", "nodir"], "no data dir at "),
    (["resume", "--data-dir", "planned"], "no ingest was started in "),
    (["refine", "cat", "--data-dir", "planned"], "holds no embeddings yet (0 rows to search)"),
    (["ui", "--data-dir", "nodir"], "no data dir at "),
    (["ui", "--data-dir", "planned"], "holds no embeddings yet (0 rows to search)"),
    (["search", "--image", "note.png", "--data-dir", "nodir"], "--image note.png: not an image"),
    (["search", "--image", "nope.png"], "--image nope.png: no such file"),
]


@pytest.mark.parametrize(("args", "said"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_wrong_input_fails_at_once_in_one_line(tmp_path, inputs, args, said):
    code, heavy, err = probe(tmp_path, *args)
    assert code == 2
    assert heavy == []  # no Prefect (so no server), no torch (so no model): it failed first
    assert err.count("\n") == 1 and err.startswith("promptlake: error: "), err
    assert said in err
    assert err.isprintable() or err[:-1].isprintable()  # no binary junk on the terminal
    assert not (tmp_path / "nodir").exists() and not (tmp_path / "data").exists()


def test_a_failed_ingest_says_one_line_and_logs_the_rest(tmp_path, server, tiny_clip):
    """A broken model folder: the run fails at embed; the terminal gets one line (the cause,
    what to do, where the log is); the log has every process's lines, no links to the
    temporary server."""
    broken = tmp_path / "broken-clip"
    broken.mkdir()
    for f in Path(tiny_clip).iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[:100] if f.suffix == ".safetensors" else data)
    rows = [[f"r{i}", f"prompt {i}", server.url("img", f"r{i}"), 64, 64, "s"] for i in range(6)]
    src, d = write_csv(tmp_path / "p.csv", rows), tmp_path / "d"
    cli = Cli(tmp_path, PROMPTLAKE_TASK_RETRIES="0", PROMPTLAKE_DEVICE="cpu")
    ended = cli.run("ingest", str(src), "--data-dir", str(d), "--model", str(broken))
    assert ended.code == 1 and ended.out == ""
    assert len(ended.err_lines) == 1, ended.err
    line = ended.err_lines[0]
    assert line.startswith("promptlake: error: failed shards: embed 00000"), line
    assert f"`promptlake resume --data-dir {d}` reruns only these" in line
    log = Path(line.rsplit("(full log: ", 1)[1].rstrip(")"))
    assert log.parent == d / "logs" and log.name.startswith("ingest-")
    text = log.read_text()
    assert "Task run 'embed-" in text and "Finished in state Failed" in text  # from a worker
    assert "Flow run" in text and "View at" not in text


@pytest.mark.usefixtures("prefect_server")
def test_a_csv_without_valid_rows_says_so(tmp_path, capfd):
    # the terminal refuses a header-only CSV before the run (BAD above); a run started otherwise
    # (a deployment, a URL whose file lost its rows) says it in its state
    from promptlake.flows.ingest import ingest

    header_only = write_csv(tmp_path / "header.csv", [])
    state = ingest(source=str(header_only), data_dir=str(tmp_path / "d1"), return_state=True)
    assert state.is_failed() and "header.csv: 0 valid rows — it has no rows" in state.message
    rejected = [["", "p", "http://x/1", 1, 1, "s"], ["b", "", "http://x/2", 1, 1, "s"]]
    rejected.append(["c", "p", "not a url", 1, 1, "s"])
    src = write_csv(tmp_path / "bad.csv", rejected)
    assert main(["ingest", str(src), "--data-dir", str(tmp_path / "d2")]) == 2
    err = capfd.readouterr().err.strip()
    assert (
        "bad.csv: 0 valid rows of 3 — rejected: 1 empty_prompt, 1 invalid_url, 1 missing_id" in err
    )
    assert "no embeddings" not in err


def test_every_flag_has_help_and_the_help_reads_plainly(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in [("promptlake", parser), *sub.choices.items()]:
        for action in p._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "``" not in text
        and "ingest a prompt dataset: download, plan, fetch, embed, load, index" in text
    )
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("promptlake 0.")


def test_status_through_a_closed_pipe_ends_quietly(tmp_path):
    (tmp_path / "d").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptlake.cli", "status", "--data-dir", str(tmp_path / "d")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # `| head` that has read enough
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""


def test_status_names_a_running_ingest_and_forgets_a_killed_one(tmp_path):
    from promptlake.storage.datadir.status import format_status, status

    data = DataDir(tmp_path / "d")
    code = (
        "import sys, time\n"
        "from promptlake.storage.datadir import activity\n"
        "from promptlake.storage.datadir.layout import DataDir\n"
        f"with activity.running(DataDir({str(data.root)!r}), 'ingest p.csv (until index)'):\n"
        "    print('running', flush=True); time.sleep(300)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "running"
        shown = format_status(status(data))
        assert f"running:  ingest p.csv (until index) (pid {child.pid} on " in shown
    finally:
        child.kill()
        child.wait()
    assert status(data)["running"] == []  # its lock died with it
    assert "running:" not in format_status(status(data))


def test_a_search_prints_its_hits_and_nothing_else(built):
    """No model-loading bars or library warnings; what the number is; long prompts cut with an
    ellipsis; a hit without an image shows no size."""
    s, _ = built
    argv = ["search", "a cat", "-k", "30", "--data-dir", str(s.data_dir)]
    done = subprocess.run(
        [sys.executable, "-m", "promptlake.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PROMPTLAKE_CLIP_MODEL"}
        | {"PROMPTLAKE_DEVICE": "cpu", "PROMPTLAKE_PRECISION": "fp32"},
    )
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith("rank  distance (cosine: 0 is the same, lower is closer)")
    prompts = [line.strip() for line in lines if line.startswith("     ") and "://" not in line]
    assert len(prompts) == 30 and all(len(p) <= 160 for p in prompts)
    assert sum(p.endswith("…") for p in prompts) == 4  # the four prompts over 160 characters
    assert "0x0" not in done.stdout
