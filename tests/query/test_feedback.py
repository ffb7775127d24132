"""The feedback flow: weak searches and ideas → refined prompts (and images generated through
AUTOMATIC1111's API or a diffusers pipeline) written back with lineage; a repeated or retried
run adds nothing twice."""

from pathlib import Path

import pytest

from promptlake.cli import main
from promptlake.flows.feedback import feedback_flow
from promptlake.flows.params import FeedbackParams
from promptlake.settings import store_url
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.store import Filters, open_store
from promptlake.tasks.feedback import STAGE, pick_inputs
from promptlake.tasks.images.generate import PIPELINE_BUILDS
from promptlake.tasks.metadata import read_metadata
from promptlake.tasks.plan import read_shard
from promptlake.tasks.query.search import SearchRequest, search
from tests.conftest import artifacts_of
from tests.helpers.api_servers import A1111Server
from tests.helpers.tiny_sd import build_sd

pytestmark = pytest.mark.usefixtures("prefect_server")
IDEA = "a cat sleeping on the sofa"
NOVEL = "an origami crane on a glass table"


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory, tiny_clip) -> str:
    return str(build_sd(tmp_path_factory.mktemp("sd") / "tiny-sd", tokenizer_dir=tiny_clip))


def counts(s):
    q = "SELECT origin, count() FROM promptlake.{} GROUP BY origin"
    store = open_store(store_url(s))
    return {t: dict(store.client.query(q.format(t)).result_rows) for t in ("prompts", "images")}


def feedback_parents(s) -> dict[str, list[str]]:
    """Each feedback row's id → the ids it drew on."""
    q = "SELECT id, parent_ids FROM promptlake.prompts WHERE origin = 'feedback'"
    return dict(open_store(store_url(s)).client.query(q).result_rows)


def weak_threshold(data, s, shard):
    """Log a search served perfectly and one that is not; return a threshold between them."""
    known = read_shard(data, shard)["prompt"][0].as_py()
    search(SearchRequest(text=known), data, s)
    best = search(SearchRequest(text=NOVEL), data, s)[0].distance
    assert best > 0.01  # the novel query has no exact match
    return best / 2


