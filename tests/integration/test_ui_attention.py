"""The attention panel against the real API (mounted UI on a port, real Redis) with a model without CLS: the
page's callbacks and its ``/_vitscope/attention`` route show the API's refusal of a CLS query, never a map,
and draw the rollout and second-query maps that are the API's numbers for the models that answer.

(The browser tests' server has only models with CLS; here a random-init tiny ViT with 4 registers and no CLS.)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.integration.test_api import TINY, png_bytes, settings_for, use_models_cache, write_tiny_model

pytestmark = pytest.mark.integration
NO_CLS = "tiny-reg-no-cls"
MODELS = [TINY, NO_CLS]
REFUSAL = f"this model ({NO_CLS}) has no CLS token; query a patch"


@pytest.fixture(scope="module")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui_attention_models")
    write_tiny_model(folder)
    no_cls = {"reg_tokens": 4, "class_token": False, "global_pool": "avg"}
    write_tiny_model(folder, NO_CLS, seed=2, arch_kwargs=no_cls)
    return folder


@pytest.fixture
def ui(models_cache: Path, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``create_app(settings, ui=True)`` on a free port: the page's callbacks call the API over HTTP."""
    from backend.api import create_app

    use_models_cache(monkeypatch, models_cache)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = settings_for(tmp_path, ui=True, port=port, redis_url=redis_url, default_models=MODELS)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v1/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def pid(kind: str, i: int) -> dict[str, Any]:
    return {"index": i, "type": kind}


def call(
    client: httpx.Client,
    outputs: list[Any],
    inputs: list[dict[str, Any]],
    state: list[dict[str, Any]],
    changed: str,
) -> dict[str, Any]:
    """One Dash callback request, as the page sends it; the answer's props by output id."""

    def text(o: dict[str, Any]) -> str:
        key = (
            o["id"]
            if isinstance(o["id"], str)
            else json.dumps(o["id"], separators=(",", ":"), sort_keys=True)
        )
        return f"{key}.{o['property']}"

    def spec(o: Any) -> str:
        if isinstance(o, list):  # an ALL pattern: Dash names it with ["ALL"]
            pattern = {**o[0]["id"], "index": ["ALL"]}
            return text({"id": pattern, "property": o[0]["property"]})
        return text(o)

    body = {
        "output": ".." + "...".join(spec(o) for o in outputs) + "..",
        "outputs": outputs,
        "inputs": inputs,
        "state": state,
        "changedPropIds": [changed],
    }
    r = client.post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json()["response"])


def meta_of(client: httpx.Client, image: str) -> dict[str, Any]:
    catalog = client.get("/api/v1/models").json()["models"]
    out = call(
        client,
        [{"id": "an-meta", "property": "data"}, {"id": "ctl-layer", "property": "max"},
         {"id": "ctl-layer", "property": "marks"}, {"id": "ctl-head", "property": "options"}],
        [{"id": "img-store", "property": "data", "value": {"ids": [image], "names": {}, "active": image}},
         {"id": "mdl-store", "property": "data", "value": MODELS}],
        [{"id": "mdl-catalog", "property": "data", "value": catalog}],
        "mdl-store.data",
    )  # fmt: skip
    meta: dict[str, Any] = out["an-meta"]["data"]
    assert sorted(meta["models"]) == sorted(MODELS) and not meta["errors"]
    return meta


def api_map(client: httpx.Client, image: str, model: str, query: int | str, rollout: bool) -> Any:
    params: dict[str, str | int] = {"model": model, "layer": 2, "head": "mean", "query": query}
    params["rollout"] = "true" if rollout else "false"
    r = client.get(f"/api/v1/images/{image}/attention", params=params)
    assert r.status_code == 200, r.text
    return r.json()["map"]


def by_index(answer: dict[str, Any], kind: str, prop: str) -> list[Any]:
    found = {json.loads(k)["index"]: v[prop] for k, v in answer.items() if k.startswith("{") and kind in k}
    return [found[i] for i in range(len(found))]


