"""Patch features and the frequency lab.

Per chosen model, at the shared block (the output of block K): the patch tokens' top 3 principal components as
RGB, fitted on the shown image (``GET /images/{id}/pca``) or on every image shown (``POST /sets``, then
``GET /sets/{id}/pca``), optionally of the foreground patches only (``mask=true``), and the cosine
similarity of one patch's token to every patch (``GET /images/{id}/similarity``). The patch is the attention
panel's query, or a click on any map here.
The frequency lab makes a low-passed, high-passed or band-noised copy of the image
(``POST /images/{id}/perturb``), adds it to the images and shows it: every panel then reads the new image.
Under the form, "what moved" draws each model's curves of the copy minus those of its source
(``GET /metrics`` of both) and names the largest move of each curve.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from plotly.subplots import make_subplots

from app.api_client import ApiClient, ApiError
from app.auth import client_address
from app.components.common import (
    IMG_STORE,
    MDL_CATALOG,
    MDL_STORE,
    META_STORE,
    QUERY_STORE,
    aria,
    error_list,
    loading,
    radio_group,
)
from app.components.images import _add
from app.context import AppContext
from app.figures.moves import Move, changes_of, largest_moves, moves_figure
from app.figures.style import base_layout, graph_config, model_colours
from app.state import Query, clean_images, clean_models, clean_name, image_id

DEFAULT_SIDE, MIN_SIDE, MAX_SIDE = 224, 16, 1024  # the API's default and range (backend.perturb)
KIND_LABELS = {"low_pass": "Low-pass", "high_pass": "High-pass", "band_noise": "Band noise"}
EMPTY = {"data": [], "layout": {"height": 60}}
MASK_OPTION = "foreground"
CENTRE_OPTION = "centred"
FIT_LABELS = {"image": "this image", "set": "the whole set"}


def layout(ctx_: AppContext) -> html.Section:
    return html.Section(
        [
            html.Div([html.H2("Patch features", id="lab-heading")], className="panel-head"),
            html.P(
                "Each model's patch tokens at the chosen block: their top 3 principal components as colour "
                "(fitted on this image, or on every shown image at once: one colour code for the set), and "
                "how similar every patch's token is to the chosen patch (cosine, -1..1; of the raw tokens, "
                "or of the tokens minus the image's mean patch token, so that a direction every patch shares "
                "does not count). Click a patch here or in the attention maps. The foreground mask keeps the "
                "patches whose first-component score is above its mean (the side of its largest score) and "
                "fits the PCA on those only; the other patches are black.",
                className="hint",
            ),
            html.Div(
                [
                    radio_group("lab-fit", "Fit the PCA on", list(FIT_LABELS.items()), "image"),
                    dcc.Checklist(
                        id="lab-mask",
                        options=[{"label": "foreground mask (first component)", "value": MASK_OPTION}],
                        value=[],
                        inline=True,
                        className="radio",
                    ),
                    dcc.Checklist(
                        id="lab-centre",
                        options=[
                            {
                                "label": "similarity of centred tokens (minus the image's mean)",
                                "value": CENTRE_OPTION,
                            }
                        ],
                        value=[],
                        inline=True,
                        className="radio",
                    ),
                ],
                className="panel-tools-row",
            ),
            dcc.Store(id="lab-query", data=None),
            dcc.Store(id="lab-traces", data=None),
            html.Div(id="lab-msg"),
            loading(
                dcc.Graph(id="lab-pca", figure=EMPTY, config=graph_config("vitscope_patch_features_pca"))
            ),
            dcc.Graph(id="lab-sim", figure=EMPTY, config=graph_config("vitscope_patch_similarity")),
            html.Div(  # class mode makes no new images: the API would answer 403
                [
                    html.H3("Frequency lab"),
                    html.P(
                        "Make a perturbed copy of the image (resized to the shorter side the shown models "
                        "read, the smallest of them; frequencies in radians per pixel at that size, 0..π): "
                        "low-pass keeps what is below the frequency, high-pass removes it (the mean colour "
                        "stays), band noise adds ±eps sign noise filtered to a ring of half-width 0.2 around "
                        "it (as A8). The copy becomes the shown image, so every panel shows how the models "
                        "respond; under the form, each model's curves of the copy minus those of its source.",
                        className="hint",
                    ),
                    html.Div(
                        [
                            dcc.RadioItems(
                                id="lab-kind",
                                options=[{"label": v, "value": k} for k, v in KIND_LABELS.items()],
                                value="low_pass",
                                inline=True,
                            ),
                            html.Label(
                                [
                                    "Frequency ",
                                    dcc.Input(
                                        id="lab-freq", type="number", value=1.0, min=0, max=3.14159, step=0.05
                                    ),
                                ]
                            ),
                            html.Label(
                                [
                                    "eps ",
                                    dcc.Input(
                                        id="lab-eps", type="number", value=0.1, min=0.01, max=1, step=0.01
                                    ),
                                ]
                            ),
                            html.Button("Make the perturbed image", id="lab-make", n_clicks=0),
                        ],
                        className="lab-form",
                    ),
                    html.Div(id="lab-made", role="status", **aria(live="polite")),
                    dcc.Store(id="lab-pair", data=None),  # {"source", "perturbed", "name"} of the last copy
                    html.Div(id="lab-moves-msg"),
                    dcc.Graph(
                        id="lab-moves", figure=EMPTY, config=graph_config("vitscope_frequency_lab_moves")
                    ),
                ],
                hidden=ctx_.class_mode,
            ),
        ],
        className="panel",
        id="lab-panel",
        **aria(labelledby="lab-heading"),
    )


def lab_side(meta: dict[str, Any] | None) -> tuple[int, str | None]:
    """The shorter side to perturb at: the smallest the shown models resize to (so the frequencies are in
    their input's pixels; a 32 px model would average a 224 px image's high frequencies away), within the
    API's 16..1024; 224 without models. Also which model that is."""
    sides = {}
    for m, shape in ((meta or {}).get("models") or {}).items():
        side = shape.get("resize") or min(int(v) for v in shape.get("input_size") or [224])
        sides[m] = int(side)
    if not sides:
        return DEFAULT_SIDE, None
    model = min(sides, key=lambda m: sides[m])
    return min(max(MIN_SIDE, sides[model]), MAX_SIDE), model


