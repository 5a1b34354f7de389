"""`vitscope analyze` on datasets: folders, globs and WebDataset shards, per-image Parquet, resuming, skipped
files, and `--engine ray` (a real local Ray on CPU) giving the numbers of `--engine local`."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import backend.cli
from backend.analysis.summary import compute_metrics
from backend.capture import capture
from backend.engine.sources import expand
from backend.engine.store import SETUP, Store
from backend.errors import BadRequest
from backend.imaging import model_preprocessing, preprocess
from backend.models import load_model
from backend.uploads import decode_image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DEMO = "cifar-mim-vit-t4,cifar-cl-vit-t4"  # shipped 32 px ViT-Tiny/4 models: real weights, fast on a CPU


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def shared_images(n: int, category: str = "cat") -> list[Path]:
    folder = SHARED_DATA / "cue_conflict" / category
    assert folder.is_dir(), f"the shared test images are expected at {folder} (see ../shared/data/README.md)"
    found = sorted(folder.glob("*.png"))[:n]
    assert len(found) == n
    return found


def folder_of(tmp: Path, images: list[Path]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    for p in images:
        (tmp / p.name).write_bytes(p.read_bytes())
    return tmp


def shard_of(path: Path, images: list[Path]) -> Path:
    """A WebDataset-style shard: ``<key>.png`` plus a ``<key>.cls`` label member per sample."""
    with tarfile.open(path, "w") as tar:
        for i, p in enumerate(images):
            for name, data in ((f"{i:06d}.png", p.read_bytes()), (f"{i:06d}.cls", b"3")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def analyze(*argv: str) -> int:
    return backend.cli.main(["analyze", *argv, "--device", "cpu", "--no-progress"])


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def assert_same_numbers(a: dict, b: dict, tol: float) -> None:
    assert [m["model"] for m in a["models"]] == [m["model"] for m in b["models"]]
    for ma, mb in zip(a["models"], b["models"], strict=True):
        for key in ("attention_distance", "nmi", "attention_entropy"):
            for part in ("mean", "per_head", "std"):
                np.testing.assert_allclose(ma[key][part], mb[key][part], atol=tol, rtol=0)
        for key, part in [("delta_log_amplitude", "value"), ("delta_log_amplitude_attn", "value"),
                          ("movement_coherence", "mean")]:  # fmt: skip
            np.testing.assert_allclose(ma[key][part], mb[key][part], atol=tol, rtol=0)
            np.testing.assert_allclose(ma[key]["std"], mb[key]["std"], atol=tol, rtol=0)
        assert ma["num_images"] == mb["num_images"]


def assert_close_tree(a: object, b: object, tol: float) -> None:
    """Nested dicts / lists of numbers equal to ``tol`` (other leaves exactly)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_close_tree(a[k], b[k], tol)
    elif isinstance(a, list) and a and isinstance(a[0], (list, dict)):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_close_tree(x, y, tol)
    elif isinstance(a, list) and a and isinstance(a[0], str):
        assert a == b
    elif isinstance(a, list | float):
        np.testing.assert_allclose(a, b, atol=tol, rtol=0)
    else:
        assert a == b


def test_sources_list_folders_globs_and_shards_once_each(tmp_path: Path) -> None:
    images = shared_images(3)
    folder = folder_of(tmp_path / "imgs", images)
    (folder / "notes.txt").write_text("not an image")
    shard = shard_of(tmp_path / "shard-000.tar", images[:2])
    refs = expand([str(folder), str(tmp_path / "imgs" / "*.png"), str(shard)])
    assert [r.path for r in refs] == [str(folder / p.name) for p in images] + [
        f"{shard}/000000.png",
        f"{shard}/000001.png",
    ]  # the glob's matches were listed already; .txt and .cls members are not images
    assert refs[-1].read() == images[1].read_bytes()  # a member is read by its byte range
    with pytest.raises(BadRequest, match="matches no file"):
        expand([str(tmp_path / "*.jpeg")])
    (tmp_path / "bad.tar").write_bytes(b"\x1f\x8b not a tar")
    with pytest.raises(BadRequest, match="not an uncompressed tar shard"):
        expand([str(tmp_path / "bad.tar")])
    with pytest.raises(BadRequest, match="neither an image file"):
        expand([str(tmp_path / "nope")])


