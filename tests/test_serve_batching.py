"""The serve worker's batch collection (``tasks.serve_worker.TokenBudgetLoop``) on a queue of its
own: a request that comes alone runs at once, requests that come together wait ``--max_wait_ms``
for company, the token budget ends a collection early."""

from __future__ import annotations

import threading
import time
from queue import Queue
from types import SimpleNamespace

from tasks.serve_worker import TokenBudgetLoop

WAIT_S = 0.5  # --max_wait_ms 500: long enough to tell waiting from not on a loaded machine


def api(tokens: int = 10_000) -> SimpleNamespace:
    """What the loop reads of PredictorAPI: every request 3 tokens."""
    return SimpleNamespace(
        max_batch_size=1024,
        max_batch_tokens=tokens,
        batch_timeout=WAIT_S,
        request_timeout=30.0,
        made={},
        length=lambda payload: 3,
    )


def collect(loop: TokenBudgetLoop, queue: Queue, lit_api: SimpleNamespace) -> tuple[list[str], float]:
    start = time.monotonic()
    payloads, timed_out = loop.get_batch_requests(lit_api, queue, None)
    assert not timed_out
    return [payload["text"] for _, _, payload in payloads], time.monotonic() - start


def put(queue: Queue, text: str, queued_at: float) -> None:
    # LitServe's queue item: (response queue id, uid, when the HTTP process queued it, payload)
    queue.put((0, text, queued_at, {"text": text}))


def test_a_lone_request_runs_at_once_and_requests_together_wait_for_company():
    loop, queue, now = TokenBudgetLoop(), Queue(), time.monotonic()
    put(queue, "alone", now - 5.0)
    texts, seconds = collect(loop, queue, api())
    assert texts == ["alone"] and seconds < WAIT_S / 2

    # Two queued 1 ms apart come together: the collection waits for a third, which joins.
    put(queue, "first", now - 2.0)
    put(queue, "second", now - 1.999)
    late = threading.Timer(0.1, lambda: put(queue, "late", time.monotonic()))
    late.start()
    texts, seconds = collect(loop, queue, api())
    late.join()
    assert texts == ["first", "second", "late"] and 0.1 <= seconds < 5 * WAIT_S

    # A request more than the wait after the last one is alone again: no wait.
    time.sleep(0.05)
    put(queue, "later", time.monotonic() + WAIT_S)  # as if it came WAIT_S later
    texts, seconds = collect(loop, queue, api())
    assert texts == ["later"] and seconds < WAIT_S / 2

    # Right after it, a request is together with it: it waits the whole window, then runs alone.
    put(queue, "next", time.monotonic() + WAIT_S + 0.01)
    texts, seconds = collect(loop, queue, api())
    assert texts == ["next"] and seconds >= WAIT_S * 0.9


def test_the_token_budget_ends_a_collection_without_waiting():
    loop, queue, now = TokenBudgetLoop(), Queue(), time.monotonic()
    for i in range(5):
        put(queue, f"r{i}", now - 1.0 + i * 1e-3)  # together
    texts, seconds = collect(loop, queue, api(tokens=9))  # 3 requests of 3 tokens fill it
    assert texts == ["r0", "r1", "r2"] and seconds < WAIT_S / 2
    texts, _ = collect(loop, queue, api(tokens=9))
    assert texts == ["r3", "r4"]