def perturb_body(kind: str, freq: float | None, eps: float | None, side: int) -> dict[str, Any]:
    """The ``POST /perturb`` body of the form (the API checks the values and says what is allowed)."""
    if kind == "band_noise":
        return {"kind": kind, "side": side, "freq": freq, "eps": eps}
    return {"kind": kind, "side": side, "cutoff": freq}


def _grids(meta: dict[str, Any], models: list[str]) -> dict[str, tuple[int, int]]:
    shapes = meta.get("models", {})
    return {m: (int(shapes[m]["grid"][0]), int(shapes[m]["grid"][1])) for m in models if m in shapes}


def _layers(meta: dict[str, Any], models: list[str], layer: int | None) -> dict[str, int]:
    shapes = meta.get("models", {})
    return {m: min(max(1, int(layer or 1)), int(shapes[m]["layers"])) for m in models if m in shapes}


def image_pca(body: dict[str, Any], image: str) -> dict[str, Any]:
    """One image's part of a PCA answer: the image's own (``fit`` image) or its picture in the set's."""
    if body.get("fit") != "set":
        return body
    k = list(body["images"]).index(image)
    foreground = body.get("foreground")
    return {**body, "rgb": body["rgb"][k], "foreground": None if foreground is None else foreground[k]}


def fetch_pcas(
    client: ApiClient,
    image: str,
    layers: dict[str, int],
    fit: str,
    mask: bool,
    image_ids: list[str],
) -> list[dict[str, Any] | ApiError]:
    """Each model's PCA answer for ``image`` (in ``layers``' order), fitted on it or on the set of
    ``image_ids``; the foreground only with ``mask``."""
    if fit == "set" and image in image_ids:
        try:
            set_id = client.create_set(image_ids)
        except ApiError as exc:
            failed = ApiError(f"cannot make a set of the {len(image_ids)} images: {exc.message}")
            return [failed for _ in layers]
        found = client.parallel([partial(client.set_pca, set_id, m, n, mask) for m, n in layers.items()])
        return [p if isinstance(p, ApiError) else image_pca(p, image) for p in found]
    return client.parallel([partial(client.pca, image, m, n, mask) for m, n in layers.items()])


