"""The dynamic batcher on its own: a fake model that sleeps a known time per image."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batcher import DeadlineExceededError, DynamicBatcher, QueueFullError

SECONDS_PER_IMAGE = 0.01


def slow_identity(batch: np.ndarray) -> np.ndarray:
    time.sleep(SECONDS_PER_IMAGE * len(batch))
    return batch


def make_batcher(**kwargs) -> DynamicBatcher:
    settings = {"max_batch_size": 4, "max_queue_delay_s": 0.001, "max_queue_size": 1000}
    return DynamicBatcher(slow_identity, ThreadPoolExecutor(1), **(settings | kwargs))


async def submit_all(batcher: DynamicBatcher, n: int) -> list:
    """n one-image requests at once; each result or the exception it raised."""
    image = np.zeros((1, 8, 8), np.float32)
    deadline = time.perf_counter() + 30
    return await asyncio.gather(
        *(batcher.submit([image + i], deadline) for i in range(n)), return_exceptions=True
    )


def test_batches_form_and_results_match_their_requests():
    async def scenario():
        batcher = make_batcher()
        batcher.start()
        results = await submit_all(batcher, 12)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    for i, (outputs, stats) in enumerate(results):
        assert float(outputs[0].mean()) == i
        assert stats.batch_size == 4


def test_a_flood_is_refused_by_estimated_wait_and_the_accepted_all_finish():
    async def scenario():
        batcher = make_batcher(max_queue_wait_s=0.1)
        batcher.start()
        await submit_all(batcher, 4)  # measures the per-image cost
        cost = batcher.image_cost((1, 8, 8))
        results = await submit_all(batcher, 100)
        left = batcher.pending, batcher.estimated_wait
        await batcher.stop()
        return cost, results, left

    cost, results, left = asyncio.run(scenario())
    assert cost == pytest.approx(SECONDS_PER_IMAGE, rel=0.5)
    refused = [r for r in results if isinstance(r, Exception)]
    accepted = [r for r in results if not isinstance(r, Exception)]
    assert all(isinstance(r, QueueFullError) and r.code == "overloaded" for r in refused)
    assert all(r.retry_after >= 1 for r in refused)
    # about max_queue_wait / cost images get in (the first of a burst sees an empty queue)
    assert 5 <= len(accepted) <= 20, len(accepted)
    assert left == (0, 0.0)


def test_an_idle_model_takes_a_request_longer_than_the_wait_limit():
    async def scenario():
        batcher = make_batcher(max_queue_wait_s=0.001)
        batcher.start()
        await submit_all(batcher, 4)
        image = np.zeros((1, 8, 8), np.float32)
        outputs, _ = await batcher.submit([image] * 20, time.perf_counter() + 30)
        await batcher.stop()
        return outputs

    assert len(asyncio.run(scenario())) == 20


def test_the_count_limit_still_applies():
    async def scenario():
        batcher = make_batcher(max_queue_size=3)
        batcher.start()
        results = await submit_all(batcher, 10)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 7 and all(r.code == "queue_full" for r in refused)


def test_two_instances_run_two_batches_at_once_and_split_the_queue():
    """Eight queued images on two idle instances: two batches of four, run together
    (each sleeps 40 ms; one batch of eight on one instance would take 80 ms)."""
    running, overlapped = [0], [False]

    def tracked(batch: np.ndarray) -> np.ndarray:
        running[0] += 1
        overlapped[0] |= running[0] > 1
        try:
            return slow_identity(batch)
        finally:
            running[0] -= 1

    async def scenario():
        batcher = DynamicBatcher(
            tracked,
            ThreadPoolExecutor(2),
            max_batch_size=16,
            max_queue_delay_s=0.05,  # all eight are queued before the first batch forms
            max_queue_size=1000,
            instances=2,
        )
        batcher.start()
        started = time.perf_counter()
        results = await submit_all(batcher, 8)
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return results, elapsed

    results, elapsed = asyncio.run(scenario())
    assert [stats.batch_size for _, stats in results] == [4] * 8
    for i, (outputs, _) in enumerate(results):
        assert float(outputs[0].mean()) == i
    assert overlapped[0]
    assert elapsed < 0.05 + 8 * SECONDS_PER_IMAGE, elapsed


def test_one_instance_never_runs_two_batches_at_once():
    running, most = [0], [0]

    def tracked(batch: np.ndarray) -> np.ndarray:
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            return slow_identity(batch)
        finally:
            running[0] -= 1

    async def scenario():
        batcher = DynamicBatcher(tracked, ThreadPoolExecutor(4), 4, 0.001, 1000, instances=1)
        batcher.start()
        await submit_all(batcher, 16)
        await batcher.stop()

    asyncio.run(scenario())
    assert most[0] == 1


def test_estimated_wait_shares_the_queued_work_among_instances():
    async def scenario(instances: int) -> float:
        batcher = DynamicBatcher(
            slow_identity, ThreadPoolExecutor(instances), 4, 0.001, 1000, instances=instances
        )
        batcher.start()
        await submit_all(batcher, 4)  # measures the per-image cost
        await batcher.stop()  # no worker now: what is submitted stays queued
        image = np.zeros((1, 8, 8), np.float32)
        queued = asyncio.ensure_future(batcher.submit([image] * 8, time.perf_counter() + 30))
        await asyncio.sleep(0.01)
        wait = batcher.estimated_wait
        queued.cancel()
        return wait / batcher.image_cost((1, 8, 8))

    assert asyncio.run(scenario(1)) == pytest.approx(8)
    assert asyncio.run(scenario(2)) == pytest.approx(4)


@pytest.mark.parametrize("more_coming", [False, True])
def test_a_free_instance_waits_out_the_delay_only_while_more_work_is_on_its_way(more_coming):
    """With nothing on its way a lone request runs at once; with a request still being
    read or decoded, the batcher holds the batch open for up to max_queue_delay."""
    delay = 0.5

    async def scenario():
        batcher = make_batcher(max_queue_delay_s=delay, expecting=lambda: more_coming)
        batcher.start()
        started = time.perf_counter()
        ((_, stats),) = await submit_all(batcher, 1)
        waited = time.perf_counter() - started
        await batcher.stop()
        return waited, stats

    waited, stats = asyncio.run(scenario())
    assert stats.batch_size == 1
    if more_coming:
        assert waited >= delay
    else:
        assert waited < delay / 2, waited


async def arrive_and_submit(batcher: DynamicBatcher, index: int, deadline: float, read_s: float):
    """One request as the service runs it: admitted at arrival, read and decoded (a
    sleep), then queued; its result, or the exception it was refused or failed with."""
    image = np.zeros((1, 8, 8), np.float32) + index
    try:
        with batcher.arrival(deadline) as ticket:
            await asyncio.sleep(read_s)
            if ticket.refusal is not None:
                raise ticket.refusal
            return await batcher.submit([image], deadline, ticket)
    except Exception as err:  # the test sorts what each request got
        return err


def test_a_burst_at_an_unused_batcher_is_admitted_by_seeded_cost_and_none_times_out():
    """Nothing served yet, but warm-up seeded the per-image cost: of a burst whose work is
    four times the deadline, about a quarter is admitted (those still being read count
    ahead of later arrivals), and every admitted request finishes in time."""
    deadline_s = 0.4

    async def scenario():
        batcher = make_batcher(headroom=0.8)  # the reading time below is not in the estimate
        batcher.seed_cost((1, 8, 8), SECONDS_PER_IMAGE)
        batcher.seed_request_cost(SECONDS_PER_IMAGE)
        batcher.start()
        deadline = time.perf_counter() + deadline_s
        burst = 4 * round(deadline_s / SECONDS_PER_IMAGE)
        results = await asyncio.gather(
            *(arrive_and_submit(batcher, i, deadline, 0.02) for i in range(burst))
        )
        await batcher.stop()
        return burst, results

    burst, results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, QueueFullError)]
    accepted = [r for r in results if not isinstance(r, Exception)]
    assert len(refused) + len(accepted) == burst, [r for r in results if isinstance(r, Exception)]
    assert all(r.code == "overloaded" for r in refused)
    assert burst / 8 <= len(accepted) <= burst / 3, len(accepted)
    for i, result in enumerate(results):
        if not isinstance(result, Exception):
            assert float(result[0][0].mean()) == i  # each request got its own image back


def test_without_a_seeded_cost_the_same_burst_times_out():
    """The failure the seeding prevents: no cost known, everything is admitted and most
    requests pass their deadline in the queue (504)."""
    deadline_s = 0.4

    async def scenario():
        batcher = make_batcher()
        batcher.start()
        deadline = time.perf_counter() + deadline_s
        burst = 4 * round(deadline_s / SECONDS_PER_IMAGE)
        results = await asyncio.gather(
            *(arrive_and_submit(batcher, i, deadline, 0.02) for i in range(burst))
        )
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert sum(isinstance(r, DeadlineExceededError) for r in results) > len(results) / 2


def test_a_refused_arrival_reserves_nothing_and_an_admitted_one_is_released():
    async def scenario():
        batcher = make_batcher(max_queue_wait_s=0.05)
        batcher.seed_request_cost(0.04)
        deadline = time.perf_counter() + 30
        # The first, at an idle model, is admitted whatever its cost; the second would
        # finish 0.04 + 0.04 s out, past the 0.05 s limit.
        with batcher.arrival(deadline) as first, batcher.arrival(deadline) as second:
            seen = first.refusal, second.refusal, batcher.estimated_wait
        return seen, batcher.estimated_wait

    (first, second, during), after = asyncio.run(scenario())
    assert first is None and isinstance(second, QueueFullError) and second.code == "overloaded"
    assert during == pytest.approx(0.04) and after == 0.0


def test_decoding_and_encoding_count_in_the_work_ahead_until_the_answer():
    """A request holds its typical decode + encode cost from arrival until it is
    answered, and its typical inference cost only until its images are queued."""

    async def scenario():
        batcher = make_batcher()
        batcher.seed_request_cost(0.03)
        batcher.seed_codec_cost("decode", 0.01)
        batcher.seed_codec_cost("encode", 0.02)
        image = np.zeros((1, 8, 8), np.float32)
        deadline = time.perf_counter() + 30
        with batcher.arrival(deadline) as ticket:
            reading = batcher.estimated_wait
            await batcher.stop()  # no worker: what is submitted stays queued
            queued = asyncio.ensure_future(batcher.submit([image], deadline, ticket))
            await asyncio.sleep(0.01)
            after_submit = batcher.estimated_wait
            queued.cancel()
        return reading, after_submit, batcher.estimated_wait

    reading, after_submit, answered = asyncio.run(scenario())
    assert reading == pytest.approx(0.06)
    assert after_submit == pytest.approx(0.03)  # the codec part; the image's cost is unknown
    assert answered == 0.0


def test_an_unmeasured_shape_is_costed_by_its_pixels():
    batcher = make_batcher()
    assert batcher.estimated_cost((1, 8, 8)) == 0.0  # nothing measured: admission is off
    batcher.seed_cost((1, 8, 8), 0.01)
    batcher.seed_cost((1, 8, 8), 0.5)  # a seed never overwrites a measurement
    assert batcher.estimated_cost((1, 8, 8)) == 0.01
    assert batcher.estimated_cost((1, 16, 16)) == pytest.approx(0.04)


def test_a_pixel_budget_caps_batches_of_large_images_but_not_small_ones():
    """max_batch_pixels: 8x8 images batch 4 (max_batch_size) within a 256-pixel budget,
    16x16 ones (256 pixels each) run one at a time; the budget never stops an image."""

    async def scenario():
        batcher = make_batcher(max_batch_pixels=256)
        batcher.start()
        small = await submit_all(batcher, 8)
        deadline = time.perf_counter() + 30
        large = await asyncio.gather(
            *(batcher.submit([np.zeros((1, 16, 16), np.float32)], deadline) for _ in range(6))
        )
        huge = await batcher.submit([np.zeros((1, 32, 32), np.float32)], deadline)
        await batcher.stop()
        return small, large, huge

    small, large, huge = asyncio.run(scenario())
    assert {stats.batch_size for _, stats in small} == {4}
    assert {stats.batch_size for _, stats in large} == {1}
    assert huge[1].batch_size == 1
    batcher = make_batcher(max_batch_pixels=256)
    assert batcher.batch_limit((3, 8, 8)) == 4 and batcher.batch_limit((3, 16, 16)) == 1
    assert make_batcher().batch_limit((3, 640, 640)) == 4  # no budget: max_batch_size
