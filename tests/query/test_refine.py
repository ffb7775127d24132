"""refine: the offline refiner's grounding and token budget, the LLM refiner against a loopback
chat server, the CLI, and the search/refine flows with their artifacts."""

import json

import pytest
from transformers import AutoTokenizer

from promptlake.cli import main
from promptlake.flows.params import RefineParams, SearchParams
from promptlake.flows.refine import refine_flow, refine_markdown
from promptlake.flows.search import search_flow
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store import Hit
from promptlake.tasks.metadata import ImageMeta, save_with_metadata
from promptlake.tasks.query.llm import LLMError
from promptlake.tasks.query.phrases import TokenBudget, split_phrases
from promptlake.tasks.query.refine import (
    OfflineRefiner,
    RefineRequest,
    RefineResult,
    Variant,
    refine,
)
from tests.conftest import artifacts_of
from tests.helpers.api_servers import ChatServer, completion

IDEA = "a cat sleeping on the sofa"


@pytest.fixture(scope="module")
def budget(tiny_clip):
    return TokenBudget.of(AutoTokenizer.from_pretrained(tiny_clip), 77)


def hits(*rows):
    return [Hit(f"h{i}", prompt, f"http://x/{i}.png", d) for i, (prompt, d) in enumerate(rows)]


def test_offline_weights_recurring_modifiers_by_similarity(budget):
    near = hits(
        ("a dog, oil painting, trending on artstation", 0.1),
        ("a cat, watercolor, trending on artstation", 0.5),
        ("a bird, watercolor, 8k", 0.6),
    )
    out = OfflineRefiner(budget).variants("a fox", near, 3)
    # trending 0.9+0.5; watercolor 0.5+0.4 ties oil painting 0.9 but two neighbours use it; 8k 0.4
    assert out[0] == "a fox, trending on artstation, watercolor, oil painting, 8k"
    # then each neighbour's own phrases lead (h1's order is the consensus again: skipped)
    assert out[1] == "a fox, trending on artstation, oil painting, watercolor, 8k"
    assert out[2] == "a fox, watercolor, 8k, trending on artstation, oil painting"
    far_dog = [near[0].__class__(**{**near[0].__dict__, "distance": 0.95}), *near[1:]]
    assert (
        OfflineRefiner(budget)
        .variants("a fox", far_dog, 1)[0]
        .startswith("a fox, watercolor, trending on artstation")
    )


def test_offline_never_repeats_the_idea_or_breaks_the_budget(budget):
    near = hits(("a cat, Watercolor, (masterpiece:1.3), sharp focus", 0.2), ("x, watercolor", 0.3))
    (variant,) = OfflineRefiner(budget).variants("a cat, watercolor", near, 1)
    assert variant == "a cat, watercolor, masterpiece, sharp focus"
    small = TokenBudget(budget.count, 9)
    for v in OfflineRefiner(small).variants("a cat", near, 3):
        assert small.count(v) <= 9 and v.startswith("a cat")
    long_idea = " ".join(["a very detailed castle"] * 40)
    (cut,) = OfflineRefiner(budget).variants(long_idea, near, 1)
    assert budget.count(cut) <= 77 and long_idea.startswith(cut)


def check_grounded(result, budget):
    ids = {h.id for h in result.sources}
    source_phrases = {p for h in result.sources for p in split_phrases(h.prompt)}
    for v in result.variants:
        assert v.tokens == budget.count(v.prompt) <= 77
        phrases = split_phrases(v.prompt)
        assert len(phrases) == len(v.prompt.split(","))  # no phrase twice
        assert v.drawn_from and set(v.drawn_from) <= ids
        by_id = {h.id: set(split_phrases(h.prompt)) for h in result.sources}
        assert all(by_id[x] & set(phrases[1:]) for x in v.drawn_from)
    return source_phrases


def test_offline_refine_on_a_built_store(built, budget):
    s, _ = built
    result = refine(RefineRequest(idea=IDEA, n=3, k=8, llm="offline"), DataDir(s.data_dir), s)
    assert result.refiner == "offline" and len(result.sources) == 8
    assert len({v.prompt for v in result.variants}) == 3
    source_phrases = check_grounded(result, budget)
    for v in result.variants:
        assert v.prompt.startswith(IDEA + ", ")
        assert set(split_phrases(v.prompt.removeprefix(IDEA))) <= source_phrases
    again = refine(RefineRequest(idea=IDEA, n=3, k=8, llm="offline"), DataDir(s.data_dir), s)
    assert [v.prompt for v in again.variants] == [v.prompt for v in result.variants]