def pca_title(model: str, layer: int, body: dict[str, Any]) -> str:
    """A PCA picture's title (two lines): the model; the block, the variance its 3 components hold and with
    the mask the share of this image's patches kept."""
    share = sum(float(e) for e in body["explained"])
    title = f"{model}<br>block {layer} · 3 PCs: {share:.0%} of the variance"
    foreground = body.get("foreground")
    if foreground is not None:
        kept = [bool(v) for row in foreground for v in row]
        title += f" · foreground {sum(kept) / len(kept):.0%}"
    return title


def pca_subtitle(fit: str, mask: bool, num_images: int) -> str:
    """What the PCA pictures are fitted on, in words (the figure's title)."""
    on = f"the whole set ({num_images} images, one colour code)" if fit == "set" else "this image"
    if not mask:
        return f"PCA fitted on {on}"
    return (
        f"PCA fitted on the foreground patches of {on}: first-component score above its mean; "
        "the other patches black"
    )


def figures(
    client: ApiClient,
    meta: dict[str, Any],
    models: list[str],
    layer: int | None,
    query: Query,
    *,
    fit: str = "image",
    mask: bool = False,
    centred: bool = False,
    image_ids: list[str] | None = None,
) -> tuple[Any, Any, list[str], dict[str, list[str]]]:
    """The PCA and similarity figures, one column per model (the same order as ``models``), the errors,
    and whose each trace is (``{"pca": [model per trace], "sim": [...]}``, for the clicks). The PCA is
    fitted on the shown image or (``fit`` "set") on all of ``image_ids``, of the foreground with ``mask``; the
    similarity of the centred tokens with ``centred``."""
    image = meta["image"]
    grids = _grids(meta, models)
    layers = _layers(meta, models, layer)
    shown = [m for m in models if m in grids]
    owners: dict[str, list[str]] = {"pca": [], "sim": []}
    if not shown:
        return EMPTY, EMPTY, [], owners
    ids = list(image_ids or [image])
    pcas = fetch_pcas(client, image, {m: layers[m] for m in shown}, fit, mask, ids)
    sims: list[Any] = [None] * len(shown)
    if not query.is_cls:
        calls = [
            partial(client.similarity, image, m, layers[m], int(query.index(grids[m])), centred)
            for m in shown
        ]
        sims = client.parallel(calls)
    errors: list[str] = []
    titles = []
    for m, p in zip(shown, pcas, strict=True):
        if isinstance(p, ApiError):
            errors.append(f"{m}: {p.message}")
            titles.append(m)
        else:
            titles.append(pca_title(m, layers[m], p))
    n = len(shown)
    pca_fig = make_subplots(rows=1, cols=n, subplot_titles=titles, horizontal_spacing=0.04)
    sim_titles = [sim_title(m, s) if isinstance(s, dict) else m for m, s in zip(shown, sims, strict=True)]
    sim_fig = make_subplots(rows=1, cols=n, subplot_titles=sim_titles)
    for i, (m, p, s) in enumerate(zip(shown, pcas, sims, strict=True), start=1):
        if not isinstance(p, ApiError):
            rgb = [[[round(255 * c) for c in px] for px in row] for row in p["rgb"]]
            owners["pca"].append(m)
            pca_fig.add_trace(
                go.Image(z=rgb, name=m, hovertemplate="row %{y}, col %{x}<extra></extra>"), 1, i
            )
        if isinstance(s, ApiError):
            errors.append(f"{m}: {s.message}")
        elif s is not None:
            owners["sim"].append(m)
            sim_fig.add_trace(
                go.Heatmap(
                    z=s["map"], zmin=-1, zmax=1, colorscale="RdBu_r", showscale=i == n, name=m,
                    hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>",
                ),
                1, i,
            )  # fmt: skip
            rc = query.patch(grids[m])
            if rc is not None:
                r, c = rc
                sim_fig.add_shape(
                    type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                    line={"color": "black", "width": 2}, row=1, col=i,
                )  # fmt: skip
        for fig in (pca_fig, sim_fig):
            fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i if i > 1 else ''}", row=1, col=i)
    for fig in (pca_fig, sim_fig):  # the page's fonts and transparent paper (the dark theme shows through)
        fig.update_layout(**base_layout(height=300, margin={"t": 40, "b": 10, "l": 10, "r": 10}))
    on = pca_subtitle("set" if fit == "set" and image in ids else "image", mask, len(ids))
    pca_fig.update_annotations(font_size=12)  # the pictures' titles
    sim_fig.update_annotations(font_size=12)  # the maps' two-line titles
    sim_fig.update_layout(margin={"t": 60})
    pca_fig.update_layout(
        height=350, margin={"t": 90}, title={"text": on, "x": 0.01, "font": {"size": 13}}, meta={"fit": on}
    )
    if query.is_cls:
        sim_fig = EMPTY
    return pca_fig, sim_fig, errors, owners