def test_per_image_rows_and_metrics_match_one_direct_capture(tmp_path: Path) -> None:
    """Batches of 2 through the engine, the Parquet round trip and the aggregate agree with one capture of
    all 5 images computed directly (compute_metrics: the same analyses, no engine)."""
    images = shared_images(5)
    out = tmp_path / "out"
    assert analyze(str(folder_of(tmp_path / "imgs", images)), "--models", DEMO, "--out", str(out),
                   "--batch-size", "2") == 0  # fmt: skip
    document = metrics(out)
    assert document["engine"] == "local" and document["skipped"] == []
    assert document["images"] == [str(tmp_path / "imgs" / p.name) for p in images]
    table = pq.read_table(out / "per_image.parquet")
    assert table.num_rows == 10 and set(table["model"].to_pylist()) == set(DEMO.split(","))
    assert table["sha256"].to_pylist()[0] == hashlib.sha256(images[0].read_bytes()).hexdigest()
    for model_id, got in zip(DEMO.split(","), document["models"], strict=True):
        loaded = load_model(model_id)
        prep = model_preprocessing(loaded, "auto")
        pixels = preprocess([decode_image(p.read_bytes()).image for p in images], prep)
        direct = compute_metrics(capture(loaded.model, pixels), loaded.spec.family)
        direct |= {"model": model_id}
        assert_same_numbers({"models": [got]}, {"models": [direct]}, tol=1e-5)
        assert got["preprocessing"] == prep.as_dict() and got["num_images"] == 5
        for key in ("token_norm", "effective_rank", "head_diversity", "cls_selectivity", "cls_self"):
            assert got[key] is not None, key  # the demo models have a CLS token and 3 heads
            assert_close_tree(got[key], direct[key], tol=1e-5)
        # a set statistic, from the set-statistics pass over the first 256 images: here all 5
        assert got["positional_share"]["num_images"] == 5
        np.testing.assert_allclose(
            got["positional_share"]["value"], direct["positional_share"]["value"], atol=1e-5
        )
    for name in ("curves.png", "spectra.png", "attention_cifar-mim-vit-t4.png", "modern.png", "cka.png"):
        assert (out / name).stat().st_size > 5000


def test_unreadable_files_are_skipped_named_and_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = folder_of(tmp_path / "imgs", shared_images(2))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    assert analyze(str(folder), "--models", "cifar-mim-vit-t4", "--out", str(out), "--no-figures") == 0
    err = capsys.readouterr().err
    assert f"skipped {folder / 'broken.png'}: " in err and f"skipped {folder / 'empty.jpg'}: " in err
    document = metrics(out)
    assert [s["image"] for s in document["skipped"]] == [
        str(folder / "broken.png"),
        str(folder / "empty.jpg"),
    ]
    assert all(s["reason"] for s in document["skipped"])
    assert document["models"][0]["num_images"] == 2 and len(document["images"]) == 2

    # Nothing readable: exit 1, and metrics.json says why.
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "broken.png").write_bytes(b"junk")
    assert analyze(str(only_bad), "--models", "cifar-mim-vit-t4", "--out", str(tmp_path / "o2")) == 1
    assert "nothing could be analysed: 1 image(s) skipped" in capsys.readouterr().err
    assert metrics(tmp_path / "o2")["skipped"][0]["image"] == str(only_bad / "broken.png")


