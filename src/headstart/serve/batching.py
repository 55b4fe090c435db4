"""Micro-batching: concurrent requests are answered by one forward pass.

Requests queue up; a single worker takes the first one, waits at most ``max_wait_s`` for more
until ``max_batch`` items are collected, runs the model once in a thread (so the event loop keeps
accepting requests), and hands each request its slice of the result.

A batch that fails is run again one request at a time, so that one request the model cannot
process fails alone and the requests that happened to share its batch are still answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np


class ServerClosing(Exception):
    """The server is shutting down; the request was not run."""


class Batcher:
    def __init__(self, predict: Callable[[list[Any]], np.ndarray], max_batch: int, max_wait_s: float) -> None:
        self.predict = predict
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.queue: asyncio.Queue[tuple[list[Any], asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self.batches = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        """Stop the worker and answer every queued request with :class:`ServerClosing`."""
        self._closing = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self.queue.empty():
            _, fut = self.queue.get_nowait()
            if not fut.done():
                fut.set_exception(ServerClosing())

    async def submit(self, items: list[Any]) -> np.ndarray:
        if self._closing:
            raise ServerClosing()
        if self._task is None or self._task.done():  # also works where lifespan events do not run
            self.start()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def _run(self, batch: list[tuple[list[Any], asyncio.Future[np.ndarray]]]) -> None:
        loop = asyncio.get_running_loop()
        items = [x for request, _ in batch for x in request]
        try:
            proba = await loop.run_in_executor(None, self.predict, items)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            for one in batch:  # find the request that fails; the others still get their answer
                await self._run([one])
            return
        self.batches += 1
        start = 0
        for request, fut in batch:
            if not fut.done():
                fut.set_result(proba[start:start + len(request)])
            start += len(request)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            count = len(batch[0][0])
            deadline = loop.time() + self.max_wait_s
            while count < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                batch.append(nxt)
                count += len(nxt[0])
            try:
                await self._run(batch)
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(ServerClosing())
                raise
