"""Generator URLs and the diffusers generator's errors (its happy path runs end to end in
tests/query/test_feedback.py on a tiny pipeline)."""

import pytest

from promptlake.tasks.images.generate import GenerateError, GenerateOptions, make_generator

OPTIONS = GenerateOptions(steps=1, width=64, height=64)


def test_generator_urls():
    assert make_generator("", OPTIONS) is None
    assert make_generator("a1111+http://127.0.0.1:7860", OPTIONS).name.startswith("a1111:")
    with pytest.raises(GenerateError, match="unknown generator"):
        make_generator("sd://127.0.0.1:7860", OPTIONS)
    with pytest.raises(GenerateError, match="unknown generator"):
        make_generator("diffusers:", OPTIONS)


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_diffusers_without_a_pipeline_folder_says_what_to_do(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    gen = make_generator(f"diffusers:{tmp_path / folder}", OPTIONS, "cpu")
    with pytest.raises(GenerateError, match="save_pretrained") as err:
        gen.generate("a cat", negative="", seed=1)
    assert str(tmp_path / folder) in str(err.value)
