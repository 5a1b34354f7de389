"""What the page exports: file names that say what a figure shows, each panel's numbers as JSON and CSV, and
one zip of every panel with a ``README.txt`` saying what each file is and how it was computed.

The figures themselves are drawn by Plotly in the browser (PNG and SVG come from there); everything else is
built here, so a panel's own JSON/CSV buttons and the zip write the same files.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from app.figures.tokens import token_points
from app.metrics import MODERN_KEYS, metrics_table, modern_table

PREFIX = "vitscope"


@dataclass(frozen=True)
class ExportFile:
    """One file of an export: where it goes, its bytes (or text), and one README paragraph about it."""

    path: str
    data: bytes | str
    about: str

    def bytes(self) -> bytes:
        return self.data.encode("utf-8") if isinstance(self.data, str) else self.data


# -- names ---------------------------------------------------------------------------------------------------


def slug(text: object) -> str:
    """A file-name-safe form of a model id or label: letters, digits, ``.``, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "x"


def head_label(head: object) -> str:
    h = str(head)
    if h == "mean":
        return "head-mean"
    if h == "all":
        return "all-heads"
    return f"head{h}"


def query_label(query: object, grid: tuple[int, int] | list[int] | None) -> str:
    """``cls`` -> ``query-cls``; a patch index on a ``grid`` -> ``query-r3c10`` (row, column, 0-based)."""
    if query is None or str(query) == "cls":
        return "query-cls"
    try:
        index = int(str(query))
    except ValueError:
        return f"query-{slug(query)}"
    if grid and int(grid[1]) > 0:
        r, c = divmod(index, int(grid[1]))
        return f"query-r{r}c{c}"
    return f"query-{index}"


def attention_name(
    model: str,
    layer: int,
    head: object,
    query: object,
    grid: tuple[int, int] | list[int] | None,
    rollout: bool = False,
) -> str:
    """``vitscope_<model>_block12_head-mean_query-r3c10`` (no extension): what one attention map shows;
    ``..._block12_rollout_query-cls`` for the rollout through block 12."""
    how = "rollout" if rollout else head_label(head)
    return "_".join([PREFIX, slug(model), f"block{int(layer)}", how, query_label(query, grid)])


def norms_name(model: str, layer: int) -> str:
    """``vitscope_<model>_block12_token-norms``: a token-norm map (the output of block 12)."""
    return "_".join([PREFIX, slug(model), f"block{int(layer)}", "token-norms"])


def figure_name(meta: dict[str, Any] | None, fallback: str) -> str:
    """The file name (no extension) of a drawn figure: its ``layout.meta.filename`` (``app.figures`` writes
    it; the page's script keeps an attention map's current when it draws a clicked query), else
    ``fallback``."""
    return slug((meta or {}).get("filename") or f"{PREFIX}_{fallback}")


def curves_name(scope: str, num_images: int) -> str:
    what = f"set-of-{num_images}-images" if scope == "set" and num_images > 1 else "one-image"
    return f"{PREFIX}_curves_{what}"


def modern_name(scope: str, num_images: int) -> str:
    return curves_name(scope, num_images).replace("_curves_", "_beyond-the-paper_")


def spectrum_name(state: str, layer: int) -> str:
    return f"{PREFIX}_spectrum_{slug(state)}_block{int(layer)}"


def spectrum_delta_name(state: str, layer: int) -> str:
    return f"{PREFIX}_spectrum-delta_{slug(state)}_block{int(layer)}"


def tokens_name(method: str, layer: int) -> str:
    return f"{PREFIX}_tokens_{slug(method)}_block{int(layer)}"


def singular_values_name(layer: int) -> str:
    return f"{PREFIX}_singular-values_block{int(layer)}"


# -- numbers of each panel -----------------------------------------------------------------------------------


