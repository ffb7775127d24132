"""The embed stage on a tiny CLIP built offline, with real LMDB images from the loopback server."""

import io

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.vectors import ModelMismatch, claim_namespace, read_vectors
from promptlake.tasks import embed
from promptlake.tasks.clip.encoder import ModelLoadError, get_encoder
from promptlake.tasks.fetch import run_shard as fetch_shard
from tests.conftest import make_shards


@pytest.fixture
def fetched(tmp_path, data, server, embed_settings):
    shards = make_shards(tmp_path, data, server, 23, shard_size=10, bad_every=4)
    for s in shards:
        fetch_shard(s, data, embed_settings)
    return shards


def _ns(embed_settings):
    return get_encoder(embed_settings.clip_model, "cpu", "fp32").info.namespace


def test_one_unit_vector_per_row_and_per_fetched_image(data, fetched, embed_settings):
    ns = _ns(embed_settings)
    for shard in fetched:
        stats = embed.run_shard(shard, data, embed_settings)
        ids, text = read_vectors(data.vectors(ns, "text", shard))
        img_ids, images = read_vectors(data.vectors(ns, "image", shard))
        assert len(ids) == stats.rows and text.dtype == np.float32 and text.shape[1] == 16
        assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
        assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
        assert stats.by_status["image"] == len(img_ids) == stats.rows - stats.by_status["no_image"]
        assert all(int(i[1:]) % 4 != 3 for i in img_ids)  # the 404 rows have no image vector
        assert stats.extra["model"] == embed_settings.clip_model and stats.extra["dim"] == 16
    assert sum(Markers(data, f"embed/{ns}").read(s).by_status["no_image"] for s in fetched) == 5


def test_vectors_match_transformers_reference_and_their_rows(data, fetched, embed_settings):
    """Each vector belongs to its row: recompute rows one by one with CLIPProcessor + model."""
    ns = _ns(embed_settings)
    embed.run_shard(fetched[0], data, embed_settings)
    ids, text = read_vectors(data.vectors(ns, "text", fetched[0]))
    img_ids, images = read_vectors(data.vectors(ns, "image", fetched[0]))
    model = CLIPModel.from_pretrained(embed_settings.clip_model).eval()
    proc = CLIPProcessor.from_pretrained(embed_settings.clip_model)
    from promptlake.tasks.plan import read_shard

    prompts = dict(
        zip(
            *read_shard(data, fetched[0]).select(["id", "prompt"]).to_pydict().values(), strict=True
        )
    )
    rng = np.random.default_rng(0)
    for k in rng.permutation(len(ids))[:5]:
        ref = model.get_text_features(
            **proc(
                text=[prompts[ids[k]]], return_tensors="pt", padding="max_length", truncation=True
            )
        ).pooler_output
        ref = ref.detach().numpy()[0]
        assert np.dot(ref / np.linalg.norm(ref), text[k]) > 0.9999
    from promptlake.storage.datadir.image_cache import ImageCache

    blobs = ImageCache.open(data.image_cache).images(img_ids)
    for k in rng.permutation(len(img_ids))[:3]:
        pix = proc(images=Image.open(io.BytesIO(blobs[img_ids[k]])), return_tensors="pt")
        ref = model.get_image_features(**pix).pooler_output.detach().numpy()[0]
        cos = np.dot(ref / np.linalg.norm(ref), images[k])
        assert cos > 0.99, cos  # same picture; resize implementations differ slightly
        others = [np.dot(ref / np.linalg.norm(ref), v) for j, v in enumerate(images) if j != k]
        assert cos >= max(others)


def test_identical_inputs_identical_vectors_in_any_order(embed_settings):
    enc = get_encoder(embed_settings.clip_model, "cpu", "fp32")
    from promptlake.sample_data import sample_prompts

    prompts = [*sample_prompts(40, seed=3), "x " * 200]
    a, cut = enc.encode_text(prompts, batch_size=7)
    order = np.random.default_rng(1).permutation(len(prompts))
    b, _ = enc.encode_text([prompts[i] for i in order], batch_size=16)
    assert np.allclose(a[order], b, atol=1e-6)
    assert cut == 1 and np.array_equal(a, enc.encode_text(prompts, batch_size=7)[0])


def test_rerun_does_no_model_work(data, fetched, embed_settings, monkeypatch):
    first = embed.run_shard(fetched[1], data, embed_settings)
    enc = get_encoder(embed_settings.clip_model, "cpu", "fp32")

    def boom(*a, **k):
        raise AssertionError("the model ran again")

    monkeypatch.setattr(enc, "encode_ids", boom)
    monkeypatch.setattr(enc, "encode_pixels", boom)
    assert embed.run_shard(fetched[1], data, embed_settings) == first
    # a fresh worker process would not even load the weights for a finished shard
    from promptlake.tasks.clip import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "_CACHE", {})
    monkeypatch.setattr(encoder_module.ClipEncoder, "__init__", boom)
    assert embed.run_shard(fetched[1], data, embed_settings) == first


def test_embed_needs_a_finished_fetch(tmp_path, data, server, embed_settings):
    shards = make_shards(tmp_path, data, server, 3, shard_size=3)
    with pytest.raises(RuntimeError, match="fetch has not finished"):
        embed.run_shard(shards[0], data, embed_settings)


def test_models_never_mix(data, fetched, embed_settings, tmp_path):
    from promptlake.tiny_clip import build_clip

    other = build_clip(tmp_path / "other-clip", image_size=64, seed=5)
    embed.run_shard(fetched[0], data, embed_settings)
    s2 = embed_settings.model_copy(update={"clip_model": str(other)})
    embed.run_shard(fetched[0], data, s2)
    ns1, ns2 = _ns(embed_settings), get_encoder(str(other), "cpu", "fp32").info.namespace
    assert ns1 != ns2
    assert data.vectors(ns1, "text", fetched[0]).exists()
    assert data.vectors(ns2, "text", fetched[0]).exists()
    info = get_encoder(str(other), "cpu", "fp32").info
    with pytest.raises(ModelMismatch, match="never mixed"):
        claim_namespace(data, ns1, {"model": info.name, "revision": info.revision, "dim": info.dim})


def test_unreachable_model_says_how_to_point_at_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="PROMPTLAKE_CLIP_MODEL"):
        get_encoder("openai/clip-vit-base-patch32-not-cached", "cpu")


def test_reduced_precision_stays_close_to_fp32(embed_settings):
    from promptlake.sample_data import sample_prompts

    prompts = sample_prompts(30, seed=9)
    exact = get_encoder(embed_settings.clip_model, "cpu", "fp32").encode_text(prompts)[0]
    half = get_encoder(embed_settings.clip_model, "cpu", "bf16").encode_text(prompts)[0]
    assert half.dtype == np.float32
    assert np.allclose(np.linalg.norm(half, axis=1), 1, atol=1e-5)
    assert (exact * half).sum(axis=1).min() > 0.99
