"""`vitscope --help` and `vitscope models list` start without torch, timm or dash (issue 15), and the model
list names the architecture each model is really built with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.cli.models import arch_label

HEAVY = ("torch", "timm", "dash", "ray", "pyarrow")
# Runs one command in a fresh interpreter and prints which heavy modules it imported.
PROBE = f"""
import json, sys
import backend.cli
try:
    status = backend.cli.main(sys.argv[1:])
except SystemExit as exc:  # --help exits through argparse
    status = exc.code
print(json.dumps({{"status": status, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def run_probe(*argv: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["models", "list"], ["analyze", "--help"], ["serve", "--help"]])
def test_commands_that_compute_nothing_import_no_heavy_module(argv: list[str]) -> None:
    result = run_probe(*argv)
    assert result == {"status": 0, "loaded": []}


def test_help_lists_every_command_without_importing_their_modules() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import backend.cli; backend.cli.main(['--help'])"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for command in ("analyze", "models", "serve", "train", "probe"):
        assert f"    {command} " in done.stdout


def test_models_list_imports_torch_only_for_a_catalogue_that_needs_it(tmp_path: Path) -> None:
    # A cached hub repo makes the listing ask timm for the file names: the slow path stays correct.
    import os

    env = dict(os.environ, VITSCOPE_MODELS_CACHE=str(tmp_path))
    (tmp_path / "hub" / "models--timm--vit_base_patch16_224.mae").mkdir(parents=True)
    result = run_probe("models", "list", env=env)
    assert result["status"] == 0 and "timm" in result["loaded"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("arch", "kwargs", "label"),
    [
        ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}, "ViT-Tiny/4 at 32 px"),
        ("vit_tiny_patch16_224", {"pretrained_cfg_overlay": {"input_size": [3, 32, 32]}},
         "ViT-Tiny/16 at 32 px"),
        ("vit_base_patch16_224.mae", {}, "ViT-Base/16 at 224 px"),
        ("vit_small_patch14_dinov2.lvd142m", {"pretrained_cfg_overlay": {"input_size": (3, 224, 224)}},
         "ViT-Small/14 at 224 px"),
        ("vit_small_patch14_dinov2.lvd142m", {}, "ViT-Small/14"),  # timm's default size is not in the name
        ("beit_base_patch16_224", {"img_size": (224, 192)}, "ViT-Base/16 at 224x192 px"),
        ("vit_small_patch16_224", {"embed_dim": 32, "depth": 2}, "ViT/16 at 224 px (embed_dim 32, depth 2)"),
    ],
)  # fmt: skip
def test_arch_label_reads_the_overrides_before_the_timm_name(
    arch: str, kwargs: dict[str, object], label: str
) -> None:
    assert arch_label(arch, kwargs) == label


def test_models_list_shows_the_demo_models_as_built() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import backend.cli; backend.cli.main(['models', 'list'])"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "  ViT-Tiny/4 at 32 px  " in rows["cifar-mim-vit-t4"]
    assert "vit_tiny_patch16_224" not in done.stdout


def test_analyze_offers_the_preprocessing_modes_of_imaging() -> None:
    # analyze.py spells them out so that its --help does not import torch; they must stay the same.
    from backend.cli.analyze import PREPROCESSING_MODES
    from backend.imaging import PREPROCESSING_MODES as IMAGING_MODES

    assert PREPROCESSING_MODES == IMAGING_MODES
