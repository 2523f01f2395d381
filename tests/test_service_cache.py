"""The page's memo table: one computation per key, even with concurrent users; LRU bound."""

from __future__ import annotations

import threading
import time

from taskarith_core.service.cache import Memo


def test_concurrent_callers_share_one_computation():
    memo: Memo[int] = Memo("x")
    calls = []

    def compute() -> int:
        calls.append(1)
        time.sleep(0.05)
        return 42

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(memo.get("k", compute))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [42] * 8
    assert len(calls) == 1
    assert memo.counter["x"] == 1


def test_lru_bound_evicts_the_oldest():
    memo: Memo[str] = Memo("y", maxsize=2)
    for key in ("a", "b", "c"):
        memo.get(key, lambda key=key: key.upper())
    assert "a" not in memo and "b" in memo and "c" in memo
    memo.get("b", lambda: "never")
    memo.get("d", lambda: "D")
    assert "b" in memo and "c" not in memo
    assert len(memo) == 2
