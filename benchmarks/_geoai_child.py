"""geoai-py's ``semantic_segmentation`` on one scene: the ``geoai`` contender of ``peers.py``.

Run by ``peers.py`` with the Python of an environment that has geoai-py installed
(``--geoai-python``), never imported by geounet: geoai-py brings its own geospatial stack and
pins, so it lives in an environment of its own. Prints one JSON line: the seconds of
``semantic_segmentation`` (model load, tiled inference, writing) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("scene", help="the input GeoTIFF (already normalised, times 255)")
    p.add_argument("weights", help="the network's state dict (torch.save)")
    p.add_argument("out", help="the class raster to write")
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args(argv)

    import torch
    from geoai.train import semantic_segmentation

    t0 = time.perf_counter()
    semantic_segmentation(
        args.scene, args.out, args.weights, architecture="unet", encoder_name=args.encoder,
        num_channels=args.channels, num_classes=args.classes, window_size=args.tile,
        overlap=args.overlap, batch_size=args.batch, device=torch.device("cpu"), quiet=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    status = Path("/proc/self/status").read_text()  # VmHWM: this program's own peak
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
    import geoai

    engine = f"geoai-py {getattr(geoai, '__version__', '?')} eager"
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "engine": engine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
