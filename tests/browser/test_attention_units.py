"""The attention panel's pure parts without a browser: the second query and the rollout in the permalink, the
rollout's head rule, the rollout title, the token-norm figure's outlines and the prefix list.

(Beside the browser tests, as ``test_ui_units.py``; no browser needed.)
"""

from __future__ import annotations

from typing import Any

from app.components.attention import column_request, is_rollout, prefix_list, rollout_value
from app.exports import attention_name, norms_name
from app.figures.attention import attention_figure, describe
from app.figures.norms import norms_figure
from app.state import Query, ViewState

SHA = "c" * 64


def test_second_query_and_rollout_round_trip_in_the_link() -> None:
    state = ViewState(
        images=[SHA], models=["a", "b"], query=Query.at_patch(1, 2, (8, 8)),
        query2=Query.at_patch(5, 6, (8, 8)), rollout=True, panels=["norms"],
    )  # fmt: skip
    search = state.to_search()
    assert "query2=0.6875,0.8125" in search and "rollout=1" in search and "open=norms" in search
    back = ViewState.from_search(search)
    assert back == state
    assert back.query2 is not None and back.query2.patch((8, 8)) == (5, 6)
    assert back.query2.patch((14, 14)) == (9, 11), "the same place on another grid"
    cls = ViewState.from_search(ViewState(images=[SHA], query2=Query()).to_search())
    assert cls.query2 == Query() and cls.query2.is_cls
    plain = ViewState(images=[SHA]).to_search()
    assert "query2" not in plain and "rollout" not in plain
    assert ViewState.from_search(plain).query2 is None and not ViewState.from_search(plain).rollout
    odd = ViewState.from_search(f"?images={SHA}&query2=7,x&rollout=yes")
    assert odd.query2 is None and not odd.rollout, "a malformed second query is none, not CLS"


def test_second_query_store_forms() -> None:
    assert Query.second(None) is None and Query.second("nonsense") is None and Query.second({"y": 2}) is None
    assert Query.second("cls") == Query()
    assert Query.second({"y": 0.5, "x": 0.25}) == Query(0.5, 0.25) == Query.second("0.5,0.25")
    assert is_rollout(rollout_value(True)) and not is_rollout(rollout_value(False)) and not is_rollout("x")


def test_the_rollout_fuses_heads_by_their_mean() -> None:
    shape = {"layers": 4, "heads": 3}
    assert column_request(shape, 2, "1") == (2, 1, "")
    assert column_request(shape, 2, "1", rollout=True) == (
        2,
        "mean",
        "the rollout fuses the heads by their mean",
    )
    assert column_request(shape, 2, "mean", rollout=True) == (2, "mean", "")
    layer, head, note = column_request(shape, 9, "5", rollout=True)
    assert (layer, head) == (4, "mean") and "4 blocks" in note and "mean" in note


def test_rollout_maps_say_so_in_title_meta_and_file_name() -> None:
    assert (
        describe(6, "mean", (1, 2), (8, 8), rollout=True) == "rollout to block 6 · query patch (1, 2) = #10"
    )
    assert describe(6, 2, None, (8, 8)) == "block 6 · head 2 · CLS query"
    fig = attention_figure(
        image=SHA, model="m", title="m", image_uri=None, amap=[[0.25, 0.25], [0.25, 0.25]], grid=(2, 2),
        patch=4, layer=3, head="mean", rc=None, opacity=0.5, rollout=True,
    )  # fmt: skip
    assert fig.layout.meta["rollout"] is True
    assert fig.layout.meta["filename"] == "vitscope_m_block3_rollout_query-cls"
    assert "rollout to block 3" in fig.layout.title.text
    assert attention_name("m", 3, "mean", 5, (2, 4)) == "vitscope_m_block3_head-mean_query-r1c1"
    assert norms_name("a/b", 7) == "vitscope_a-b_block7_token-norms"


def norms_body(**over: Any) -> dict[str, Any]:
    body = {
        "model": "m", "grid": [2, 3], "layer": 4, "median": 2.0, "outlier_factor": 4.0, "outliers": [1, 5],
        "map": [[1.0, 9.0, 2.0], [2.0, 1.5, 10.0]],
        "prefix": [{"token": 0, "label": "cls", "norm": 5.0},
                   {"token": 1, "label": "register 1", "norm": 30.0}],
    }  # fmt: skip
    return {**body, **over}


def test_norm_figure_outlines_the_outliers_and_lists_the_prefix() -> None:
    fig = norms_figure(title="m", body=norms_body(), patch=16, filename="f")
    assert [list(r) for r in fig.data[0].z] == norms_body()["map"]
    boxes = [(s.x0, s.x1, s.y0, s.y1) for s in fig.layout.shapes]
    assert boxes == [(16, 32, 0, 16), (32, 48, 16, 32)], "patch 1 = (0, 1), patch 5 = (1, 2)"
    assert "2/6 patches > 4× median" in fig.layout.title.text and "block 4" in fig.layout.title.text
    assert fig.layout.meta["filename"] == "f"
    text = str(prefix_list(norms_body()).to_plotly_json())
    assert "register 1" in text and "15.00 × median" in text and "2.50 × median" in text
    assert "No prefix tokens" in str(prefix_list(norms_body(prefix=[])).to_plotly_json())
