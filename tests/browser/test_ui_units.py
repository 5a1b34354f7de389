"""The UI's pure parts without a browser: permalink state, metrics reading, figures, the API client's errors.

(They live beside the browser tests because ``tests/browser`` holds everything of the UI; no browser needed.)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.api_client import ApiClient, ApiError, api_base
from app.components.attention import title_of
from app.figures.attention import attention_figure, patch_update, query_shape
from app.figures.curves import curves_figure, layer_marker_shapes
from app.figures.spectrum import frequencies, spectrum_figure
from app.figures.style import DASHES, FAMILY_LABELS, family_key, model_colours
from app.figures.tokens import token_points
from app.metrics import METRICS, metrics_table, read_curve, read_shape
from app.state import Query, ViewState, head_param
from backend.models.catalog import FAMILIES

SHA = "a" * 64
SHA2 = "b" * 64


def metrics_object(layers: int = 3, heads: int = 2, images: int = 1) -> dict[str, Any]:
    def summary(base: float) -> dict[str, Any]:
        per_head = [[base + k + h / 10 for h in range(heads)] for k in range(layers)]
        return {
            "mean": [sum(r) / heads for r in per_head],
            "per_head": per_head,
            "std": [0.1 * (images - 1)] * layers,
        }

    return {
        "model": "m",
        "family": "cl",
        "grid": [14, 14],
        "patch_size": 16,
        "layers": layers,
        "heads": heads,
        "num_images": images,
        "preprocessing": {"input_size": [224, 224], "resize": 256, "crop_pct": 0.875},
        "attention_distance": summary(50.0),
        "nmi": summary(0.1),
        "attention_entropy": summary(4.0),
        "delta_log_amplitude": {
            "depth": list(range(layers + 1)),
            "value": [-2.0] * (layers + 1),
            "std": [0.05 * (images - 1)] * (layers + 1),
        },
    }


# -- permalink state -------------------------------------------------------------------------------
def test_view_state_round_trip() -> None:
    state = ViewState(
        images=[SHA, SHA2], active=1, models=["dino-vit-s16", "mae-vit-b16"], layer=7, head="3",
        query=Query.at_patch(3, 10, (14, 14)),
    )  # fmt: skip
    back = ViewState.from_search(state.to_search())
    assert back == state
    assert back.query.patch((14, 14)) == (3, 10)
    assert back.query.index((14, 14)) == 3 * 14 + 10
    assert back.query.patch((16, 16)) == (4, 12), "the same place of the image on another grid"


def test_view_state_drops_what_is_malformed() -> None:
    state = ViewState.from_search(
        "?images=zz,../etc," + SHA + "&active=9&models=a b,ok-1&layer=-2&head=x&query=2,3"
    )
    assert state.images == [SHA] and state.active == 0
    assert state.models == ["ok-1"]
    assert state.layer is None and state.head == "mean" and state.query.is_cls
    assert ViewState.from_search(None) == ViewState()
    assert Query.from_param("cls").is_cls and Query.from_store("cls").is_cls
    assert head_param("mean") == "mean" and head_param("2") == 2 and head_param(None) == "mean"


# -- metrics ---------------------------------------------------------------------------------------
def test_read_curves_and_shape() -> None:
    m = metrics_object(layers=3, heads=2, images=4)
    dist = read_curve(m, METRICS[0])
    assert dist is not None and dist.x == [1, 2, 3] and dist.std == pytest.approx([0.3, 0.3, 0.3])
    assert dist.per_head is not None and len(dist.per_head[0]) == 2
    dla = read_curve(m, METRICS[3])
    assert dla is not None and dla.x == [0, 1, 2, 3]
    assert read_curve({}, METRICS[1]) is None
    shape = read_shape(m)
    assert (shape.layers, shape.heads, shape.grid, shape.patch_size) == (3, 2, (14, 14), 16)
    assert shape.input_size == (224, 224) and shape.resize == 256
    rows = metrics_table({"m": m})
    assert {r["metric"] for r in rows} == {s.key for s in METRICS}
    assert any(r["head"] == 1 for r in rows)


# -- figures ---------------------------------------------------------------------------------------
def test_attention_figure_geometry_and_patch() -> None:
    amap = [[1 / 196] * 14 for _ in range(14)]
    fig = attention_figure(
        image=SHA, model="m", title="m", image_uri="data:image/jpeg;base64,xx", amap=amap, grid=(14, 14),
        patch=16, layer=5, head="mean", rc=(3, 10), opacity=0.5,
    )  # fmt: skip
    heat = fig.data[0]
    assert heat.x0 == 8 and heat.dx == 16 and heat.y0 == 8 and heat.dy == 16
    assert list(fig.layout.yaxis.range) == [224, 0], "rows go down like the image"
    shape = fig.layout.shapes[0]
    assert (shape.x0, shape.x1, shape.y0, shape.y1) == (160, 176, 48, 64), (
        "patch (3, 10) covers [48,64)x[160,176)"
    )
    assert fig.layout.meta["query"] == 52 and fig.layout.meta["image"] == SHA
    assert fig.layout.images[0].sizex == 224
    assert query_shape(None, 16) == []
    p = patch_update({"data": [{}], "layout": {"title": {}}}, title="m", amap=amap, grid=(14, 14), patch=16,
                     layer=6, head=2, rc=None, opacity=0.3, image=SHA, model="m")  # fmt: skip
    assert p["layout"]["meta"]["query"] == "cls" and p["layout"]["shapes"] == []


def test_curves_spectrum_tokens_figures() -> None:
    per_model = {"a": metrics_object(images=3), "b": metrics_object()}
    families = {"a": "cl", "b": "mim"}
    fig = curves_figure(per_model, colours=model_colours(["a", "b"], families), families=families, layer=2,
                        subtitle="s")  # fmt: skip
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 4, "a std band per metric for the set, none for the single image"
    assert [s["x0"] for s in layer_marker_shapes(2)] == [2, 2, 2, 2]
    assert fig.layout.shapes[3].xref == "x4"
    spec = spectrum_figure(
        {
            "a": {"map": [[0.0, 1.0], [2.0, 3.0]], "delta": [0.0], "high_frequency_delta": 0.0},
            "b": {"map": [[-1.0, 0.0], [0.0, 5.0]], "delta": [0.0], "high_frequency_delta": 0.0},
        },
        titles={},
        subtitle="",
    )
    assert spec.layout.coloraxis.cmin == -1.0 and spec.layout.coloraxis.cmax == 5.0, "one shared colour scale"
    assert frequencies(4) == [-2, -1, 0, 1] and frequencies(7) == [-3, -2, -1, 0, 1, 2, 3], "cycles/image"
    points = token_points({"coords": [[0, 1], [2, 3]], "image_index": [0, 1], "token_index": [5, 0]})
    assert points == [(0, 5, 0.0, 1.0), (1, 0, 2.0, 3.0)]
    assert family_key("random") == "baseline" and family_key("weird") == "other"
    for family in FAMILIES:  # every family the catalogue names has its own label, colours and dash
        assert family_key(family) == family and family in FAMILY_LABELS and family in DASHES, family
    assert title_of("aimv2-vit-l14", "autoregressive").endswith(" · AR")
    colours = model_colours(["a", "b", "c"], {"a": "cl", "b": "cl", "c": "mim"})
    assert colours["a"] != colours["b"] and len(set(colours.values())) == 3


# -- the API client --------------------------------------------------------------------------------
def test_api_client_errors_are_words_and_answers_are_cached() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if request.url.path.endswith("/images"):
            return httpx.Response(
                415,
                json={"error": {"code": "bad_image", "message": "notes.txt is not an image; allowed: PNG"}},
            )
        if request.url.path.endswith("/attention"):
            return httpx.Response(200, json={"grid": [2, 2], "map": [[0.25, 0.25], [0.25, 0.25]]})
        return httpx.Response(500, text="boom")

    client = ApiClient("http://api:8000", transport=httpx.MockTransport(handler), token="t")
    with pytest.raises(ApiError) as err:
        client.upload_image(b"hello", "notes.txt")
    assert err.value.status == 415 and err.value.code == "bad_image" and "not an image" in err.value.message
    first = client.attention(SHA, "m", 1, "mean", 5)
    again = client.attention(SHA, "m", 1, "mean", 5)
    assert first == again and sum("/attention" in c for c in calls) == 1
    with pytest.raises(ApiError, match="500"):
        client.models()
    results = client.parallel([lambda: 1, lambda: (_ for _ in ()).throw(ApiError("x"))])
    assert results[0] == 1 and isinstance(results[1], ApiError)
    assert api_base("http://h:1/") == "http://h:1/api/v1" == api_base("http://h:1/api/v1")
    client.close()


def test_api_client_follows_a_job() -> None:
    state = {"polls": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/v1/jobs/"):
            state["polls"] += 1
            status = "succeeded" if state["polls"] > 1 else "running"
            return httpx.Response(200, json={"id": "j", "status": status, "result": None})
        if state["polls"] > 1:
            return httpx.Response(200, json=metrics_object())
        return httpx.Response(202, json={"job": {"id": "e" * 32, "status": "queued"}})

    client = ApiClient("http://api", transport=httpx.MockTransport(handler))
    body = client.set_metrics("c" * 64, "m")
    assert body["layers"] == 3 and state["polls"] == 2
    json.dumps(body)
    client.close()


def test_api_client_refuses_forged_ids_and_encodes_paths() -> None:
    """A forged store value (``img-store.active = "../jobs?"``) never reaches another API route."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"map": [[1.0]]})

    client = ApiClient("http://api", transport=httpx.MockTransport(handler))
    for forged in ("../jobs?", "a" * 63, "A" * 64, "a" * 64 + "/../../jobs", "%2e%2e", ""):
        with pytest.raises(ApiError, match="malformed") as err:
            client.attention(forged, "m", 1, "mean", "cls")
        assert err.value.status == 400
        with pytest.raises(ApiError, match="malformed"):
            client.metrics(forged, "m")
        with pytest.raises(ApiError, match="malformed"):
            client.create_set([SHA, forged])
    with pytest.raises(ApiError, match="malformed"):
        client.job("../models/x/pull")
    assert seen == [], "no request left for a malformed id"
    client.attention(SHA, "m", 1, "mean", "cls")
    assert seen == [f"/api/v1/images/{SHA}/attention?model=m&layer=1&head=mean&query=cls"]
    client.close()


