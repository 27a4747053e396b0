"""Scale-out on Dask (issue 16): a LocalCluster of 2 single-threaded worker processes.

Outputs must be bitwise identical to single-process classification, for many scenes (one task
per scene) and for one scene split into row bands; a worker killed mid-run changes nothing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

distributed = pytest.importorskip("distributed")

from geounet.app.classifier import UnetClassifier  # noqa: E402
from geounet.app.scale import band_ranges, classify_many, model_loads  # noqa: E402
from geounet.cli.main import cli  # noqa: E402
from geounet.core.errors import InvalidParameterError, OutputExistsError  # noqa: E402
from geounet.inference.classify import classify_with_options  # noqa: E402
from geounet.inference.options import ClassifyOptions, probabilities_path  # noqa: E402
from geounet.vectorizing.confidence import PROBABILITIES_TAG  # noqa: E402
from tests.model_fakes import make_fake_data, synthetic_scene  # noqa: E402

OPTS = ClassifyOptions(tile_size=64, overlap=16, engine="torch", progress=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    clf = UnetClassifier(make_fake_data(), backbone=None, base_channels=4, depth=2, seed=0)
    return clf.save(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def local_model(model_dir):
    return UnetClassifier.from_model(model_dir, device="cpu")


def cluster(**kw):
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=":0", **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def client():
    with cluster() as c, distributed.Client(c) as cl:
        yield cl


def scene_file(make_raster, name, h, w, seed):
    return make_raster(synthetic_scene(max(h, w), seed=seed)[0][:, :h, :w], name=name)


def single_process(model, scene, like, folder):
    """The scene classified on one machine, under the name of the Dask output ``like``."""
    ref = folder / f"ref_{like.parent.name}_{like.stem}"
    ref.mkdir()
    return classify_with_options(model, scene, ref / like.name, OPTS)


def assert_same_raster(a, b):
    """The same class raster, and the same probabilities beside it, named in the same tag."""
    _assert_same_file(a, b)
    with rasterio.open(a) as ra:
        x, tags = ra.read(), ra.tags()
    assert len(np.unique(x)) >= 2, "a one-class map would prove little"
    assert tags[PROBABILITIES_TAG] == probabilities_path(a).name
    _assert_same_file(probabilities_path(a), probabilities_path(b))


def _assert_same_file(a, b):
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        assert (ra.crs, ra.transform, ra.shape, ra.nodata, ra.count) == (
            rb.crs,
            rb.transform,
            rb.shape,
            rb.nodata,
            rb.count,
        )
        assert ra.tags() == rb.tags() and ra.descriptions == rb.descriptions
        if ra.count == 1:
            assert ra.colormap(1) == rb.colormap(1)
        x, y = ra.read(), rb.read()
        np.testing.assert_array_equal(ra.dataset_mask(), rb.dataset_mask())
    np.testing.assert_array_equal(x, y)


def test_many_scenes_one_task_each_equal_single_process(client, model_dir, local_model,
                                                        make_raster, tmp_path):  # fmt: skip
    scenes = [scene_file(make_raster, f"s{i}.tif", h, w, i)
              for i, (h, w) in enumerate([(200, 260), (150, 300), (256, 256)])]  # fmt: skip
    outs = classify_many(model_dir, scenes, tmp_path / "out", client=client, options=OPTS)
    assert [o.name for o in outs] == ["s0_classified.tif", "s1_classified.tif", "s2_classified.tif"]
    for scene, out in zip(scenes, outs):
        assert_same_raster(out, single_process(local_model, scene, out, tmp_path))
    loads = client.run(model_loads)
    assert sum(loads.values()) >= 1 and max(loads.values()) <= 1  # once per worker, not per task


def test_one_scene_in_row_bands_equals_single_process(client, model_dir, local_model,
                                                      make_raster, tmp_path):  # fmt: skip
    scene = scene_file(make_raster, "big.tif", 600, 300, 7)
    ranges = band_ranges(600, 70)
    assert len(ranges) == 9 and ranges[-1] == (560, 600)  # bands not aligned with tiles
    (out,) = classify_many(model_dir, [scene], tmp_path / "out", client=client, options=OPTS,
                           band_rows=70)  # fmt: skip
    assert_same_raster(out, single_process(local_model, scene, out, tmp_path))
    assert max(client.run(model_loads).values()) <= 1
    none = replace(OPTS, probabilities=False)
    (bare,) = classify_many(model_dir, [scene], tmp_path / "bare", client=client, options=none,
                            band_rows=70)  # fmt: skip
    assert sorted(p.name for p in bare.parent.iterdir()) == ["big_classified.tif"]
    with rasterio.open(bare) as src:
        assert PROBABILITIES_TAG not in src.tags()


def test_a_worker_killed_mid_run_changes_nothing(model_dir, local_model, make_raster, tmp_path):
    scene = scene_file(make_raster, "long.tif", 1024, 320, 3)
    with cluster() as c, distributed.Client(c) as cl:
        pids = cl.run(os.getpid)
        result, killed = {}, []

        def run():
            result["out"] = classify_many(model_dir, [scene], tmp_path / "out", client=cl,
                                          options=OPTS, band_rows=32)  # fmt: skip

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 120
        while not killed and thread.is_alive() and time.monotonic() < deadline:
            busy = [w for w, keys in cl.processing().items() if keys and w in pids]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])
            time.sleep(0.005)
        assert killed, "no worker was busy: the run ended before the kill"
        thread.join(300)
        assert not thread.is_alive()
        assert killed[0] not in cl.run(os.getpid).values()  # that process is gone
    out = result["out"][0]
    assert_same_raster(out, single_process(local_model, scene, out, tmp_path))


def test_cli_classifies_many_scenes_on_a_scheduler(client, model_dir, local_model, make_raster,
                                                   tmp_path):  # fmt: skip
    scenes = [scene_file(make_raster, f"c{i}.tif", 130, 170, 10 + i) for i in range(2)]
    args = ["classify", *map(str, scenes), "--model", str(model_dir), "--out-dir",
            str(tmp_path / "cli"), "--scheduler", client.scheduler.address,
            "--tile-size", "64", "--overlap", "16", "--engine", "torch"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "dashboard" in res.output
    for scene in scenes:
        out = tmp_path / "cli" / f"{scene.stem}_classified.tif"
        assert_same_raster(out, single_process(local_model, scene, out, tmp_path))
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "already exists" in again.output


def test_bad_runs_are_refused_before_any_work(model_dir, make_raster, tmp_path):
    a = scene_file(make_raster, "a.tif", 64, 64, 1)
    (tmp_path / "sub").mkdir()
    b = make_raster(np.zeros((3, 64, 64), np.uint8), name="sub/a.tif")
    with pytest.raises(InvalidParameterError, match="same name"):
        classify_many(model_dir, [a, b], tmp_path / "o")
    with pytest.raises(InvalidParameterError, match="probabilities"):
        classify_many(
            model_dir, [a], tmp_path / "o", options=ClassifyOptions(probabilities="p.tif")
        )
    with pytest.raises(InvalidParameterError, match="local path"):
        classify_many(model_dir, [a], "s3://bucket/out")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "a_classified.tif").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match=r"a_classified\.tif"):
        classify_many(model_dir, [a], tmp_path / "o")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a_classified_probabilities.tif").write_bytes(b"x")  # a stale sidecar
    with pytest.raises(OutputExistsError, match=r"a_classified_probabilities\.tif"):
        classify_many(model_dir, [a], tmp_path / "p")


def test_cli_workers_starts_a_local_cluster_for_one_scene(model_dir, local_model, make_raster,
                                                          tmp_path):  # fmt: skip
    scene = scene_file(make_raster, "w.tif", 150, 90, 4)
    args = ["classify", str(scene), "--model", str(model_dir), "--out-dir", str(tmp_path / "w"),
            "--workers", "1", "--tile-size", "64", "--overlap", "16",
            "--engine", "torch"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "dashboard: http" in res.output
    out = tmp_path / "w" / "w_classified.tif"
    assert_same_raster(out, single_process(local_model, scene, out, tmp_path))
    lone = CliRunner().invoke(cli, ["classify", str(scene), "--workers", "2", "--out",
                                    str(tmp_path / "x.tif")])  # fmt: skip
    assert lone.exit_code == 2 and "--out-dir" in lone.output


def test_remote_scenes_are_read_by_the_workers_over_http(client, model_dir, local_model,
                                                         make_raster, tmp_path):  # fmt: skip
    from tests.http_range_server import RangeServer

    scenes = [scene_file(make_raster, f"r{i}.tif", 140, 180, 20 + i) for i in range(2)]
    server = RangeServer(tmp_path, lifetime_s=120).start()
    try:
        urls = [server.url(s.name) for s in scenes]
        outs = classify_many(model_dir, urls, tmp_path / "remote", client=client, options=OPTS)
        assert all(server.requests[s.name] > 0 for s in scenes)  # the workers fetched them
    finally:
        server.stop()
    for scene, out in zip(scenes, outs):
        assert out.name == f"{scene.stem}_classified.tif"
        assert_same_raster(out, single_process(local_model, scene, out, tmp_path))
