"""The bounded work pool and opaque paging tokens."""

from __future__ import annotations

import asyncio
import threading

import pytest

from facesearch.api.errors import InvalidPaginationTokenError, QueueFullError
from facesearch.api.paging import decode_row, decode_token, encode_token, page_by_name
from facesearch.api.work import WorkPool


def test_pool_runs_jobs_and_refuses_beyond_capacity() -> None:
    gate, started = threading.Event(), threading.Event()
    pool = WorkPool(1, 1, init=lambda: None)
    pool.start()

    def blocking() -> bool:
        started.set()
        return gate.wait()

    async def main() -> None:
        blocked = asyncio.ensure_future(pool.run(blocking))
        # Synchronise on events, never on time: the only worker is inside the first job...
        assert await asyncio.to_thread(started.wait, 60)
        queued = asyncio.ensure_future(pool.run(lambda: 42))
        # ...and one turn of the loop admits the second, which must wait in the queue.
        await asyncio.sleep(0)
        assert pool.busy == 1 and pool.depth == 1
        with pytest.raises(QueueFullError) as err:
            await pool.run(lambda: 0)
        assert err.value.retry_after >= 1
        gate.set()
        assert await blocked is True and await queued == 42
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 // 0)
        assert pool.depth == 0 and pool.busy == 0

    asyncio.run(main())
    assert pool.ready.is_set()
    pool.shutdown()


def test_tokens_round_trip_and_refuse_garbage() -> None:
    t = encode_token("faces", 123)
    assert decode_row("faces", t) == 123 and decode_row("faces", None) == 0
    assert decode_token("collections", encode_token("collections", "a.b")) == "a.b"
    for bad in ("", "!!!", encode_token("users", 5), "x" * 300):
        with pytest.raises(InvalidPaginationTokenError):
            decode_row("faces", bad)
    with pytest.raises(InvalidPaginationTokenError):
        decode_row("faces", encode_token("faces", "abc"))
    page, nxt = page_by_name(["c", "a", "b"], None, 2, "collections")
    assert page == ["a", "b"] and nxt is not None
    assert page_by_name(["c", "a", "b"], nxt, 2, "collections") == (["c"], None)