def clean_pair(pair: Any) -> tuple[str, str] | None:
    """The (source, copy) image ids of the lab's store, both well formed, else None (the store is the
    browser's)."""
    if not isinstance(pair, dict):
        return None
    source, copy = image_id(pair.get("source")), image_id(pair.get("perturbed"))
    return (source, copy) if source and copy else None


def moves_of(
    client: ApiClient,
    images: tuple[str, str],
    name: str,
    models: list[str],
    catalog: list[dict[str, Any]] | None,
) -> tuple[Any, list[Move], list[str]]:
    """The "what moved" figure of a perturbed copy against its source (``images``) for ``models``, its
    largest moves and the errors (a model that cannot be read on either image is named and left out)."""
    found = client.parallel([partial(client.metrics, i, m) for i in images for m in models])
    read: dict[str, dict[str, dict[str, Any]]] = {"source": {}, "copy": {}}
    errors: list[str] = []
    for side, bodies in (("source", found[: len(models)]), ("copy", found[len(models) :])):
        for model, body in zip(models, bodies, strict=True):
            if isinstance(body, ApiError):
                errors.append(f"{model} on the {side}: {body.message}")
            else:
                read[side][model] = body
    changes = changes_of(read["source"], read["copy"])
    if not changes:
        return EMPTY, [], errors
    families = {m["id"]: m.get("family", "other") for m in catalog or []}
    fig = moves_figure(
        changes,
        colours=model_colours(models, families),
        families=families,
        subtitle=f"{name} against its source image",
    )
    return fig, largest_moves(changes), errors


def move_sentence(move: Move) -> str:
    """One curve's largest move, in words, from the numbers drawn."""
    where = f"depth {move.depth}" if move.spec.depth_from_zero else f"block {move.depth}"
    unit = f" {move.spec.unit}" if move.spec.unit else ""
    return (
        f"{move.spec.title}: {move.model} moved the most, {move.change:+.3g}{unit} at {where} "
        "(perturbed minus source)."
    )


def sim_title(model: str, body: dict[str, Any]) -> str:
    """A similarity map's title (two lines): the model; raw or centred, and the mean cosine to the other
    patches (near 1: the map can tell few patches apart)."""
    values = [float(v) for row in body["map"] for v in row]
    query = int(body["query"])
    others = values[:query] + values[query + 1 :]
    mean = f" · mean to the other patches {sum(others) / len(others):.2f}" if others else ""
    kind = "centred tokens" if body.get("centred") else "raw tokens"
    return f"{model} · cosine to the chosen patch<br>{kind}{mean}"


