"""Concurrent requests → shared forward passes: an asyncio micro-batcher.

Requests wait in a queue; one worker takes the first, every request already waiting behind it
(they pile up while the previous call computes), then whatever arrives within
``max_batch_wait_ms``, up to ``max_batch_questions`` questions, and answers all of them in one
call of the answering function, in a thread of its own so that the event loop keeps accepting
connections. A request's questions are never split across calls. With ``batching`` off every
request is its own call (the unbatched baseline).

When a gathered call fails, its requests are retried one by one, so that one request that
cannot be answered does not fail the others; its own error goes back to it alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..common.settings import option

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSettings:
    """How concurrent requests are gathered into one forward pass."""

    batching: bool = option(True, "gather concurrent requests into shared forward passes (--no-batching: one "
                                  "forward pass per request)")
    max_batch_wait_ms: float = option(2.0, "after taking the requests already waiting, how long to wait for more "
                                           "to join the forward pass (0: do not wait)")
    max_batch_questions: int = option(64, "questions gathered into one forward pass at most")

    def __post_init__(self) -> None:
        if self.max_batch_wait_ms < 0 or self.max_batch_questions < 1:
            raise ValueError(f"need max_batch_wait_ms ≥ 0 and max_batch_questions ≥ 1, got "
                             f"{self.max_batch_wait_ms} and {self.max_batch_questions}")


@dataclass
class _Pending:
    items: Sequence
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Answers lists of items through ``answer_all`` (items → results, in order), several lists per call."""

    def __init__(self, answer_all: Callable[[list], list], settings: BatchSettings = BatchSettings()):
        self.answer_all = answer_all
        self.settings = settings
        self.calls = 0  # answering calls made (forward passes per reader), for /info and tests
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._held: _Pending | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker (again after :meth:`stop`: an app's lifespan may run more than once)."""
        self._queue, self._held = asyncio.Queue(), None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-scale-answer")
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        self._queue = self._thread = None

    async def submit(self, items: Sequence) -> list:
        """The results of ``items`` (raises what answering them raised)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(items, future))
        return await future

    def _fits(self, nxt: _Pending, count: int) -> bool:
        if count + len(nxt.items) > self.settings.max_batch_questions:
            self._held = nxt  # too big to join: it starts the next batch
            return False
        return True

    async def _gather(self, first: _Pending) -> list[_Pending]:
        batch, count = [first], len(first.items)
        if not self.settings.batching:
            return batch
        while not self._queue.empty() and self._held is None:  # waiting already: no timer needed
            nxt = self._queue.get_nowait()
            if self._fits(nxt, count):
                batch.append(nxt)
                count += len(nxt.items)
        deadline = time.perf_counter() + self.settings.max_batch_wait_ms / 1000
        while self._held is None and count < self.settings.max_batch_questions:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                nxt = await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            if self._fits(nxt, count):
                batch.append(nxt)
                count += len(nxt.items)
        return batch

    async def _run(self) -> None:
        while True:
            first, self._held = self._held or await self._queue.get(), None
            batch = await self._gather(first)
            await self._call(batch)

    async def _call(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for p in batch for item in p.items]
        self.calls += 1
        try:
            results = await loop.run_in_executor(self._thread, self.answer_all, items)
        except Exception as err:  # noqa: BLE001 - handed to the requests, never lost
            if len(batch) > 1:
                for p in batch:
                    await self._call([p])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(err)
            return
        at = 0
        for p in batch:
            if not p.future.done():  # a client that went away has cancelled its future
                p.future.set_result(results[at:at + len(p.items)])
            at += len(p.items)
