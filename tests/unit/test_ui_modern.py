"""The "Beyond the paper" panel's readers and figure (app/metrics.py, app/figures/modern.py,
app/components/modern.py) on metrics objects that ``compute_metrics`` makes from tiny random traces: the
curves drawn are the object's numbers, and a null (no CLS token, one head, one image) or absent key gives a
note there, never a line."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from app.components.modern import what_they_show
from app.exports import modern_files
from app.figures.modern import modern_figure
from app.metrics import LOG2, ModernSpec, modern_missing, modern_panels, modern_table, read_modern
from backend.analysis import compute_metrics
from backend.capture import Trace


def metrics_for(
    *, images: int = 2, heads: int = 2, prefix: int = 1, layers: int = 3, seed: int = 0
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    n = prefix + 16
    attn = [torch.softmax(3 * torch.randn(images, heads, n, n, generator=g), -1) for _ in range(layers)]
    states = [torch.randn(images, n, 8, generator=g) for _ in range(2 * layers + 1)]
    states[2][:, prefix + 5] *= 20  # one high-norm token at depth 2
    trace = Trace(
        attentions=attn,
        x_attn=states[layers + 1 :],
        x_out=states[: layers + 1],
        grid=(4, 4),
        patch_size=8,
        num_prefix_tokens=prefix,
        model_id=f"m{seed}",
        preprocessing={},
    )
    return json.loads(json.dumps(compute_metrics(trace, "cl")))  # as the API sends it


def lines(fig: Any, panel: str) -> dict[str, Any]:
    """The curves (not bands or the ceiling) of one panel, by trace name (``model`` or ``model · x_attn``)."""
    out = {}
    for t in fig.data:
        if t.mode == "lines+markers" and t.meta and t.meta["panel"] == panel:
            label = t.meta["curve"]
            out[t.name + (f" · {label}" if label == "x_attn" else "")] = t
    return out


def test_read_modern_reads_each_shape_as_the_api_sends_it() -> None:
    m = metrics_for()
    norm = read_modern(m, ModernSpec("token_norm", "p99"))
    assert norm is not None and norm.x == [0, 1, 2, 3]
    assert norm.mean == m["token_norm"]["p99"]["value"] and norm.std == m["token_norm"]["p99"]["std"]
    rank = read_modern(m, ModernSpec("effective_rank"))
    assert rank is not None and rank.x == [0, 1, 2, 3] and rank.mean == m["effective_rank"]["value"]
    div = read_modern(m, ModernSpec("head_diversity"))
    assert div is not None and div.x == [1, 2, 3] and div.mean == m["head_diversity"]["value"]
    sel = read_modern(m, ModernSpec("cls_selectivity"))
    assert sel is not None and sel.x == [1, 2, 3] and sel.per_head == m["cls_selectivity"]["per_head"]
    move = read_modern(m, ModernSpec("movement_coherence"))
    assert move is not None and move.x == [1, 2, 3] and move.mean == m["movement_coherence"]["mean"]
    share = read_modern(m, ModernSpec("positional_share"))
    assert share is not None and share.x == [0, 1, 2, 3] and share.std is None
    attn = read_modern(m, ModernSpec("delta_log_amplitude_attn"))
    assert attn is not None and attn.x == [1, 2, 3] and attn.mean == m["delta_log_amplitude_attn"]["value"]


@pytest.mark.parametrize("stat", ["mean", "p99", "max"])
def test_every_panel_draws_the_objects_numbers(stat: str) -> None:
    a, b = metrics_for(), metrics_for(seed=1, heads=3)
    fig = modern_figure({"a": a, "b": b}, colours={}, families={}, layer=2, subtitle="s", norm_stat=stat)
    assert fig.layout.meta["panels"] == [p.key for p in modern_panels()] and fig.layout.meta["notes"] == {}
    for name, m in (("a", a), ("b", b)):
        assert list(lines(fig, "token_norm")[name].y) == m["token_norm"][stat]["value"]
        frac = lines(fig, "outlier_fraction")[name]
        assert list(frac.y) == m["token_norm"]["outlier_fraction"]["value"]
        assert list(lines(fig, "effective_rank")[name].y) == m["effective_rank"]["value"]
        assert list(lines(fig, "head_diversity")[name].y) == m["head_diversity"]["value"]
        assert list(lines(fig, "cls_selectivity")[name].y) == m["cls_selectivity"]["mean"]
        assert list(lines(fig, "cls_self")[name].y) == m["cls_self"]["mean"]
        assert list(lines(fig, "positional_share")[name].y) == m["positional_share"]["value"]
        assert list(lines(fig, "movement_coherence")[name].y) == m["movement_coherence"]["mean"]
        delta = lines(fig, "delta_log_amplitude")
        assert (
            list(delta[name].x) == list(range(4)) and list(delta[name].y) == m["delta_log_amplitude"]["value"]
        )
        assert list(delta[f"{name} · x_attn"].x) == [1, 2, 3]
        assert list(delta[f"{name} · x_attn"].y) == m["delta_log_amplitude_attn"]["value"]
    assert max(a["token_norm"]["outlier_fraction"]["value"]) > 0  # the planted high-norm token shows
    assert fig.layout.annotations[0].text.startswith(
        f"Token norm ({dict(mean='mean', p99='99th', max='max')[stat]}"
    )
    # the head diversity ceiling, std bands (2 images), the layer marked in all nine plots
    ceiling = [t for t in fig.data if t.name == "log 2"]
    assert len(ceiling) == 1 and list(ceiling[0].y) == [LOG2, LOG2] and ceiling[0].xaxis == "x4"
    assert any(t.fill == "toself" and t.xaxis == "x3" for t in fig.data)
    assert len(fig.layout.shapes) == 9 and {s.x0 for s in fig.layout.shapes} == {2}
    assert {s.xref for s in fig.layout.shapes} == {"x"} | {f"x{i}" for i in range(2, 10)}


def test_nulls_get_a_note_per_model_never_a_line() -> None:
    with_cls = metrics_for(images=1)
    no_cls = metrics_for(images=1, prefix=0, heads=1, seed=2)  # no CLS token, one head, one image
    assert (
        no_cls["cls_self"] is None and no_cls["head_diversity"] is None and no_cls["positional_share"] is None
    )
    fig = modern_figure({"a": with_cls, "z": no_cls}, colours={}, families={}, layer=1, subtitle="s")
    notes = fig.layout.meta["notes"]
    assert notes["cls_selectivity"] == {"z": "no CLS token"} and notes["cls_self"] == {"z": "no CLS token"}
    assert notes["head_diversity"] == {"z": "one head: nothing to compare"}
    assert set(notes["positional_share"]) == {"a", "z"}  # one image: nobody has it
    assert "2+ images" in notes["positional_share"]["a"]
    for panel in ("cls_selectivity", "cls_self", "head_diversity"):
        assert set(lines(fig, panel)) == {"a"}  # z draws nothing there, a still does
    assert lines(fig, "positional_share") == {}
    assert set(lines(fig, "effective_rank")) == {"a", "z"}
    placed = {a.xref: a for a in fig.layout.annotations if a.xref.endswith("domain")}  # the notes
    assert placed["x5 domain"].text == placed["x6 domain"].text == "z: no CLS token"
    assert placed["x5 domain"].x == 0.02  # beside a's curve: at the top left
    assert (
        placed["x7 domain"].text.startswith("a: needs a set")
        and "<br>z: needs a set" in placed["x7 domain"].text
    )
    assert placed["x7 domain"].x == 0.5  # nothing drawn there: centred
    assert what_they_show({"z": no_cls})[0].endswith("; no CLS token.")


def test_an_absent_key_says_so() -> None:
    old = {k: v for k, v in metrics_for().items() if k not in ("effective_rank", "delta_log_amplitude_attn")}
    assert modern_missing(old, ModernSpec("effective_rank")) == "its metrics have no effective_rank"
    fig = modern_figure({"old": old}, colours={}, families={}, layer=None, subtitle="s")
    notes = fig.layout.meta["notes"]
    assert notes["effective_rank"] == {"old": "its metrics have no effective_rank"}
    assert notes["delta_log_amplitude"] == {"old · x_attn": "its metrics have no delta_log_amplitude_attn"}
    assert set(lines(fig, "delta_log_amplitude")) == {"old"} and fig.layout.shapes == ()


def test_what_they_show_reads_the_curves() -> None:
    m = metrics_for()
    text = what_they_show({"a": m})[0]
    rank = m["effective_rank"]["value"]
    frac = m["token_norm"]["outlier_fraction"]["value"]
    top = max(range(4), key=lambda d: frac[d])
    div = m["head_diversity"]["value"]
    assert f"effective rank {rank[0]:.1f} at depth 0 and {rank[-1]:.1f} at depth 3" in text
    over = " (mean over images)" if m.get("num_images", 1) > 1 else ""
    share = f"the largest share of patch tokens above 4 × the median norm is {frac[top]:.1%}{over}, at depth "
    share += str(top)
    assert share in text
    one = what_they_show({"a": {**m, "num_images": 1}})[0]
    assert "median norm is" in one and "(mean over images)" not in one
    assert "(mean over images)" in what_they_show({"a": {**m, "num_images": 5}})[0]
    assert f"head diversity {min(div):.3f} to {max(div):.3f} nats" in text
    assert f"weight {m['cls_self']['mean'][-1]:.3f} in block 3" in text


def test_exports_hold_the_panels_numbers() -> None:
    m = metrics_for(heads=2)
    rows = modern_table({"a": m})
    p99 = [r for r in rows if r["metric"] == "token_norm.p99" and r["head"] == "mean"]
    assert [r["value"] for r in p99] == m["token_norm"]["p99"]["value"]
    per_head = [
        r["value"] for r in rows if r["metric"] == "cls_self" and r["depth"] == 2 and r["head"] != "mean"
    ]
    assert per_head == m["cls_self"]["per_head"][1]
    js, csv = modern_files({"a": m}, scope="set", subtitle="s", images=["x", "y"], errors=[])
    assert js.path == "vitscope_beyond-the-paper_set-of-2-images.json" and csv.path.endswith(".csv")
    doc = json.loads(str(js.data))
    assert doc["models"]["a"]["effective_rank"] == m["effective_rank"] and "nmi" not in doc["models"]["a"]
    assert len(str(csv.data).splitlines()) == len(rows) + 1
    assert not any(isinstance(r["value"], float) and math.isnan(r["value"]) for r in rows)