def test_strict_stops_at_the_bad_file_and_a_rerun_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = shared_images(6)
    folder = folder_of(tmp_path / "imgs", images)
    (folder / "zz-broken.png").write_bytes(b"junk")  # last in the listing: 3 batches of 2 are done before it
    out = tmp_path / "out"
    args = [
        str(folder),
        "--models",
        "cifar-mim-vit-t4",
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--no-figures",
    ]
    assert analyze(*args, "--strict") == 2
    assert f"{folder / 'zz-broken.png'}: " in capsys.readouterr().err
    kept = pq.read_table(out / "per_image.parquet")["image"].to_pylist()
    assert kept == [str(folder / p.name) for p in images]  # the finished batches were kept

    assert analyze(*args) == 0
    captured = capsys.readouterr()
    assert "resuming: 6 of 7 image(s) already in" in captured.err and "(0 new row(s))" in captured.out
    assert pq.read_table(out / "per_image.parquet").num_rows == 6  # nothing analysed twice

    # A model added on a rerun analyses every image; the first model's rows are not redone.
    # The same batches as the first run: float32 kernels may round differently at another batch size.
    both = ["--models", "cifar-mim-vit-t4,cifar-cl-vit-t4", "--batch-size", "2", "--no-figures"]
    assert analyze(str(folder), *both, "--out", str(out)) == 0
    assert "(6 new row(s))" in capsys.readouterr().out
    fresh = tmp_path / "fresh"
    assert analyze(str(folder), *both, "--out", str(fresh)) == 0
    assert_same_numbers(metrics(out), metrics(fresh), tol=1e-12)  # resumed == in one go
    assert metrics(out)["set_statistics"]["images"] == [str(folder / p.name) for p in images]
    assert_close_tree(metrics(out)["set_statistics"], metrics(fresh)["set_statistics"], tol=1e-12)


