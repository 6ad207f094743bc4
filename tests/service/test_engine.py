"""Model instances: separate onnxruntime sessions that may run at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.config import Settings
from service.engine import Engine, threads_per_instance, usable_cores
from service.registry import scan
from tests.conftest import REPO


def test_cores_are_shared_out_among_instances_unless_threads_are_set():
    cores = usable_cores()
    assert threads_per_instance(Settings(instances=1)) == cores
    assert threads_per_instance(Settings(instances=cores * 2)) == 1
    assert threads_per_instance(Settings(instances=2, intra_op_threads=3)) == 3


def test_two_instances_answer_concurrent_runs_like_one():
    (entry,), _ = scan(REPO / "exported_models", ["fmnist-nrp"])
    single = Engine(entry, Settings(intra_op_threads=1))
    double = Engine(entry, Settings(instances=2, intra_op_threads=1))
    assert double.instances == 2 and len({id(s) for s in double.sessions}) == 2
    batches = [np.random.default_rng(i).random((2, 1, 28, 28), np.float32) for i in range(6)]
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(double.run, batches))
    for batch, output in zip(batches, outputs, strict=True):
        np.testing.assert_allclose(output, single.run(batch), atol=1e-6)
    assert double._free.qsize() == 2  # every session handed back
    assert double.warm_up([(1, 1, 32, 32)]) > 0
