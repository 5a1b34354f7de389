"""The page's sentences about the selected models, from constructed numbers: held and not held both said.

The reports are made by the API's own ``backend.analysis.claims`` from constructed per-image values, so the UI
reads exactly the shape the API sends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.claims import (
    attention_sentence,
    claim_line,
    roles,
    spectrum_sentence,
    what_models_show,
    why_different,
)
from backend.analysis.claims import ModelValues, claims_report, evaluate_claims


def values(model: str, family: str, distance: float, nmi: float, delta: float, images: int = 4,
           grid: tuple[int, int] = (8, 8), patch: int = 4) -> ModelValues:  # fmt: skip
    """12 blocks; image i gets distance + i (so per-image checks can differ from the mean's)."""
    ramp = np.arange(images, dtype=np.float64)
    return ModelValues(
        model=model,
        family=family,
        grid=grid,
        patch_size=patch,
        distance=np.full((12, images), distance) + ramp,
        nmi=np.full((12, images), nmi),
        delta=np.full((13, images), delta),
    )


def report(cl: ModelValues, mim: ModelValues, hybrid: ModelValues | None = None) -> dict[str, Any]:
    return claims_report(evaluate_claims(cl, mim, hybrid))


def test_strip_lines_say_held_or_not_with_the_numbers() -> None:
    # CL wide and collapsed, MIM local: distance and NMI held; MIM's delta below CL's: fourier not held
    r = report(values("c", "cl", 15.0, 0.02, -2.4), values("m", "mim", 10.0, 0.3, -3.2))
    lines = {c["id"]: claim_line(c) for c in r["claims"]}
    assert lines["distance"].verdict == "held" and lines["fourier"].verdict == "not held"
    assert lines["distance"].numbers == (
        "mean attention distance, blocks 7-12: CL (c) 16.5 px, MIM (m) 11.5 px"
    ), "set means of 15 + (0..3) and 10 + (0..3)"
    assert lines["nmi"].numbers.endswith("CL (c) 0.020, MIM (m) 0.300")
    assert lines["distance"].images == "holds on 4 of 4 images"
    one = report(values("c", "cl", 15.0, 0.02, -2.4, images=1), values("m", "mim", 10.0, 0.3, -3.2, images=1))
    assert claim_line(one["claims"][0]).images is None, "one image: no 'k of n'"


def test_per_image_counts_differ_from_the_mean() -> None:
    # per image CL (10, 11, 12, 13) against a flat MIM 11.2: above it on 2 of 4, the mean 11.5 above too
    cl = values("c", "cl", 10.0, 0.02, -2.4)
    mim = ModelValues(
        "m", "mim", (8, 8), 4, np.full((12, 4), 11.2), np.full((12, 4), 0.3), np.full((13, 4), -2)
    )
    line = claim_line(report(cl, mim)["claims"][0])
    assert line.verdict == "held" and line.images == "holds on 2 of 4 images", "mean 11.5 > 11.2"


def test_learn_sentences_follow_the_numbers() -> None:
    r = report(values("c", "cl", 15.0, 0.02, -2.4), values("m", "mim", 10.0, 0.3, -3.2))
    by_id = {c["id"]: what_models_show(c) for c in r["claims"]}
    assert by_id["distance"].startswith("Your models: c attends farther than m (")
    assert by_id["distance"].endswith("as in the paper.")
    assert by_id["fourier"].startswith("Your models: m does not keep more high-frequency content than c (")
    assert (
        by_id["fourier"].endswith("unlike the paper.") and "CL (c) -2.400, MIM (m) -3.200" in by_id["fourier"]
    )
    flipped = report(values("c", "cl", 5.0, 0.5, -3.2), values("m", "mim", 10.0, 0.3, -2.4))
    texts = [what_models_show(c) for c in flipped["claims"]]
    assert texts[0].startswith("Your models: c does not attend farther than m") and "unlike" in texts[0]
    assert "does not depend less on the query" in texts[1]
    assert (
        texts[2].startswith("Your models: m keeps more high-frequency content than c") and "as in" in texts[2]
    )


def test_hybrid_between_and_the_relative_scale() -> None:
    big_mim = values("m", "mim", 40.0, 0.3, -2.0, grid=(14, 14), patch=16)  # 116.49 px uniform
    r = report(values("c", "cl", 15.0, 0.02, -2.4), big_mim, values("h", "hybrid", 12.0, 0.1, -2.9))
    assert r["distance_scale"] == "relative", "8 x 8 and 14 x 14: compared relative to uniform"
    lines = {c["id"]: claim_line(c) for c in r["claims"]}
    assert "(relative to uniform)" in lines["distance"].numbers and "× uniform" in lines["distance"].numbers
    hybrid = what_models_show(next(c for c in r["claims"] if c["id"] == "hybrid"))
    assert hybrid.startswith("Your models: h's attention distance lies between c's and m's")


def test_why_different_only_where_a_claim_is_not_held() -> None:
    shapes = {
        "c": {"input_size": [32, 32], "grid": [8, 8]},
        "m": {"input_size": [32, 32], "grid": [8, 8]},
    }
    descriptions = {"c": "ViT trained by vitscope with MoCo v3 on cifar10/train for 21.0 epochs."}
    not_held = report(values("c", "cl", 15.0, 0.02, -2.4), values("m", "mim", 10.0, 0.3, -3.2))
    text = why_different(not_held, shapes, descriptions)
    assert text is not None
    assert "c: 32 × 32 px input, 8 × 8 grid (ViT trained by vitscope with MoCo v3" in text
    assert "21.0 epochs)" in text and "m: 32 × 32 px input, 8 × 8 grid;" not in text
    assert "Small models on 32 px images with short training" in text
    held = report(values("c", "cl", 15.0, 0.02, -2.0), values("m", "mim", 10.0, 0.3, -1.0))
    assert all(c["held"] for c in held["claims"]) and why_different(held, shapes, descriptions) is None
    large = {m: {"input_size": [224, 224], "grid": [14, 14]} for m in shapes}
    text = why_different(not_held, large, {})
    assert text is not None and "Small models" not in text, "a 224 px model is not called small"


def test_roles_and_the_spectrum_sentence() -> None:
    fams = {"a": "mim", "b": "cl", "c": "cl", "d": "hybrid", "e": "baseline"}
    assert roles(["e", "a", "b", "c", "d"], fams) == {"mim": "a", "cl": "b", "hybrid": "d"}
    assert roles(["a", "e"], fams) is None, "no CL model: nothing to check"
    answers = {"a": {"high_frequency_delta": -3.25}, "b": {"high_frequency_delta": -2.29}, "e": {}}
    text = spectrum_sentence(answers, fams, {"a": 8, "b": 8})
    assert text is not None
    assert text.startswith(
        "On this image, Δ log amplitude at the marked bin: b (depth 8) -2.29, a (depth 8) -3.25."
    )
    assert "a (MIM) keeps less high-frequency content than b (CL) here, unlike the paper" in text
    answers["a"]["high_frequency_delta"] = -1.0
    assert "as the paper found" in str(spectrum_sentence(answers, fams, {}))
    assert spectrum_sentence({"e": {}}, fams, {}) is None


def metrics(nmi: list[float], relative: list[float]) -> dict[str, Any]:
    return {"nmi": {"mean": nmi}, "attention_distance_relative": {"mean": relative}}


def test_attention_sentence_reads_the_shown_block() -> None:
    per_model = {
        "c": metrics([0.10, 0.02, 0.01, 0.01], [0.9, 0.95, 0.97, 0.99]),
        "m": metrics([0.50, 0.40, 0.30, 0.20], [0.3, 0.4, 0.5, 0.6]),
    }
    fams = {"c": "cl", "m": "mim"}
    late = attention_sentence(per_model, 4, fams)
    assert late == (
        "On this image: c (block 4): NMI 0.010, distance 0.99 × uniform; m (block 4): NMI 0.200, "
        "distance 0.60 × uniform. c's maps change least with the query here (lowest NMI). c (CL) is below "
        "m (MIM) in NMI here, a later block, where the paper finds CL below MIM."
    )
    per_model["c"]["nmi"]["mean"][0] = 0.9  # block 1: CL above MIM
    early = str(attention_sentence(per_model, 1, fams))
    assert "m's maps change least" in early and "c (CL) is not below m (MIM)" in early
    assert "an early block; the paper's claim is about later ones" in early
    assert "(block 2)" in str(attention_sentence({"s": metrics([0.1, 0.2], [0.5, 0.6])}, 9, {})), "clipped"
    assert attention_sentence({}, 3, fams) is None