def _csv(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _json(doc: Any) -> str:
    return json.dumps(doc, indent=1, allow_nan=True)


CURVES_ABOUT = (
    "Per-layer metrics of each model as the API's metrics object (the same as `vitscope analyze`'s "
    "metrics.json): mean attention distance (A2, pixels of the model input, and relative to the same grid's "
    "uniform attention), NMI between query and key (A3), attention entropy, and the delta log amplitude of "
    "the block outputs (A4, depth 0 = the embedding). Each is computed per image and head first, then "
    "averaged over images, then over heads; for a set, std is the standard deviation over images."
)


def curves_files(
    per_model: dict[str, dict[str, Any]], *, scope: str, subtitle: str, images: list[str], errors: list[str]
) -> list[ExportFile]:
    name = curves_name(scope, len(images))
    doc = {"scope": subtitle, "images": images, "models": per_model, "errors": errors}
    rows = metrics_table(per_model)
    header = ["model", "metric", "depth", "head", "value", "std"]
    return [
        ExportFile(f"{name}.json", _json(doc), CURVES_ABOUT + f" ({subtitle})"),
        ExportFile(
            f"{name}.csv",
            _csv(header, ([r[k] for k in header] for r in rows)),
            "The same curves in long form: one row per model, metric, depth and head ('mean' = the mean "
            "over heads, with its std over images).",
        ),
    ]


MODERN_ABOUT = (
    "The per-layer analyses beyond the paper of each model, as the API's metrics object holds them "
    "(docs/MODERN.md): token norms of the patch tokens (mean, 99th percentile, max) and the share above "
    "4 x the image's median norm, effective rank (RankMe) of the patch tokens, head diversity (mean "
    "Jensen-Shannon divergence between heads' patch attention), CLS selectivity (entropy of the CLS row "
    "over the patches / log Np) and CLS self-attention, positional share (sets of 2+ images), movement "
    "coherence (A6) and the delta log amplitude of the block outputs (x_out, depth 0 = the embedding) and "
    "after attention (x_attn, blocks 1..L). null: the model has no CLS token, one head, or the curves are "
    "for one image."
)


def modern_files(
    per_model: dict[str, dict[str, Any]], *, scope: str, subtitle: str, images: list[str], errors: list[str]
) -> list[ExportFile]:
    name = modern_name(scope, len(images))
    kept = ("model", "family", "layers", "heads", "grid", "patch_size", "num_images", *MODERN_KEYS)
    models = {m: {k: metrics.get(k) for k in kept} for m, metrics in per_model.items()}
    doc = {"scope": subtitle, "images": images, "models": models, "errors": errors}
    rows = modern_table(per_model)
    header = ["model", "metric", "depth", "head", "value", "std"]
    return [
        ExportFile(f"{name}.json", _json(doc), MODERN_ABOUT + f" ({subtitle})"),
        ExportFile(
            f"{name}.csv",
            _csv(header, ([r[k] for k in header] for r in rows)),
            "The same curves in long form: one row per model, metric, depth and head ('mean' = the mean "
            "over heads, with its std over images); metric token_norm.<statistic> for the token norms.",
        ),
    ]


SPECTRUM_ABOUT = (
    "The 2D log-amplitude spectrum of each model's patch tokens (A4 step 5): tokens reshaped to the patch "
    "grid, FFT over the two grid axes per image and channel, log(|F| + 1e-6) taken before averaging over "
    "channels, shifted so that zero frequency is at the centre. Row/col are grid indices; frequency index "
    "k - H//2 is that many cycles per image. Along the half-diagonal (A4 steps 6-7) delta[m] = map(m, m) - "
    "map(0, 0) in cycles from the centre, m = 0 .. (H + 1)//2 - 1, at frequencies[m] (row, column) radians "
    "per patch; high_frequency_delta is the last bin, the value the delta log amplitude depth curve plots. "
    "In the CSV, half_diagonal_bin and delta are filled on the half-diagonal's cells only."
)


def spectrum_files(
    answers: dict[str, dict[str, Any]],
    *,
    depths: dict[str, int],
    state: str,
    layer: int,
    image: str,
    errors: list[str],
) -> list[ExportFile]:
    """``answers``: the API's spectrum answer per model (``map``, ``delta``, ``high_frequency_delta``)."""
    name = spectrum_name(state, layer)
    doc = {
        "image": image,
        "state": state,
        "depths": depths,
        "spectra": answers,
        "errors": errors,
        "note": "map: centred (fftshift) log amplitude averaged over channels, rows = y frequency; "
        "delta[m] = map(m, m) - map(0, 0) along the half-diagonal, at frequencies[m] (row, column) radians "
        "per patch; high_frequency_delta = its last bin",
    }

    def rows() -> Iterable[list[Any]]:
        for m, a in answers.items():
            z, delta = a["map"], a.get("delta") or []
            h, w = len(z), len(z[0]) if z else 0
            for r, row in enumerate(z):
                for c, v in enumerate(row):
                    cy, cx = r - h // 2, c - w // 2
                    on_diagonal = cy == cx and 0 <= cx < len(
                        delta
                    )  # delta[m] is the cell (m, m) from the centre
                    bin_, d = (cx, delta[cx]) if on_diagonal else ("", "")
                    yield [m, state, depths.get(m, layer), r, c, cy, cx, v, bin_, d]

    header = ["model", "state", "depth", "row", "col", "cycles_y", "cycles_x", "log_amplitude"]
    header += ["half_diagonal_bin", "delta"]
    return [
        ExportFile(f"{name}.json", _json(doc), SPECTRUM_ABOUT + f" Image {image}, state {state}."),
        ExportFile(f"{name}.csv", _csv(header, rows()), "The same spectra, one row per grid cell."),
    ]


TOKENS_ABOUT = (
    "2D projections of the raw patch tokens (prefix dropped, no normalization) of the output of the chosen "
    "block of every image in the set (A5): PCA (deterministic) or t-SNE (perplexity 20, seed 0). "
    "token_index is the patch's row-major index on the model's grid (row = token_index // W, col = "
    "token_index % W); image_index the image's place in the set. The JSON also holds, per model, the "
    "singular values of each image's raw (not centred) patch-token matrix at that block, each divided by "
    "its largest (singular_values_normalized, descending), their mean over the images (singular_values_mean, "
    "the drawn curve) and each image's raw largest (singular_values_largest)."
)


def tokens_files(
    per_model: dict[str, dict[str, Any]],
    *,
    layers: dict[str, int],
    layer: int,
    method: str,
    image_ids: list[str],
    errors: list[str],
) -> list[ExportFile]:
    name = tokens_name(method, layer)
    doc = {"images": image_ids, "method": method, "layers": layers, "embeddings": per_model, "errors": errors}

    def rows() -> Iterable[list[Any]]:
        for m, body in per_model.items():
            w = int((body.get("grid") or [0, 0])[1]) or 1
            for k, t, x, y in token_points(body):
                image = image_ids[k] if k < len(image_ids) else ""
                yield [m, layers.get(m, layer), method, k, image, t, t // w, t % w, x, y]

    header = ["model", "layer", "method", "image_index", "image", "token_index", "row", "col", "x", "y"]
    return [
        ExportFile(f"{name}.json", _json(doc), TOKENS_ABOUT),
        ExportFile(f"{name}.csv", _csv(header, rows()), "The same points, one row per token."),
    ]


ATTENTION_ABOUT = (
    "The attention of one query over the patches (A1): the query's row of the softmax attention "
    "probabilities of that block, prefix tokens dropped, renormalized to sum 1, reshaped to the patch grid "
    "(row-major); 'head-mean' is the mean over heads. Where rollout is true, the map is instead the query's "
    "row of the attention rollout through that block (Abnar & Zuidema 2020: per block the heads' mean plus "
    "the identity, rows renormalized, multiplied over blocks 1..layer), prefix dropped and renormalized the "
    "same way; its head is the mean. A patch at (row, col) covers pixels [row*P, (row+1)*P) x "
    "[col*P, (col+1)*P) of the model input."
)


def attention_files(maps: list[dict[str, Any]]) -> list[ExportFile]:
    """``maps``: the API's attention answers (``image, model, grid, patch_size, layer, head, query, map``)."""
    if not maps:
        return []

    def rows() -> Iterable[list[Any]]:
        for a in maps:
            rollout = a.get("rollout") is True
            for r, row in enumerate(a["map"]):
                for c, v in enumerate(row):
                    yield [a["model"], a["image"], a["layer"], a["head"], a["query"], rollout, r, c, v]

    header = ["model", "image", "layer", "head", "query", "rollout", "row", "col", "attention"]
    return [
        ExportFile(f"{PREFIX}_attention.json", _json({"maps": maps}), ATTENTION_ABOUT),
        ExportFile(f"{PREFIX}_attention.csv", _csv(header, rows()), "The same maps, one row per patch."),
    ]


CLAIMS_ABOUT = (
    "The paper's claims checked on the selected models (GET /api/v1/claims, the strip 'Does it reproduce the "
    "paper?'): later-half attention distance CL > MIM, later-half NMI CL < MIM, delta log amplitude MIM > CL "
    "over depths 1..L, the hybrid's later-half distance between CL's and MIM's; each decided on the means "
    "over the images (held) and on every image (images_held of images). Distances in px when every model "
    "shares grid and patch size, else relative to the uniform-attention distance."
)


def claims_files(report: dict[str, Any]) -> list[ExportFile]:
    """The API's claims report as JSON, and one CSV row per claim and role."""

    def rows() -> Iterable[list[Any]]:
        for c in report.get("claims", []):
            for role, value in c.get("values", {}).items():
                yield [c["id"], c["held"], role, c["models"].get(role, ""), value, c["unit"], c["where"],
                       c["images_held"], c["images"]]  # fmt: skip

    header = ["claim", "held", "role", "model", "value", "unit", "where", "images_held", "images"]
    return [
        ExportFile(f"{PREFIX}_claims.json", _json(report), CLAIMS_ABOUT),
        ExportFile(
            f"{PREFIX}_claims.csv", _csv(header, rows()), "The same claims, one row per claim and role."
        ),
    ]


# -- figures from the browser ----------------------------------------------------------------------------


FIGURE_ABOUT = "drawn by Plotly in the browser exactly as shown on the page"


def decode_data_url(url: str) -> bytes:
    """The bytes of a ``data:`` URL as Plotly's ``toImage`` returns it (base64 PNG, URL-encoded SVG)."""
    head, sep, body = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise ValueError("not a data: URL")
    return base64.b64decode(body) if head.endswith(";base64") else unquote(body).encode("utf-8")


def figure_files(figures: list[dict[str, Any]]) -> list[ExportFile]:
    """``figures``: ``{"name", "title", "meta", "png", "svg"}`` per drawn figure (data URLs; the title as
    Plotly draws it, HTML stripped here); names made unique."""
    out: list[ExportFile] = []
    seen: dict[str, int] = {}
    for fig in figures:
        base = slug(fig.get("name") or "figure")
        n = seen.get(base, 0)
        seen[base] = n + 1
        name = base if n == 0 else f"{base}-{n + 1}"
        title = re.sub(r"<[^>]+>", "", str(fig.get("title") or name)).replace("●", "").strip()
        meta = fig.get("meta") or {}
        if all(k in meta for k in ("model", "layer", "head", "query")):
            head = "mean of heads" if str(meta["head"]) == "mean" else f"head {meta['head']}"
            where = query_label(meta["query"], meta.get("grid")).removeprefix("query-")
            what = (
                f"the attention rollout of query {where} through block {meta['layer']}, heads fused by mean"
                if meta.get("rollout") is True
                else f"A1: attention of query {where} in block {meta['layer']}, {head}"
            )
            title += (
                f" ({what}; cls = the CLS token, rRcC = the patch in row R, column C; numbers in "
                f"{PREFIX}_attention.csv)"
            )
        for fmt in ("png", "svg"):
            url = fig.get(fmt)
            if isinstance(url, str) and url:
                out.append(
                    ExportFile(f"figures/{name}.{fmt}", decode_data_url(url), f"{title}: {FIGURE_ABOUT}.")
                )
    return out


# -- the zip -----------------------------------------------------------------------------------------------


def readme(files: list[ExportFile], context: dict[str, Any]) -> str:
    """``README.txt``: what the export shows (``context``: images, models, layer, ...) and every file."""
    lines = [
        "vitscope export",
        "===============",
        "",
        "Analyses of self-supervised Vision Transformers following Park et al., 'What Do Self-Supervised",
        "Vision Transformers Learn?' (ICLR 2023). Definitions: the project's ANALYSES.md (A1-A5).",
        "",
    ]
    for key, value in context.items():
        shown = ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
        lines.append(f"{key}: {shown}")
    lines += ["", "Files", "-----", ""]
    for f in files:
        lines.append(f.path)
        lines.append("    " + f.about)
        lines.append("")
    return "\n".join(lines)


def build_zip(files: list[ExportFile], context: dict[str, Any], *, at: datetime | None = None) -> bytes:
    """A zip of ``files`` under ``numbers/`` or ``figures/`` with ``README.txt`` first."""
    stamp = (at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    context = {"exported": stamp, **context}
    placed = [
        f if f.path.startswith("figures/") else ExportFile(f"numbers/{f.path}", f.data, f.about)
        for f in files
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("README.txt", readme(placed, context))
        for f in placed:
            zf.writestr(f.path, f.bytes())
    return buf.getvalue()