def clicked_query(click: dict[str, Any] | None, meta: dict[str, Any], owners: list[str]) -> Query | None:
    """The patch a click on one of the maps names: the clicked trace's model (``owners[curveNumber]``), its
    row ``y`` and column ``x``."""
    if not click or not click.get("points"):
        return None
    point = click["points"][0]
    grids = _grids(meta, owners)
    try:
        model = owners[int(point["curveNumber"])]
        row, col = int(round(float(point["y"]))), int(round(float(point["x"])))
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    grid = grids.get(model)
    if grid is None:
        return None
    if not (0 <= row < grid[0] and 0 <= col < grid[1]):
        return None
    return Query.at_patch(row, col, grid)


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    @app.callback(
        Output("lab-query", "data"),
        Input(QUERY_STORE, "data"),
        Input("lab-pca", "clickData"),
        Input("lab-sim", "clickData"),
        State(META_STORE, "data"),
        State("lab-traces", "data"),
    )
    def choose(query: Any, pca_click: Any, sim_click: Any, meta: Any, traces: Any) -> Any:
        if ctx.triggered_id in ("lab-pca", "lab-sim"):
            which = "pca" if ctx.triggered_id == "lab-pca" else "sim"
            click = pca_click if which == "pca" else sim_click
            q = clicked_query(click, meta or {}, list((traces or {}).get(which) or []))
            if q is None:
                raise PreventUpdate
            return q.to_store()
        return Query.from_store(query).to_store()

    @app.callback(
        Output("lab-pca", "figure"),
        Output("lab-sim", "figure"),
        Output("lab-msg", "children"),
        Output("lab-traces", "data"),
        Input(META_STORE, "data"),
        Input("ctl-layer", "value"),
        Input("lab-query", "data"),
        Input("lab-fit", "value"),
        Input("lab-mask", "value"),
        Input("lab-centre", "value"),
        Input(IMG_STORE, "data"),  # the set the PCA may be fitted on
        State(MDL_STORE, "data"),
    )
    def draw(
        meta: Any, layer: Any, query: Any, fit: Any, mask: Any, centre: Any, images: Any, models: Any
    ) -> Any:
        chosen = clean_models(models)
        if not meta or not meta.get("image") or not chosen or meta.get("for") != chosen:
            empty = html.Div("Patch features appear once there is an image and a model.", className="hint")
            return EMPTY, EMPTY, empty, None
        q = Query.from_store(query)
        ids = clean_images(images)["ids"]
        pca_fig, sim_fig, errors, owners = figures(
            client,
            meta,
            chosen,
            layer,
            q,
            fit=str(fit),
            mask=MASK_OPTION in (mask or []),
            centred=CENTRE_OPTION in (centre or []),
            image_ids=ids,
        )
        hint = html.Div("Click a patch to see its similarity map.", className="hint") if q.is_cls else None
        return pca_fig, sim_fig, [hint, error_list(errors)], owners

    @app.callback(
        Output(IMG_STORE, "data", allow_duplicate=True),
        Output("lab-made", "children"),
        Output("lab-pair", "data"),
        Input("lab-make", "n_clicks"),
        State(IMG_STORE, "data"),
        State(META_STORE, "data"),
        State("lab-kind", "value"),
        State("lab-freq", "value"),
        State("lab-eps", "value"),
        prevent_initial_call=True,
    )
    def make(n: int | None, store: Any, meta: Any, kind: str, freq: Any, eps: Any) -> Any:
        if not n:
            raise PreventUpdate
        images = clean_images(store)
        source = images["active"]
        if not source:
            return no_update, html.Div("Add an image first.", className="error-text"), no_update
        side, reader = lab_side(meta)
        body = perturb_body(kind, freq, eps, side)
        try:
            record = client.perturb(source, body, client=client_address())
        except ApiError as exc:
            return no_update, html.Div(exc.message, className="error-text"), no_update
        base = images["names"].get(source, source[:8])
        label = KIND_LABELS.get(kind, kind).lower()
        detail = (
            f"eps {body['eps']:g} at {body['freq']:g}" if kind == "band_noise" else f"at {body['cutoff']:g}"
        )
        name = f"{base} · {label} {detail}"
        why = f", the shorter side {reader} reads" if reader else ""
        size = f"{record['width']}x{record['height']} px{why}"
        note = f"Made {name}: {size}, {float(record['clipped']):.1%} of the values clipped to 0..1."
        pair = {"source": source, "perturbed": record["id"], "name": name}
        return _add(images, record, name), html.Div(note), pair

    @app.callback(
        Output("lab-moves", "figure"),
        Output("lab-moves-msg", "children"),
        Input("lab-pair", "data"),
        Input(MDL_STORE, "data"),
        State(MDL_CATALOG, "data"),
    )
    def draw_moves(pair: Any, models: Any, catalog: Any) -> Any:
        chosen = clean_models(models)
        images = clean_pair(pair)
        if images is None or not chosen:
            return EMPTY, None
        name = clean_name(pair.get("name")) or images[1][:8]
        fig, moves, errors = moves_of(client, images, name, chosen, catalog)
        said = [html.P(move_sentence(m)) for m in moves]
        return fig, [*said, error_list(errors)]