def test_rollout_maps_and_the_refusal_of_cls_without_cls(ui: str) -> None:
    with httpx.Client(base_url=ui, timeout=120) as client:
        image = client.post("/api/v1/images", files={"file": ("x.png", png_bytes(21), "image/png")}).json()[
            "id"
        ]
        meta = meta_of(client, image)
        answer = call(
            client,
            [[{"id": pid("att-graph", i), "property": "figure"} for i in range(2)],
             [{"id": pid("att-msg", i), "property": "children"} for i in range(2)],
             {"id": "att-empty", "property": "children"}, {"id": "att-drawn", "property": "data"}],
            [{"id": "an-meta", "property": "data", "value": meta},
             {"id": "att-cols", "property": "data", "value": MODELS},
             {"id": "ctl-layer", "property": "value", "value": 2},
             {"id": "ctl-head", "property": "value", "value": "1"},
             {"id": "att-rollout", "property": "value", "value": ["rollout"]}],
            [{"id": "ctl-query", "property": "data", "value": "cls"},
             {"id": "ctl-opacity", "property": "value", "value": 0.6},
             {"id": "att-drawn", "property": "data", "value": []}],
            "att-rollout.value",
        )  # fmt: skip
        figures, msgs = by_index(answer, "att-graph", "figure"), by_index(answer, "att-msg", "children")
        rolled = figures[0]
        assert rolled["layout"]["meta"]["rollout"] is True and rolled["layout"]["meta"]["head"] == "mean"
        assert rolled["data"][0]["z"] == api_map(client, image, TINY, "cls", rollout=True)
        assert "rollout to block 2 · CLS query" in rolled["layout"]["title"]["text"]
        assert "the rollout fuses the heads by their mean" in json.dumps(msgs[0])
        # the model without CLS: the API's message, and no map at all
        assert figures[1]["data"] == [] and REFUSAL in json.dumps(msgs[1])
        assert answer["att-drawn"]["data"] == [TINY, None]
        # the click path's route says the same
        r = client.get(
            "/_vitscope/attention",
            params={"image": image, "model": NO_CLS, "layer": 2, "query": "cls", "rollout": "true"},
        )
        assert r.status_code == 400 and REFUSAL in r.json()["error"]["message"]
        r = client.get(
            "/_vitscope/attention",
            params={"image": image, "model": NO_CLS, "layer": 2, "query": 5, "rollout": "true"},
        )
        body = r.json()
        assert r.status_code == 200 and body["rollout"] is True
        assert body["map"] == api_map(client, image, NO_CLS, 5, rollout=True)
        assert body["filename"].endswith("_block2_rollout_query-r1c1")


def test_second_row_draws_each_models_map_or_its_refusal(ui: str) -> None:
    with httpx.Client(base_url=ui, timeout=120) as client:
        image = client.post("/api/v1/images", files={"file": ("x.png", png_bytes(22), "image/png")}).json()[
            "id"
        ]
        meta = meta_of(client, image)

        def second(query2: Any, rollout: list[str]) -> dict[str, Any]:
            return call(
                client,
                [[{"id": pid("att-graph2", i), "property": "figure"} for i in range(2)],
                 [{"id": pid("att-msg2", i), "property": "children"} for i in range(2)],
                 {"id": "att-row2", "property": "style"}],
                [{"id": "an-meta", "property": "data", "value": meta},
                 {"id": "att-cols", "property": "data", "value": MODELS},
                 {"id": "ctl-layer", "property": "value", "value": 2},
                 {"id": "ctl-head", "property": "value", "value": "mean"},
                 {"id": "att-rollout", "property": "value", "value": rollout},
                 {"id": "att-query2", "property": "data", "value": query2}],
                [{"id": "ctl-opacity", "property": "value", "value": 0.6}],
                "att-query2.data",
            )  # fmt: skip

        place = {"y": 0.3, "x": 0.6}  # patch (1, 2) of the 4 x 4 grids: #6
        answer = second(place, [])
        figures = by_index(answer, "att-graph2", "figure")
        assert answer["att-row2"]["style"] == {}
        for model, fig in zip(MODELS, figures, strict=True):
            assert fig["layout"]["meta"]["query"] == 6 and fig["layout"]["meta"]["rollout"] is False
            assert fig["data"][0]["z"] == api_map(client, image, model, 6, rollout=False)
        answer = second("cls", ["rollout"])
        figures, msgs = by_index(answer, "att-graph2", "figure"), by_index(answer, "att-msg2", "children")
        assert figures[0]["data"][0]["z"] == api_map(client, image, TINY, "cls", rollout=True)
        assert figures[1]["data"] == [] and REFUSAL in json.dumps(msgs[1])
        hidden = second(None, [])
        assert hidden["att-row2"]["style"] == {"display": "none"}