def test_store_values_are_cleaned() -> None:
    from app.state import clean_images, clean_models

    forged = {"ids": ["../jobs?", SHA, SHA, 5], "names": {SHA: "cat\n.png", "x": "y"}, "active": "../jobs?"}
    assert clean_images(forged) == {"ids": [SHA], "names": {SHA: "cat.png"}, "active": SHA}
    assert clean_images("junk") == {"ids": [], "names": {}, "active": None}
    assert clean_models(["a", "a", "../x", "b c", "ok", "d", "e", "f"]) == ["a", "ok", "d", "e"]
    assert clean_models(["a", "b"], allowed={"b"}) == ["b"]


def test_view_state_keeps_names_opacity_and_panels() -> None:
    state = ViewState(
        images=[SHA, SHA2], names=["cat, 1.png", ""], active=1, models=["a", "b"], opacity=0.35,
        spectrum="attn", projection="tsne", panels=["heads", "tokens"], query=Query.at_patch(3, 3, (8, 8)),
    )  # fmt: skip
    search = state.to_search()
    back = ViewState.from_search(search)
    assert back == state, search
    assert back.query.patch((8, 8)) == (3, 3) and back.query.patch((14, 14)) == (6, 6)
    odd = ViewState.from_search("?images=" + SHA + "&name=a%00b&opacity=7&spectrum=zz&projection=umap&open=x")
    assert odd.names == ["ab"] and odd.opacity == 0.6 and odd.spectrum == "out" and odd.projection == "pca"
    assert odd.panels == []


def test_model_labels_say_what_a_model_is() -> None:
    from app.components.models import label

    demo = {"arch": "vit_tiny_patch16_224", "patch_size": 4, "input_size": [32, 32]}
    assert label(demo) == "ViT-Tiny/4 at 32 px", "not the timm name's patch16_224"
    assert label({**demo, "input_size": None}) == "ViT-Tiny/4", "no guessed input size"
    assert label({"arch": "vit_small_patch16_224.dino", "patch_size": 16}) == "ViT-S/16 at 224 px"
    assert (
        label({"arch": "eva02_base_patch14_224.mim_in22k", "patch_size": 14})
        == "eva02_base_patch14_224.mim_in22k"
    )
