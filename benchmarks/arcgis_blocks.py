"""ArcGIS Pro's raster function: network passes, time and agreement with ``geounet classify``.

ArcGIS Pro's *Classify Pixels Using Deep Learning* hands the ``.dlpk``'s raster function
(:mod:`geounet.app.arcgis`) the raster block by block, each block padded on every side with
``padding`` pixels of real neighbouring imagery (NoData, mask 0, beyond the raster's edge), and
keeps the block's core of the answer. This script drives the packaged function that way over a
whole image, beside ``geounet classify`` of the same image, and beside the scheme of the code
before (each padded block classified by ``predict_array`` with an overlap of twice the padding,
its own mirrored halo and blending: output equal to ``classify`` inside the scene, at up to four
network passes per block). Per scheme it prints the network passes, the seconds, the share of
valid pixels whose class agrees with ``classify`` (overall and within 8 px of the block
edges), and the building IoU against ``classify``'s buildings. The last line is a JSON object.

Usage::

    python benchmarks/arcgis_blocks.py --model MODEL_DIR --image scene.tif
    python benchmarks/arcgis_blocks.py --model MODEL_DIR --image scene.tif --tile 512 --overlap 64
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from _common import emit, parser

from geounet.app.classifier import UnetClassifier
from geounet.app.export import export_model
from geounet.inference.classify import predict_array
from geounet.inference.options import ClassifyOptions

EDGE = 8  #: pixels on each side of a block edge counted as "near the block edges"


def load_function(dlpk: Path, work: Path) -> Any:
    """The packaged raster function, initialised as ArcGIS Pro does (on the CPU)."""
    with zipfile.ZipFile(dlpk) as zf:
        zf.extractall(work)
    spec = importlib.util.spec_from_file_location(
        "GeounetClassifier", work / "GeounetClassifier.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    fn = module.GeounetClassifier()
    fn.initialize(model=str(next(work.glob("*.emd"))), device=-1)
    params = fn.getParameterInfo()
    fn.config = fn.getConfiguration(**{p["name"]: p["value"] for p in params if "value" in p})
    fn.updateRasterInfo(output_info={})
    return fn


def padded_block(
    pixels: np.ndarray, valid: np.ndarray, r0: int, c0: int, inner: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """The block at ``(r0, c0)`` with ``pad`` pixels around it, NoData beyond the raster."""
    _, h, w = pixels.shape
    side_r, side_c = min(inner, h - r0) + 2 * pad, min(inner, w - c0) + 2 * pad
    block = np.zeros((pixels.shape[0], side_r, side_c), pixels.dtype)
    mask = np.zeros((side_r, side_c), bool)
    a, b = max(r0 - pad, 0), min(r0 + inner + pad, h)
    c, d = max(c0 - pad, 0), min(c0 + inner + pad, w)
    ra, ca = a - (r0 - pad), c - (c0 - pad)
    block[:, ra : ra + b - a, ca : ca + d - c] = pixels[:, a:b, c:d]
    mask[ra : ra + b - a, ca : ca + d - c] = valid[a:b, c:d]
    return block, mask


def run_blocks(
    classify_block: Callable[[np.ndarray, np.ndarray], np.ndarray],
    pixels: np.ndarray,
    valid: np.ndarray,
    inner: int,
    pad: int,
) -> np.ndarray:
    """The class raster ArcGIS assembles from the cores of the padded blocks."""
    _, h, w = pixels.shape
    out = np.full((h, w), 255, np.uint8)
    for r0 in range(0, h, inner):
        for c0 in range(0, w, inner):
            block, mask = padded_block(pixels, valid, r0, c0, inner, pad)
            core = classify_block(block, mask)
            out[r0 : r0 + core.shape[0], c0 : c0 + core.shape[1]] = core
    return out


def count_passes(model: Any) -> list[int]:
    """Count the tiles the network runs on (a batch of n tiles counts n) from now on."""
    calls = [0]

    def hook(_module: Any, inputs: tuple[Any, ...]) -> None:
        calls[0] += int(inputs[0].shape[0])

    model.network.register_forward_pre_hook(hook)
    return calls


def scores(got: np.ndarray, want: np.ndarray, inner: int, building: int) -> dict[str, Any]:
    """Agreement with classify (overall and near block edges) and building IoU against it."""
    ok = (want != 255) & (got != 255)
    rows, cols = np.indices(want.shape)
    near = ((rows % inner < EDGE) | (rows % inner >= inner - EDGE)) & (rows >= EDGE)
    near |= ((cols % inner < EDGE) | (cols % inner >= inner - EDGE)) & (cols >= EDGE)
    same = got == want
    a, b = got == building, want == building
    union = int((ok & (a | b)).sum())
    return {
        "agreement": round(float(same[ok].mean()), 5),
        "agreement_near_block_edges": round(float(same[ok & near].mean()), 5),
        "agreement_elsewhere": round(float(same[ok & ~near].mean()), 5),
        "building_iou_vs_classify": round(int((ok & a & b).sum()) / union, 4) if union else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Drive both schemes over the image; print a table and a JSON line."""
    ap = parser(__doc__)
    ap.add_argument("--model", type=Path, required=True, help="a model folder")
    ap.add_argument("--image", type=Path, required=True, help="an image of the model's kind")
    ap.add_argument("--tile", type=int, default=512, help="export tile size (default 512)")
    ap.add_argument("--overlap", type=int, default=64, help="export overlap (default 64)")
    args = ap.parse_args(argv)

    model = UnetClassifier.from_model(args.model, device="cpu")
    names = model.config.class_names
    building = names.index("building") if "building" in names else len(names) - 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fn = load_function(
            export_model(
                args.model, "dlpk", work / "m.dlpk", tile_size=args.tile, overlap=args.overlap
            ),
            work / "pkg",
        )
        t0 = time.perf_counter()
        classified = model.classify(
            args.image, work / "c.tif", tile_size=args.tile, overlap=args.overlap, progress=False
        )
        classify_s = time.perf_counter() - t0
        with rasterio.open(classified) as src:
            want = src.read(1)
        with rasterio.open(args.image) as src:
            bands = [b + 1 for b in fn.config["extractBands"]]
            pixels, valid = src.read(bands), src.dataset_mask() > 0
        calls = count_passes(fn._load())  # loaded while the package's folder exists
    figures: dict[str, Any] = {"image": str(args.image), "size": list(want.shape)}
    pad, inner = fn.config["padding"], fn.config["tx"]
    figures["classify"] = {"seconds": round(classify_s, 2)}

    def packaged(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = fn.updatePixels((0, 0), block.shape, {}, raster_pixels=block, raster_mask=mask)
        return out["output_pixels"][0]

    old_pad, old_inner = args.overlap // 2, args.tile - args.overlap

    def before(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
        opts = ClassifyOptions(
            tile_size=args.tile, overlap=2 * old_pad, batch_size=1, progress=False
        )
        classes, _ = predict_array(fn.model, block, opts, valid=mask)
        h, w = classes.shape
        return classes[old_pad : h - old_pad, old_pad : w - old_pad]

    for name, func, p, n in (
        ("before: blended inside each block", before, old_pad, old_inner),
        ("now: one pass per block", packaged, pad, inner),
    ):
        calls[0] = 0
        t0 = time.perf_counter()
        got = run_blocks(func, pixels, valid, n, p)
        seconds = time.perf_counter() - t0
        blocks = -(-want.shape[0] // n) * -(-want.shape[1] // n)
        figures[name] = {
            "block": n,
            "padding": p,
            "blocks": blocks,
            "network_passes": calls[0],
            "passes_per_block": round(calls[0] / blocks, 2),
            "seconds": round(seconds, 2),
            **scores(got, want, n, building),
        }
    for key, value in figures.items():
        print(f"{key}: {json.dumps(value)}")
    emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