def test_feedback_writes_back_with_lineage_once(built, monkeypatch):
    s, shards = built
    data = DataDir(s.data_dir)
    monkeypatch.setenv("PROMPTLAKE_PRECISION", "fp32")
    with A1111Server() as sd:
        s = s.model_copy(
            update={
                "feedback_min_distance": weak_threshold(data, s, shards[0]),
                "generator": f"a1111+{sd.base_url}",
                "generator_width": 96,
                "generator_height": 64,
            }
        )
        for name in ("feedback_min_distance", "generator", "generator_width", "generator_height"):
            monkeypatch.setenv(f"PROMPTLAKE_{name.upper()}", str(getattr(s, name)))
        monkeypatch.setenv("PROMPTLAKE_DEVICE", "cpu")
        assert [i.text for i in pick_inputs(data, s, ideas=[IDEA], limit=5)] == [IDEA, NOVEL]
        params = FeedbackParams(
            data_dir=str(data.root),
            ideas=[IDEA, IDEA.upper()],
            n=2,
            k=6,
            llm="offline",
            generate=True,
        )
        state = feedback_flow(**params.flow_kwargs(), return_state=True)
        done = state.result()
        assert len(done) == 2 and len(sd.requests) == 4  # two inputs (dedup'd), two variants
        assert sd.requests[0]["json"]["negative_prompt"] == s.feedback_negative
        assert counts(s) == {
            "prompts": {"dataset": 30, "feedback": 4},
            "images": {"dataset": 24, "feedback": 4},
        }
        report = next(
            a for a in artifacts_of(state.state_details.flow_run_id) if a.key == "feedback-report"
        )
        assert "2 inputs, 4 prompts and 4 images" in report.data
        first = feedback_parents(s)  # each parent a row of the store when it was drawn on
        assert all(set(p) <= {f"e{i}" for i in range(30)} | set(first) for p in first.values())
        # run again: every input is done, nothing is generated or added
        assert feedback_flow(**params.flow_kwargs()) == [] and len(sd.requests) == 4
        assert counts(s)["prompts"]["feedback"] == 4
        # a retry after a crash between the store write and the marker replaces, never doubles
        Markers(data, STAGE).path(done[0].shard).unlink()
        again = feedback_flow(**params.flow_kwargs())
        assert counts(s)["prompts"]["feedback"] == 4 and len(sd.requests) == 6

    store = open_store(store_url(s))
    logged = store.client.query("SELECT count() FROM promptlake.searches").result_rows[0][0]
    variant = done[0].extra["input"]
    rows = store.client.query(
        "SELECT id, prompt, url, parent_ids, trigger FROM promptlake.prompts "
        "WHERE origin = 'feedback' ORDER BY id"
    ).result_rows
    known_ids = {f"e{i}" for i in range(30)} | {r[0] for r in rows}  # feedback may draw on feedback
    redone = set(again[0].extra["ids"])
    for rid, prompt, url, parents, trigger in rows:
        # the retried input drew on rows there now; another input's rows keep naming what they
        # drew on, which may be a row the retry replaced (a new variant is a new id)
        assert parents and set(parents) <= (known_ids if rid in redone else known_ids | set(first))
        assert trigger.startswith(("idea: ", "search@"))
        meta = read_metadata(Path(url.removeprefix("file://")).read_bytes())
        assert meta.prompt == prompt and meta.negative_prompt == s.feedback_negative
    assert any(t == f"idea: {variant}" for *_, t in rows if variant == IDEA)
    # feedback rows are searchable, with their lineage
    rid, prompt, *_ = rows[0]
    hit = search(SearchRequest(text=prompt, k=1, filters=Filters(origin="feedback")), data, s)[0]
    assert hit.id == rid and hit.extra["parent_ids"] == list(rows[0][3])
    assert hit.extra["trigger"] == rows[0][4]
    img = search(
        SearchRequest(image=rows[0][2].removeprefix("file://"), target="images", k=1), data, s
    )[0]
    assert img.id == rid and img.origin == "feedback"
    assert logged == 2  # the feedback's own retrievals are not logged as searches


def test_cli_feedback_generates_with_a_diffusers_pipeline(built, tiny_sd, monkeypatch, capsys):
    s, _ = built
    env = {
        "GENERATOR": f"diffusers:{tiny_sd}",
        "GENERATOR_STEPS": "2",
        "GENERATOR_WIDTH": "64",
        "GENERATOR_HEIGHT": "64",
        "DEVICE": "cpu",
        "PRECISION": "fp32",
    }
    for name, value in env.items():
        monkeypatch.setenv(f"PROMPTLAKE_{name}", value)
    key = (tiny_sd, "cpu", "float32")
    before = PIPELINE_BUILDS[key]
    args = ["feedback", IDEA, NOVEL, "--data-dir", str(s.data_dir), "--no-searches", "-n", "2"]
    assert main([*args, "--llm", "offline", "--generate"]) == 0
    assert "feedback: 2 inputs, 4 prompts written back" in capsys.readouterr().out
    assert PIPELINE_BUILDS[key] == before + 1  # four images, two inputs, one pipeline

    store = open_store(store_url(s))
    rows = store.client.query(
        "SELECT p.id, p.prompt, p.url, length(i.image_vector) FROM promptlake.prompts AS p "
        "INNER JOIN promptlake.images AS i ON i.id = p.id WHERE p.origin = 'feedback'"
    ).result_rows
    dim = len(store.client.query("SELECT prompt_vector FROM promptlake.prompts").result_rows[0][0])
    assert len(rows) == 4 and {r[3] for r in rows} == {dim}
    for _rid, prompt, url, _ in rows:
        png = Path(url.removeprefix("file://")).read_bytes()
        meta = read_metadata(png)
        assert meta.prompt == prompt and meta.negative_prompt == s.feedback_negative
        assert meta.settings["Model"] == tiny_sd and meta.settings["Size"] == "64x64"
        assert meta.settings["Steps"] == "2"
