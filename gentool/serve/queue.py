"""Turn-taking for loaded models: one generation at a time per model, a bounded wait, an LRU cache.

A torch model (and the random stream a chat backend keeps) is not safe to use from two threads,
so each loaded model has a *slot*: its jobs run one after the other, off the event loop, in a
small thread pool. Requests wait for their turn on the event loop (an ``asyncio.Lock``, first come
first served), not in a thread, so waiting costs no thread; when ``queue_size`` requests already
wait for a model, one more is refused at once with a 503. Models load lazily, in a thread at the
start of their first turn, and the least recently used idle ones are dropped when more than
``max_models`` are loaded. A model that fails to load ends its turn with the loader's error (the
request that asked gets it, and so does each one waiting); a one-line :class:`GentoolError` (a
truncated checkpoint, a file that is no model) is kept, so later requests for the same file get it
at once, without a turn; a new version of the file gets a new slot and is tried afresh.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Hashable

from gentool.errors import GentoolError
from gentool.serve.errors import busy, not_loadable


class Slot:
    """One model (loaded on first use) and its turn: the running job plus at most ``queue_size`` waiting."""

    def __init__(self, key: Hashable, loader: Callable[[], Any], queue_size: int, label: str):
        self.key, self.loader, self.queue_size, self.label = key, loader, queue_size, label
        self.lock = asyncio.Lock()
        self.count = 0  # the running job and the waiting ones
        self.obj: Any = None
        #: The one-line error the loader raised (the file is not a usable model): raised again at once.
        self.error: GentoolError | None = None

    def get(self) -> Any:
        """The loaded model (loading it in the job's thread the first time)."""
        if self.error is not None:
            raise self.error
        if self.obj is None:
            try:
                self.obj = self.loader()
            except GentoolError as exc:
                self.error = exc
                raise
        return self.obj


class Gate:
    """The loaded models' slots and the threads their jobs run in."""

    def __init__(self, *, queue_size: int = 8, max_models: int = 3, workers: int = 4):
        self.queue_size, self.max_models = queue_size, max_models
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="gentool-serve")
        self.slots: "OrderedDict[Hashable, Slot]" = OrderedDict()

    def slot(self, key: Hashable, loader: Callable[[], Any], label: str) -> Slot:
        """The slot of ``key`` (made on first use); drops the least recently used idle slots beyond the limit."""
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = Slot(key, loader, self.queue_size, label)
        self.slots.move_to_end(key)
        for old in list(self.slots.values())[:-1]:
            if len(self.slots) <= self.max_models:
                break
            if old.count == 0:
                del self.slots[old.key]
        return slot

    async def start(self, slot: Slot, job: Callable[[Any], Any]) -> "asyncio.Future[Any]":
        """Wait for ``slot``'s turn, then run ``job(model)`` in a thread; return its future at once.

        Refused with a 503 :class:`~gentool.serve.errors.APIError` when the slot's queue is full;
        the loader's error (a :class:`GentoolError` for a file that is not a usable model) when the
        model cannot be loaded.
        The turn ends when the job ends (not when its client has read the answer), so a slow
        reader never holds a model.
        """
        if slot.error is not None:  # known not to load: no turn, no thread
            raise not_loadable(slot.label, slot.error)
        if slot.count > slot.queue_size:
            raise busy(slot.label)
        slot.count += 1
        try:
            await slot.lock.acquire()
        except BaseException:  # the client went away while waiting
            slot.count -= 1
            raise
        loop = asyncio.get_running_loop()

        def done(_: Any = None) -> None:
            slot.lock.release()
            slot.count -= 1

        try:
            # Load first, in a thread, and say a failure here: the job never runs, so a caller that
            # waits for what the job reports would otherwise wait for ever.
            if slot.error is not None:  # the load failed while this request waited
                raise not_loadable(slot.label, slot.error)
            model = slot.obj
            if model is None:
                loading = loop.run_in_executor(self.pool, slot.get)
                try:
                    model = await asyncio.shield(loading)
                except asyncio.CancelledError:  # the client left: the turn ends when the load does
                    loading.add_done_callback(lambda f: (f.cancelled() or f.exception(), done()))
                    raise
                except GentoolError as exc:
                    raise not_loadable(slot.label, exc) from None
            future = loop.run_in_executor(self.pool, job, model)
        except asyncio.CancelledError:
            raise
        except BaseException:
            done()
            raise
        future.add_done_callback(done)
        return future

    async def run(self, slot: Slot, job: Callable[[Any], Any]) -> Any:
        """:meth:`start` and wait for the result."""
        return await (await self.start(slot, job))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


#: ``Model.sample`` seeds and restores the process's global random streams: image jobs of
#: different models take this lock too, so that one's seeding cannot change another's samples.
GLOBAL_RNG = threading.Lock()
