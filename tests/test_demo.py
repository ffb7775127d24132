"""`make demo`'s program on a small sample: every step runs and shows what it should."""

from promptlake.demo import main, make_dataset
from promptlake.tasks.metadata import read_metadata


def test_sample_dataset_carries_its_prompts(tmp_path):
    csv = make_dataset(tmp_path, 5).read_text().splitlines()
    assert len(csv) == 6 and csv[0] == "id,prompt,url,width,height,source_site"
    meta = read_metadata((tmp_path / "images" / "p0002.png").read_bytes())
    assert meta.prompt in csv[3]


def test_demo_runs_end_to_end(tmp_path, tiny_clip, capsys, monkeypatch):
    monkeypatch.setenv("PROMPTLAKE_PRECISION", "fp32")
    assert main(["--dir", str(tmp_path / "demo"), "-n", "60", "--model", tiny_clip]) == 0
    out = capsys.readouterr().out
    assert "index:    built; store holds 60 prompts, 60 images" in out
    assert "exact prompt (from the image's a1111 metadata)" in out
    assert "drawn from: #1" in out
    assert "feedback: 1 inputs, 2 prompts written back" in out
    assert "lineage: idea: a paper boat on a rainy street; drawn from" in out
    assert "resume:   nothing to rerun" in out
