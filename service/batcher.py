"""Asyncio dynamic micro-batching, bucketed by input shape.

Requests put images (all of one shape bucket per image plan) on the queue and await
futures. One worker per model gathers items of the same shape until `max_batch_size`
or until the oldest has waited `max_queue_delay`, then runs the batch off the event
loop (onnxruntime releases the GIL) and resolves each future. With several model
instances, up to that many batches run at once (Triton's instance_group count); the
next batch forms while they run. The queue is bounded:
a full queue rejects at once (503) instead of piling up; items past their deadline are
dropped before inference (504). An inference error fails only its own batch.

A free instance waits up to `max_queue_delay` for a fuller batch only while more work is
on its way: `expecting()` (the service counts requests admitted but not yet queued) says
whether any is. When every request the service holds is already queued, waiting cannot
grow the batch, so it runs at once: a lone request skips the delay (Triton waits it out).

Admission bounds the queue in time, not only in count, and happens twice. At a request's
arrival, before its body is read (`arrival`), it is refused at once (503) when the work
ahead of it - images queued or running, plus the requests admitted before it that are
still being read or decoded, each at the measured cost of a typical request - and its
own typical cost could not finish within the admitted share (`headroom`) of its
deadline or within `max_queue_wait` (off by default). Once decoded, `submit` checks
again with the image's own measured per-shape cost. Costs are moving averages of the
seconds one image of each shape costs on real batches, seeded at warm-up (`seed_cost`)
so that a burst at a server that has served nothing yet is admitted by measurement,
not all at once. An idle model takes any request, however long it runs. Under overload
accepted requests therefore finish instead of timing out (504), and latency is back to
normal soon after a burst ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np


class QueueFullError(RuntimeError):
    """Refused at admission. `code` names the limit; `retry_after` is in seconds."""

    def __init__(self, message: str, code: str = "queue_full", retry_after: int = 1) -> None:
        super().__init__(message)
        self.code, self.retry_after = code, retry_after


class DeadlineExceededError(TimeoutError):
    pass


class InferenceError(RuntimeError):
    pass


@dataclass
class _Item:
    array: np.ndarray
    future: asyncio.Future
    deadline: float
    cost: float  # estimated seconds of inference, counted in the queued work until done
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class Ticket:
    """A request's admission at arrival: the refusal, or the seconds of work reserved
    for it (see DynamicBatcher.arrival)."""

    refusal: QueueFullError | None = None
    inference: float = 0.0
    codec: float = 0.0


@dataclass
class BatchStats:
    """Per-request timings, reported in response headers."""

    queue_s: float = 0.0
    inference_s: float = 0.0
    batch_size: int = 0


Observer = Callable[[int, float, list[float]], None]  # (batch size, inference s, queue s each)

log = logging.getLogger("purifier.batcher")

COST_SMOOTHING = 0.3  # weight of the newest batch in the per-image cost average


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        observer: Observer | None = None,
        max_queue_wait_s: float | None = None,
        instances: int = 1,
        expecting: Callable[[], bool] | None = None,
        headroom: float = 1.0,
        max_batch_pixels: int | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._expecting = expecting or (lambda: True)
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_batch_pixels = max_batch_pixels
        self.max_delay = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.max_queue_wait = math.inf if max_queue_wait_s is None else max_queue_wait_s
        self.headroom = headroom  # the share of a deadline admission may fill
        self._observer = observer
        self.instances = instances
        self._running: set[asyncio.Task] = set()  # batches in inference
        self._slot_free = asyncio.Event()
        self._cost: dict[tuple[int, ...], float] = {}  # seconds per image, by shape
        self._queued_cost = 0.0
        self._arriving = 0  # requests admitted at arrival and not yet answered
        self._reserved = 0.0  # their reservations (Ticket) in the work ahead
        self._request_cost = 0.0  # moving average of one request's inference seconds
        self._codec: dict[str, float] = {}  # moving averages: decode, encode seconds
        self._queues: dict[tuple[int, ...], deque[_Item]] = {}
        self._pending = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.last_beat = time.monotonic()

    @property
    def pending(self) -> int:
        """Images queued or running."""
        return self._pending

    @property
    def estimated_wait(self) -> float:
        """Seconds until the work queued or running, and the reservations of the requests
        admitted but not answered, is done, from measured costs (each instance works
        through its share at once)."""
        return (self._queued_cost + self._reserved) / self.instances

    def image_cost(self, shape: tuple[int, ...]) -> float | None:
        """Measured seconds per image of this shape (moving average), None before any batch."""
        return self._cost.get(shape)

    def estimated_cost(self, shape: tuple[int, ...]) -> float:
        """Seconds one image of this shape is expected to cost: its measured cost, else
        the measured shapes' cost per pixel times its pixels (0 before any measurement)."""
        if shape in self._cost:
            return self._cost[shape]
        if not self._cost:
            return 0.0
        per_pixel = sum(c / math.prod(s) for s, c in self._cost.items()) / len(self._cost)
        return per_pixel * math.prod(shape)

    def seed_cost(self, shape: tuple[int, ...], seconds_per_image: float) -> None:
        """A first measurement (warm-up's) of one image of this shape; real batches then
        refine it."""
        self._cost.setdefault(shape, seconds_per_image)

    def seed_request_cost(self, seconds: float) -> None:
        """The cost a request is assumed to have at arrival, before its size is known,
        until requests have been measured (warm-up's cost of a typical image)."""
        if not self._request_cost:
            self._request_cost = seconds

    def seed_codec_cost(self, step: str, seconds: float) -> None:
        """Decoding or encoding (`step`) a typical request, until requests are measured."""
        self._codec.setdefault(step, seconds)

    def note_codec_cost(self, step: str, seconds: float) -> None:
        """One request's decode or encode seconds: they share the cores with inference,
        so admission counts them in the work ahead."""
        old = self._codec.get(step, seconds)
        self._codec[step] = old + COST_SMOOTHING * (seconds - old)

    @contextlib.contextmanager
    def arrival(self, deadline: float) -> Iterator[Ticket]:
        """Admission at arrival (module docstring), around the whole of one request.
        Yields its Ticket: the refusal (QueueFullError) or None, and the reservation an
        admitted request holds in the work ahead of later arrivals - a typical request's
        inference until `submit` queues its images (their own costs then count), its
        decoding and encoding until it is answered. The caller raises a refusal once it
        has read the body, so that the client's connection stays usable."""
        ticket = Ticket(inference=self._request_cost, codec=sum(self._codec.values()))
        try:
            self._admit(0, ticket.inference + ticket.codec, deadline)
        except QueueFullError as refusal:
            yield Ticket(refusal=refusal)
            return
        self._arriving += 1
        self._reserved += ticket.inference + ticket.codec
        try:
            yield ticket
        finally:
            self._arriving -= 1
            self._reserved -= ticket.inference + ticket.codec
            if not self._arriving:
                self._reserved = 0.0  # no float drift

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")
        self._task.add_done_callback(_report_death)

    async def stop(self) -> None:
        for task in [self._task, *self._running]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def submit(
        self, arrays: list[np.ndarray], deadline: float, ticket: Ticket | None = None
    ) -> tuple[list[np.ndarray], BatchStats]:
        """Queue images of one request; wait for all of them (or the deadline). With the
        request's Ticket, its inference reservation gives way to its images' own costs."""
        if ticket is not None:
            self._reserved -= ticket.inference
            ticket.inference = 0.0
        costs = [self.estimated_cost(a.shape) for a in arrays]
        self._admit(len(arrays), sum(costs), deadline, own=ticket is not None)
        if sum(costs):
            request = sum(costs)
            self._request_cost += COST_SMOOTHING * (request - self._request_cost)
        loop = asyncio.get_running_loop()
        items = [
            _Item(a, loop.create_future(), deadline, c) for a, c in zip(arrays, costs, strict=True)
        ]
        self._pending += len(items)
        self._queued_cost += sum(item.cost for item in items)
        for item in items:
            self._queues.setdefault(item.array.shape, deque()).append(item)
        self._wakeup.set()
        try:
            timeout = deadline - time.perf_counter()
            if timeout <= 0:
                raise DeadlineExceededError("deadline passed before queueing")
            results = await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), timeout)
        except TimeoutError as err:
            raise DeadlineExceededError("request deadline exceeded") from err
        finally:
            for item in items:
                if not item.future.done():
                    item.future.cancel()
        stats = BatchStats(
            queue_s=max(r[1] for r in results),
            inference_s=max(r[2] for r in results),
            batch_size=max(r[3] for r in results),
        )
        return [r[0] for r in results], stats

    def _admit(self, count: int, cost: float, deadline: float, own: bool = False) -> None:
        """Raise QueueFullError unless the request fits (module docstring). `own`: the
        request is itself among the admitted arrivals (its images are being queued)."""
        if self._pending + count > self.max_queue_size:
            raise QueueFullError(f"{self._pending} images already queued")
        if not self._pending and self._arriving == int(own):
            return  # an idle model takes any request, however long it runs
        waiting = self.estimated_wait
        finish = waiting + cost / self.instances
        limit = min(self.max_queue_wait, self.headroom * (deadline - time.perf_counter()))
        if finish > limit:
            raise QueueFullError(
                f"overloaded: about {waiting:.2f} s of work is queued and this request "
                f"would finish in {finish:.2f} s, over the {limit:.2f} s limit",
                code="overloaded",
                retry_after=max(1, math.ceil(waiting)),
            )

    def _release(self, items: list[_Item]) -> None:
        self._pending -= len(items)
        self._queued_cost -= sum(item.cost for item in items)
        if not self._pending:
            self._queued_cost = 0.0  # no float drift across idle periods

    def _oldest_queue(self) -> tuple[tuple[int, ...], deque[_Item]] | None:
        live = [(k, q) for k, q in self._queues.items() if q]
        if not live:
            return None
        return min(live, key=lambda kq: kq[1][0].enqueued)

    def batch_limit(self, shape: tuple[int, ...]) -> int:
        """Images of this (C, H, W) one batch may hold: max_batch_size, and no more than
        max_batch_pixels of H x W in all (at least one). The activations of a batch of
        large tiles are what fills memory (each session's arena keeps its largest
        batch), and on a CPU they run no faster batched."""
        if self.max_batch_pixels is None:
            return self.max_batch_size
        return max(1, min(self.max_batch_size, self.max_batch_pixels // math.prod(shape[-2:])))

    def _take(self, shape: tuple[int, ...], queue: deque[_Item]) -> list[_Item]:
        """The next batch: at most batch_limit, and with several instances free, an
        even share of the queue each (eight queued images on two idle one-thread
        instances run as two batches of four at once, not one of eight on one core)."""
        now = time.perf_counter()
        free = max(1, self.instances - len(self._running))
        limit = min(self.batch_limit(shape), -(-len(queue) // free))
        batch: list[_Item] = []
        while queue and len(batch) < limit:
            item = queue.popleft()
            if item.future.done():  # cancelled: the request already gave up
                self._release([item])
            elif item.deadline <= now:
                self._release([item])
                item.future.set_exception(DeadlineExceededError("deadline passed in the queue"))
            else:
                batch.append(item)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.last_beat = time.monotonic()
            if len(self._running) >= self.instances:
                # Every instance is busy: items keep queueing (and batches keep growing)
                # until one finishes.
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            found = self._oldest_queue()
            if found is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            shape, queue = found
            age = time.perf_counter() - queue[0].enqueued
            full = len(queue) >= self.batch_limit(shape)
            if not full and age < self.max_delay and self._expecting():
                # Wait for more items or for the oldest one's delay to run out, then look again.
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.max_delay - age)
                continue
            batch = self._take(shape, queue)
            if not batch:
                continue
            task = loop.create_task(self._run(loop, batch), name="batch")
            self._running.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slot_free.set()

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        started = time.perf_counter()
        queued = [started - item.enqueued for item in batch]
        try:
            stacked = np.stack([item.array for item in batch])
            out = await loop.run_in_executor(self._executor, self._run_batch, stacked)
            # Same N, H, W; channels may be fewer (a stochastic model's items carry noise).
            if out.shape[0] != stacked.shape[0] or out.shape[2:] != stacked.shape[2:]:
                raise InferenceError(f"model returned {out.shape} for input {stacked.shape}")
        except Exception as err:  # any failure fails this batch only
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(InferenceError(f"inference failed: {err}"))
        else:
            elapsed = time.perf_counter() - started
            shape = batch[0].array.shape
            per_image = elapsed / len(batch)
            old = self._cost.get(shape)
            self._cost[shape] = (
                per_image if old is None else old + COST_SMOOTHING * (per_image - old)
            )
            for item, result, waited in zip(batch, out, queued, strict=True):
                if not item.future.done():
                    item.future.set_result((result, waited, elapsed, len(batch)))
            if self._observer is not None:
                self._observer(len(batch), elapsed, queued)
        finally:
            self._release(batch)


def _report_death(task: asyncio.Task) -> None:
    """The worker only ends on stop(); anything else is logged (liveness reports it)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("batching worker died", exc_info=task.exception())