def test_set_statistics_are_the_apis_on_the_first_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--set-images 4 over 5 images in batches of 3: each model's positional share and CKA between the two
    models equal those of one direct capture of the first 4 images (the API's set numbers)."""
    from backend.analysis.cka import cka_payload, cka_with_null, image_means
    from backend.analysis.representation import positional_share_of

    images = shared_images(5)
    folder = folder_of(tmp_path / "imgs", images)
    out = tmp_path / "out"
    args = [str(folder), "--models", DEMO, "--batch-size", "3", "--no-figures", "--out", str(out)]
    assert analyze(*args, "--set-images", "4") == 0
    document = metrics(out)
    stats = document["set_statistics"]
    assert stats["images"] == [str(folder / p.name) for p in images[:4]]
    means = {}
    for model_id, got in zip(DEMO.split(","), document["models"], strict=True):
        loaded = load_model(model_id)
        pixels = preprocess(
            [decode_image(p.read_bytes()).image for p in images[:4]], model_preprocessing(loaded)
        )
        trace = capture(loaded.model, pixels)
        share = positional_share_of(trace.x_out, trace.num_prefix_tokens)
        assert share is not None and got["num_images"] == 5 and got["positional_share"]["num_images"] == 4
        np.testing.assert_allclose(got["positional_share"]["value"], share.tolist(), atol=1e-5)
        means[model_id] = image_means(trace.x_out, trace.num_prefix_tokens)
    [pair] = stats["cka"]
    a, b = DEMO.split(",")
    want = cka_payload(cka_with_null(means[a], means[b]))
    assert (pair["model_a"], pair["model_b"]) == (a, b)
    assert_close_tree({k: pair[k] for k in want}, want, tol=1e-5)
    assert 0.2 < np.mean(pair["cka"]) < 1.0 and pair["null_mean"] != pair["cka"]

    assert analyze(*args, "--set-images", "0") == 0  # none: the rows are there, nothing is recomputed
    assert metrics(out)["set_statistics"] is None
    assert all(m["positional_share"] is None for m in metrics(out)["models"])
    capsys.readouterr()
    assert analyze(*args, "--set-images", "1") == 2
    assert "--set-images must be 0 (no set statistics) or 2..1024, got 1" in capsys.readouterr().err


def test_rows_of_another_setup_are_recomputed_not_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = str(folder_of(tmp_path / "imgs", shared_images(3)))
    out = tmp_path / "out"
    args = [folder, "--models", "cifar-mim-vit-t4", "--out", str(out), "--no-figures"]
    assert analyze(*args) == 0
    auto = metrics(out)["models"][0]
    capsys.readouterr()
    assert analyze(*args, "--preprocessing", "paper") == 0  # another preprocessing: nothing is done yet
    captured = capsys.readouterr()
    assert "resuming" not in captured.err and "(3 new row(s))" in captured.out
    table = pq.read_table(out / "per_image.parquet")
    assert table.num_rows == 3  # the new rows replaced the old ones
    assert {json.loads(p)["mode"] for p in table["preprocessing"].to_pylist()} == {"paper"}
    paper = metrics(out)["models"][0]
    assert (auto["preprocessing"]["mode"], paper["preprocessing"]["mode"]) == ("model", "paper")
    assert paper["delta_log_amplitude"]["value"] != auto["delta_log_amplitude"]["value"]


def test_parts_left_by_a_killed_run_count_as_done(tmp_path: Path) -> None:
    """A run killed before merging leaves part files; the next run reads them, merges, and skips those."""
    images = shared_images(3)
    folder = folder_of(tmp_path / "imgs", images)
    out = tmp_path / "out"
    assert analyze(str(folder), "--models", "cifar-mim-vit-t4", "--out", str(out), "--no-figures") == 0
    store = Store(out)
    table = pq.read_table(store.file)
    store.file.unlink()
    store.write(table.to_pylist()[:2])  # as a killed run would have left them
    setup = {k: table[k][0].as_py() for k in SETUP}
    assert store.done({"cifar-mim-vit-t4": setup}) == {
        (str(folder / p.name), "cifar-mim-vit-t4") for p in images[:2]
    }
    assert store.done({"cifar-mim-vit-t4": setup | {"weights_digest": "other"}}) == set()
    assert analyze(str(folder), "--models", "cifar-mim-vit-t4", "--out", str(out), "--no-figures") == 0
    assert not store.parts.exists()
    assert pq.read_table(store.file)["image"].to_pylist() == [str(folder / p.name) for p in images]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One real Ray instance on this machine (2 CPUs) for the Ray tests; the engine uses it as it finds it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.usefixtures("local_ray")
def test_ray_errors_reach_the_user_as_themselves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(folder_of(tmp_path / "imgs", shared_images(1)))
    out = str(tmp_path / "out")
    # An actor that cannot load its model: the loader's message (what to fetch), not a Ray traceback.
    assert analyze(folder, "--models", "mae-vit-b16", "--out", out, "--engine", "ray") == 2
    assert "vitscope models pull mae-vit-b16" in capsys.readouterr().err
    # Actors taking every CPU would starve the decoding tasks forever: refused up front.
    assert (
        analyze(folder, "--models", "cifar-mim-vit-t4", "--out", out, "--engine", "ray", "--actor-cpus", "2")
        == 2
    )
    assert "leave none to decode images" in capsys.readouterr().err


@pytest.mark.usefixtures("local_ray")
def test_ray_engine_gives_the_local_numbers(tmp_path: Path) -> None:
    """12 images (a shard of 8 and a folder of 4) through a real local Ray (2 CPUs, one CPU actor)."""
    shard = shard_of(tmp_path / "shard-000.tar", shared_images(6, "boat") + shared_images(2, "dog"))
    folder = folder_of(tmp_path / "imgs", shared_images(4, "cat"))
    common = [str(shard), str(folder), "--models", DEMO, "--batch-size", "4", "--no-figures"]
    assert analyze(*common, "--out", str(tmp_path / "local")) == 0
    assert analyze(*common, "--out", str(tmp_path / "ray"), "--engine", "ray") == 0
    local, ray = metrics(tmp_path / "local"), metrics(tmp_path / "ray")
    assert ray["engine"] == "ray" and "Ray actor" in ray["device"]
    assert ray["images"] == local["images"] and len(local["images"]) == 12
    assert_same_numbers(local, ray, tol=1e-5)
    assert ray["set_statistics"]["images"] == local["images"]  # all 12 are in the default sample
    assert_close_tree(ray["set_statistics"], local["set_statistics"], tol=1e-5)
    rows = {
        name: pq.read_table(tmp_path / name / "per_image.parquet").to_pydict() for name in ("local", "ray")
    }
    assert rows["local"]["image"] == rows["ray"]["image"] and rows["local"]["sha256"] == rows["ray"]["sha256"]
    for field in ("distance", "nmi", "entropy", "scalars", "token_norm", "effective_rank", "cls_self"):
        np.testing.assert_allclose(
            torch.tensor(rows["local"][field]), torch.tensor(rows["ray"][field]), atol=1e-5, rtol=0
        )
