"""`clipsearch crawl --engine ray`: the decode and embedding of new and changed photos on a
real (local, 2-CPU) Ray cluster, against a local crawl of the same folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray  # noqa: E402 - the test extra installs it

from clipsearch.config import load_settings
from clipsearch.errors import ClipsearchError
from clipsearch.library import Library

from .conftest import SHAPES_MODEL, clean_environment, run_cli
from .shapes import make_shape_folder, save_shape_photo


@pytest.fixture(scope="module")
def session_ray():
    """One local Ray of 2 CPUs for the module's crawls (a crawl uses a Ray that is running,
    and stops only one it started)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-photos")
    make_shape_folder(folder, 3, 808)  # 60 photos, JPEG and PNG
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return folder


def _library(home: Path, **settings) -> Library:
    return Library(load_settings(home, model=SHAPES_MODEL, device="cpu", workers=2, **settings))


def _vectors(library: Library, out: Path) -> dict[str, np.ndarray]:
    library.export_vectors(out)
    with np.load(out, allow_pickle=False) as data:
        return dict(zip(data["paths"].tolist(), data["vectors"]))


def test_a_ray_crawl_gives_the_rows_and_vectors_of_a_local_crawl(session_ray, photos, tmp_path):
    local = _library(tmp_path / "local")
    on_ray = _library(tmp_path / "ray", engine="ray")
    local_report = local.crawl([photos])
    ray_report = on_ray.crawl([photos])
    assert (ray_report.stats.embedded, ray_report.stats.failed) == (local_report.stats.embedded, 1) == (60, 1)
    assert [(e.path, e.error) for e in on_ray.errors()] == [(e.path, e.error) for e in local.errors()]
    mine, theirs = _vectors(on_ray, tmp_path / "ray.npz"), _vectors(local, tmp_path / "local.npz")
    assert sorted(mine) == sorted(theirs) and len(mine) == 60
    cosines = [float(mine[p] @ theirs[p] / np.linalg.norm(mine[p]) / np.linalg.norm(theirs[p])) for p in mine]
    assert min(cosines) >= 0.9999
    found = on_ray.search("a red circle", k=3)
    assert all(Path(r.path).name.startswith("red-circle") for r in found)


def test_a_ray_crawl_of_changed_files_embeds_only_those(session_ray, photos, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    library = _library(tmp_path / "home", engine="ray")
    library.crawl([folder])
    changed = sorted(folder.glob("red-*.jpg"))[:2]
    for seed, path in enumerate(changed):
        save_shape_photo(path, "blue", "star", 99 + seed)  # new content under the old name
    save_shape_photo(folder / "new-green-square.png", "green", "square", 98)
    (folder / "yellow-star-0000.jpg").unlink()
    report = library.crawl([folder])
    s = report.stats
    assert (s.new, s.changed, s.embedded, s.deleted) == (1, 2, 3, 1)
    top = library.search(image=folder / "new-green-square.png", k=1)
    assert Path(top[0].path).name == "new-green-square.png"


def test_an_actor_killed_mid_crawl_has_its_batch_run_again(session_ray, tmp_path):
    folder = tmp_path / "photos"
    make_shape_folder(folder, 8, 909)  # 160 photos: several batches for each actor
    library = _library(tmp_path / "home", engine="ray")
    killed: list[int] = []

    def kill_one(summary) -> None:
        if not killed and summary.embedded >= 32:
            pids = [int(p) for p in subprocess.run(["pgrep", "-f", "ray::EmbedWorker"], capture_output=True,
                                                   text=True).stdout.split()]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    report = library.crawl([folder], on_progress=kill_one)
    assert killed, "no actor process was found to kill"
    assert (report.stats.embedded, report.stats.failed) == (160, 0)
    assert library.status().counts.get("live") == 160


def test_a_node_that_cannot_see_the_folder_is_named(session_ray, tmp_path):
    from clipsearch.ingest.cluster import Cluster, ClusterError, Embedding

    embedding = Embedding(SHAPES_MODEL, str(tmp_path / "t"), str(tmp_path / "i"), "fp32", "cpu", None,
                          str(tmp_path / "cache"), 10**8, 0)
    cluster = Cluster(embedding, [str(tmp_path / "not-mounted-here")])
    with pytest.raises(ClusterError, match="cannot see .*not-mounted-here: every node must see the photo folders"):
        cluster.start()
    assert ray.is_initialized()  # a Ray it did not start is left running


def test_without_an_address_a_local_ray_is_started_and_stopped(tmp_path):
    home, folder = tmp_path / "home", tmp_path / "photos"
    for i in range(4):
        save_shape_photo(folder / f"{i}.jpg", "red", "square", (4, i))
    with clean_environment(tmp_path / "model-cache"):
        result = run_cli("--home", str(home), "crawl", str(folder), "--model", SHAPES_MODEL, "--engine", "ray",
                         "--workers", "2", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Ray" not in result.stderr  # Ray's own notes stay quiet
    assert _library(home).status().counts.get("live") == 4


def test_an_address_where_no_cluster_answers_is_one_line_and_writes_nothing(photos, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "home"
    result = run_cli("--home", str(home), "crawl", str(photos), "--engine", "ray", "--address", f"127.0.0.1:{port}")
    assert result.returncode != 0
    assert "no Ray cluster answers at 127.0.0.1" in result.stderr and "Traceback" not in result.stderr
    assert not home.exists()


def test_without_ray_installed_the_flag_says_how_to_install_it(photos, tmp_path):
    home = tmp_path / "home"
    code = "import sys; sys.modules['ray'] = None; from clipsearch.cli import main; sys.argv[0] = 'clipsearch'; main()"
    result = subprocess.run([sys.executable, "-c", code, "--home", str(home), "crawl", str(photos), "--engine",
                             "ray"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "pip install 'clipsearch[ray]'" in result.stderr and "Traceback" not in result.stderr
    assert not home.exists()


def test_the_engine_setting_is_checked(tmp_path):
    with pytest.raises(ClipsearchError, match="engine = 'spark' is not one of: local, ray"):
        load_settings(tmp_path, engine="spark")
