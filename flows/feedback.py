"""The feedback flow (scheduled): weak searches and ideas → refined prompts written back."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from promptlake.flows.form import BLANK
from promptlake.flows.params import (
    DataDirOfStore,
    FeedbackParams,
    Generate,
    Ideas,
    Llm,
    MaxInputs,
    RefineK,
    RefineN,
    StoreClip,
    StoreUrl,
    UseSearches,
)
from promptlake.flows.results import md_text
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.records import ShardStats
from promptlake.tasks.feedback import FeedbackOptions, feedback_task, pick_inputs
from promptlake.tasks.query.search import query_settings


class FeedbackFailed(RuntimeError):
    """Some inputs failed; the message lists them. A rerun retries only those."""

    exit_code = 1


@flow(name="feedback", log_prints=True)
def feedback_flow(
    ideas: Ideas = BLANK,
    *,
    data_dir: DataDirOfStore = BLANK,
    use_searches: UseSearches = True,
    max_inputs: MaxInputs = BLANK,
    n: RefineN = BLANK,
    k: RefineK = BLANK,
    llm: Llm = "auto",
    generate: Generate = False,
    clip_model: StoreClip = BLANK,
    store_url: StoreUrl = BLANK,
) -> list[ShardStats]:
    """Refine weakly served searches and given ideas into new prompts (and images) with their
    lineage; inputs already done are skipped, so a repeated run adds nothing twice."""
    params = FeedbackParams.of_call(locals())
    settings = query_settings(params.settings())
    data = DataDir(settings.data_dir)
    inputs = pick_inputs(
        data,
        settings,
        ideas=params.ideas or [],
        limit=settings.feedback_max_inputs,
        searches=params.use_searches,
    )
    opts = FeedbackOptions(settings.refine_n, settings.refine_k, params.llm, params.generate)
    done, failed = [], {}
    for inp in inputs:  # one at a time, in this process: the embedded store is single-process
        state = feedback_task(inp, str(data.root), settings, opts, return_state=True)
        if state.is_completed():
            done.append(state.result())
        else:
            failed[inp.text] = state.message or "failed"
    _report(done, failed, params)
    if failed:
        raise FeedbackFailed(f"{len(failed)} feedback input(s) failed: {sorted(failed)}")
    return done


def _report(done: list[ShardStats], failed: dict[str, str], params: FeedbackParams) -> None:
    rows = [
        {
            "input": st.extra.get("input", ""),
            "trigger": st.extra.get("trigger", ""),
            "prompts": st.by_status.get("prompts", 0),
            "images": st.by_status.get("images", 0),
            "refiner": st.extra.get("refiner", ""),
            "ids": ", ".join(st.extra.get("ids", [])),
        }
        for st in done
    ]
    added = sum(r["prompts"] for r in rows)
    md = [
        "# feedback",
        f"{len(done)} inputs, {added} prompts and {sum(r['images'] for r in rows)} images "
        f"written back (origin `feedback`); {len(failed)} failed.",
        "",
    ]
    md += [
        f"- **{md_text(r['input'])}** ({md_text(r['trigger'])}): {r['prompts']} prompts"
        for r in rows
    ]
    md += [f"- FAILED **{md_text(k)}**: {md_text(v)}" for k, v in failed.items()]
    if not done and not failed:
        md.append("_nothing to do: no new ideas and no weakly served searches_")
    create_markdown_artifact("\n".join(md), key="feedback-report", description="Feedback run")
    create_table_artifact(rows, key="feedback-inputs", description="Inputs of this run")
    get_run_logger().info("\n".join(md))
