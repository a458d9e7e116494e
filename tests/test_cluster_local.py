"""A local Ray started by a crawl (`--engine ray`, no address), in-process: kept apart from
tests/test_cluster.py, whose module shares one Ray started beforehand."""

from __future__ import annotations

import threading
import time

import ray

from clipsearch.ingest.cluster import Cluster, Embedding
from clipsearch.records import FileRecord

from .conftest import SHAPES_MODEL, clean_environment
from .shapes import save_shape_photo


def test_a_local_ray_outlives_the_thread_that_started_it_and_stops_on_close(tmp_path):
    # A crawl's reader thread starts the cluster and ends before the crawl does; Ray's
    # processes die with the thread that started them unless another thread owns them.
    folder = tmp_path / "photos"
    paths = [save_shape_photo(folder / f"{i}.jpg", "red", "circle", i) for i in range(3)]
    with clean_environment(tmp_path / "model-cache"):
        embedding = Embedding(SHAPES_MODEL, str(tmp_path / "text-tower"), str(tmp_path / "image-tower"), "fp32",
                              "cpu", None, str(tmp_path / "model-cache"), 10**8, 0)
        cluster = Cluster(embedding, [str(folder)], local_cpus=2)
        starter = threading.Thread(target=cluster.start)
        starter.start()
        starter.join()
        try:
            assert ray.is_initialized() and cluster.actors == 1
            cluster.submit([(FileRecord(str(path), 1, path.stat().st_size, 0), f"h{i}")
                            for i, path in enumerate(paths)])
            answers = []
            deadline = time.monotonic() + 120
            while cluster.busy and time.monotonic() < deadline:
                answers += [answer for _, batch in cluster.collect(0.5) for answer in batch]
            assert [answer[0] for answer in answers] == ["ok", "ok", "ok"]
        finally:
            cluster.close()
    assert not ray.is_initialized()
