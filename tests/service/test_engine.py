"""Model instances: separate onnxruntime sessions that may run at once."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.config import Settings
from service.engine import Engine, model_file, threads_per_instance, usable_cores
from service.registry import ModelLoadError, scan
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


def fmnist_nrp():
    (entry,), _ = scan(REPO / "exported_models", ["fmnist-nrp"])
    return entry


def test_precision_picks_the_half_precision_file_only_where_it_pays():
    entry = fmnist_nrp()
    assert entry.fp16_path is not None and entry.fp16_path.name == "model.fp16.onnx"
    assert entry.cpu_graph_path is not None and entry.cpu_graph_path.name == "model.cpu.onnx"
    assert model_file(entry, "auto", on_gpu=False) == (entry.onnx_path, "fp32")
    assert model_file(entry, "auto", False, cpu_graph=True) == (entry.cpu_graph_path, "fp32")
    assert model_file(entry, "auto", on_gpu=True) == (entry.fp16_path, "fp16")
    assert model_file(entry, "fp32", on_gpu=True) == (entry.onnx_path, "fp32")
    assert model_file(entry, "fp32", True, cpu_graph=True) == (entry.onnx_path, "fp32")
    assert model_file(entry, "fp16", on_gpu=False) == (entry.fp16_path, "fp16")
    without = dataclasses.replace(entry, fp16_path=None, cpu_graph_path=None)
    assert model_file(without, "auto", on_gpu=True) == (entry.onnx_path, "fp32")
    assert model_file(without, "auto", False, cpu_graph=True) == (entry.onnx_path, "fp32")
    with pytest.raises(ModelLoadError, match=r"model\.fp16\.onnx"):
        model_file(without, "fp16", on_gpu=True)


def test_the_cpu_graph_is_served_only_under_the_onnxruntime_that_wrote_it(caplog):
    entry = fmnist_nrp()
    card = {**entry.card, "cpu_graph": {**entry.card["cpu_graph"], "onnxruntime": "0.0.1"}}
    other = dataclasses.replace(entry, card=card)
    with caplog.at_level("WARNING", logger="purifier.engine"):
        assert model_file(other, "auto", False, cpu_graph=True) == (entry.onnx_path, "fp32")
    assert "onnxruntime 0.0.1" in caplog.text


def test_the_cpu_graph_engine_gives_model_onnx_s_output():
    entry = fmnist_nrp()
    graph = Engine(entry, Settings(intra_op_threads=1, cpu_graph=True))
    plain = Engine(entry, Settings(intra_op_threads=1))
    batch = np.random.default_rng(2).random((2, 1, 28, 28), np.float32)
    np.testing.assert_allclose(graph.run(batch), plain.run(batch), atol=1e-5)


def test_int8_is_served_only_when_asked_for_and_only_if_exported():
    entry = fmnist_nrp()
    int8 = entry.onnx_path.with_name("model.int8.onnx")
    quantised = dataclasses.replace(entry, int8_path=int8)
    assert model_file(quantised, "auto", on_gpu=False)[1] == "fp32"
    assert model_file(quantised, "int8", on_gpu=False) == (int8, "int8")
    with pytest.raises(ModelLoadError, match=r"PURIFIER_PRECISION=int8 .*model\.int8\.onnx"):
        model_file(dataclasses.replace(entry, int8_path=None), "int8", on_gpu=False)


def test_a_forced_half_precision_engine_agrees_with_float32_within_one_level():
    entry = fmnist_nrp()
    full = Engine(entry, Settings(intra_op_threads=1))
    half = Engine(entry, Settings(intra_op_threads=1, precision="fp16"))
    assert (full.precision, half.precision) == ("fp32", "fp16")
    batch = np.random.default_rng(0).random((3, 1, 28, 28), np.float32)
    out = half.run(batch)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, full.run(batch), atol=1 / 255)


def test_io_binding_gives_the_plain_run_s_output():
    entry = fmnist_nrp()
    plain = Engine(entry, Settings(intra_op_threads=1))
    bound = Engine(entry, Settings(intra_op_threads=1, io_binding=True))
    for shape in ((1, 1, 28, 28), (4, 1, 32, 40)):
        batch = np.random.default_rng(1).random(shape, np.float32)
        np.testing.assert_array_equal(bound.run(batch), plain.run(batch))


def test_without_the_cpu_arena_the_sessions_free_their_memory_and_answer_alike():
    entry = fmnist_nrp()
    kept = Engine(entry, Settings(intra_op_threads=1))
    freed = Engine(entry, Settings(intra_op_threads=1, cpu_mem_arena=False))
    assert kept.sessions[0].get_session_options().enable_cpu_mem_arena
    assert not freed.sessions[0].get_session_options().enable_cpu_mem_arena
    batch = np.random.default_rng(2).random((4, 1, 32, 40), np.float32)
    np.testing.assert_array_equal(freed.run(batch), kept.run(batch))


def test_the_default_model_serves_its_int8_file_when_asked_and_it_stays_close():
    """PURIFIER_PRECISION=int8: the quantised photo-guided runs, within the exporter's
    mean tolerance (2 grey levels) of float32 on a real photo."""
    from PIL import Image

    from training.data.photos import source_dir

    (entry,), _ = scan(REPO / "exported_models", ["photo-guided"])
    assert entry.int8_path is not None, "photo-guided's card lists no model.int8.onnx"
    int8 = Engine(entry, Settings(intra_op_threads=1, precision="int8"))
    full = Engine(entry, Settings(intra_op_threads=1, precision="fp32"))
    assert int8.precision == "int8" and full.precision == "fp32"
    img = Image.open(source_dir("scikit-image") / "coffee.png").convert("RGB").resize((96, 64))
    batch = (np.asarray(img, np.float32).transpose(2, 0, 1) / 255)[None]
    assert np.abs(int8.run(batch) - full.run(batch)).mean() <= 2 / 255
