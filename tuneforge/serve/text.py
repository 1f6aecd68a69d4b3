"""Token ids → text deltas for streaming, with OpenAI `stop` sequences (cut before the stop, never sent).

Decoding the whole answer each time and sending what is new keeps multi-byte characters and tokenizer
whitespace rules right; a delta is held back while it ends in an incomplete character or could be the start
of a stop sequence.
"""

from __future__ import annotations

import functools


class TextStream:
    """Feed tokens with `push`; each call returns the text that is safe to send now."""

    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer, self.stop = tokenizer, [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded text already returned
        self.stopped = False  # a stop sequence was found: the caller stops generating
        self._hold = max((len(s) for s in self.stop), default=1) - 1

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token_id)
        text = self._text()
        for s in self.stop:
            at = text.find(s, max(0, self.sent - len(s)))
            if at != -1:
                self.stopped = True
                return self._take(text, at)
        end = len(text)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            end = len(text.rstrip("\ufffd"))
        return self._take(text, max(self.sent, end - self._hold))

    def flush(self) -> str:
        """What is left when generation ends (held-back characters that did not become a stop)."""
        if self.stopped:
            return ""
        return self._take(self._text(), None)

    def _take(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else end
        out = text[self.sent:end]
        self.sent = max(self.sent, end)
        return out

    @property
    def text(self) -> str:
        """The answer so far (up to a stop sequence)."""
        full = self._text()
        if self.stopped:
            return full[:self.sent]
        return full


@functools.cache
def _byte_of() -> dict[str, int]:
    """The byte-level BPE alphabet, character → byte; built once per process, not per request (a request that
    asks for no logprobs still creates a TokenText: building the map each time was ~8% of the server's event-loop
    time at 16 streaming clients)."""
    try:
        from transformers.convert_slow_tokenizer import bytes_to_unicode
    except ImportError:  # pragma: no cover - very old transformers
        return {}
    return {c: b for b, c in bytes_to_unicode().items()}


class TokenText:
    """A token id as logprobs report it: its text and its exact bytes (`bytes` in OpenAI's logprobs).

    Byte-level BPE tokenizers (GPT-2 style, SmolLM2's) spell each byte as one printable character; undoing that
    map gives the token's real bytes, so a multi-byte character split over tokens still has each token's part.
    Other tokenizers fall back to the UTF-8 of the decoded token."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, tuple[str, list[int]]] = {}
        self._byte_of = _byte_of()

    def __call__(self, token_id: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token_id)
        if hit is None:
            piece = self.tokenizer.convert_ids_to_tokens(int(token_id)) or ""
            if piece and all(ch in self._byte_of for ch in piece):
                raw = bytes(self._byte_of[ch] for ch in piece)
                hit = (raw.decode("utf-8", errors="replace"), list(raw))
            else:
                text = self.tokenizer.decode([int(token_id)])
                hit = (text, list(text.encode("utf-8")))
            self._cache[token_id] = hit
        return hit
