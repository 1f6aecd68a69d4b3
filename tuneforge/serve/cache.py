"""A bounded response cache for deterministic requests (temperature 0: same model, prompt and parameters).

Keys hold everything that changes a greedy answer; values are the finished choices. Least recently used
entries go first once `max_entries` is reached. Thread-safe; `hits`/`misses` feed /metrics.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedChoice:
    text: str
    finish_reason: str
    completion_tokens: int


class ResponseCache:
    def __init__(self, max_entries: int = 1024):
        self.max_entries = max_entries
        self._data: OrderedDict[tuple, tuple[CachedChoice, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model: str, prompt_ids: list[int], *, max_tokens: int, stop: list[str], n: int,
            ignore_eos: bool, min_tokens: int) -> tuple:
        return (model, tuple(prompt_ids), max_tokens, tuple(stop), n, ignore_eos, min_tokens)

    def get(self, key: tuple) -> tuple[CachedChoice, ...] | None:
        if self.max_entries <= 0:
            return None
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return hit

    def put(self, key: tuple, choices: tuple[CachedChoice, ...]) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._data[key] = choices
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