def test_llm_refine_on_a_built_store(built, budget):
    s, _ = built
    with ChatServer() as chat:
        llm = s.model_copy(update={"llm_base_url": chat.base_url, "llm_model": "tiny-llm"})
        result = refine(RefineRequest(idea=IDEA, n=2, k=6, llm="auto"), DataDir(s.data_dir), llm)
        system = chat.requests[0]["json"]["messages"][0]["content"]
        assert all(h.prompt.strip() in system for h in result.sources)
        assert chat.requests[0]["json"]["messages"][1] == {"role": "user", "content": IDEA}
        assert result.refiner == "openai:tiny-llm" and len(result.variants) == 2
        check_grounded(result, budget)
        overlong = ", ".join(f"detail number {i}" for i in range(60))
        chat.script = [(200, completion(json.dumps([f"{IDEA}, {overlong}"])), {})]
        (v,) = refine(
            RefineRequest(idea=IDEA, n=1, llm="openai"), DataDir(s.data_dir), llm
        ).variants
        assert 60 < v.tokens <= 77 and v.prompt.startswith(f"{IDEA}, detail number 0")
        chat.script = [(200, completion("   "), {})]
        with pytest.raises(LLMError, match="empty completion"):
            refine(RefineRequest(idea=IDEA, llm="openai"), DataDir(s.data_dir), llm)


def test_refine_from_an_image_with_metadata(tmp_path, built):
    s, _ = built
    from PIL import Image

    pic = tmp_path / "mine.png"
    meta = ImageMeta("a fox in the snow, watercolor", "blurry", {"Steps": "20"})
    pic.write_bytes(save_with_metadata(Image.new("RGB", (64, 64)), meta))
    result = refine(RefineRequest(image=str(pic), n=2, llm="offline"), DataDir(s.data_dir), s)
    assert result.exact == meta and result.idea == meta.prompt
    assert all(v.prompt.startswith(meta.prompt) for v in result.variants)


def test_cli_refine(built, capsys, monkeypatch):
    s, _ = built
    monkeypatch.delenv("PROMPTLAKE_CLIP_MODEL", raising=False)
    monkeypatch.setenv("PROMPTLAKE_PRECISION", "fp32")
    args = ["refine", IDEA, "--data-dir", str(s.data_dir), "-k", "6"]
    assert main([*args, "-n", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["variants"]) == 2 and len(out["sources"]) == 6
    assert {"prompt", "tokens", "drawn_from"} == set(out["variants"][0])
    assert main(args) == 0
    text = capsys.readouterr().out
    assert (
        "refiner: offline" in text
        and "drawn from: #" in text
        and "neighbours (6; cosine distance, lower is closer)" in text
    )
    assert main([*args, "--llm", "openai"]) == 2
    assert "PROMPTLAKE_LLM_BASE_URL" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_server")
def test_search_and_refine_flows_publish_results(built, monkeypatch):
    s, _ = built
    monkeypatch.setenv("PROMPTLAKE_PRECISION", "fp32")
    params = SearchParams(text=IDEA, k=4, data_dir=str(s.data_dir), clip_model=s.clip_model)
    state = search_flow(**params.flow_kwargs(), return_state=True)
    assert len(state.result()) == 4
    arts = {a.key: a for a in artifacts_of(state.state_details.flow_run_id)}
    assert set(arts) == {"search-results", "search-results-table"}
    assert arts["search-results"].data.count('<img src="') == 4  # cached, or their URLs
    table = arts["search-results-table"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    refine_params = RefineParams(
        idea=IDEA, n=2, k=5, llm="offline", data_dir=str(s.data_dir), clip_model=s.clip_model
    )
    state = refine_flow(**refine_params.flow_kwargs(), return_state=True)
    assert len(state.result()["variants"]) == 2
    arts = {a.key: a for a in artifacts_of(state.state_details.flow_run_id)}
    assert {"refine-results", "refine-results-table", "refine-neighbours"} <= set(arts)
    md = arts["refine-results"].data
    assert "## variants" in md and "drawn from" in md and md.count("<img src=") == 5


def test_the_refine_artifact_says_why_it_has_fewer_variants_than_asked():
    why = "only 1 different set of modifiers among the 2 neighbours (a larger k draws from more)"
    short = RefineResult("a cat", "offline", [Variant("a cat, bokeh", 5, [])], [], None, 3, why)
    assert f"1 of 3 variants: {why}" in refine_markdown(short)
    whole = RefineResult("a cat", "offline", [Variant("a cat, bokeh", 5, [])], [], None, 1, "")
    assert not [line for line in refine_markdown(whole) if "variants:" in line]
