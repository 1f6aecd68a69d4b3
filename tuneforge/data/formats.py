"""Example formats (prompt/completion, chat, alpaca, text, classification) mapped to one `Sample`.

`detect_format(record)` names the format of one parsed record; `to_sample` converts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sample:
    """One training example in canonical form.

    `messages` is a chat (OpenAI shape: role/content dicts) for every format except plain
    text, which has `text` instead and is trained as language modelling on all its tokens.
    `label` is set for classification examples (the assistant's answer is the label).
    `where` is "file:line" so later errors can point at the source row.
    """

    messages: list[dict] | None = None
    text: str | None = None
    label: str | None = None
    format: str = ""
    where: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[dict]:
        """Messages up to (not including) the last assistant turn: what a model is asked."""
        msgs = self.messages or []
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=len(msgs))
        return msgs[:last]

    @property
    def reference(self) -> str | None:
        """The last assistant message: the expected answer for evaluation."""
        for m in reversed(self.messages or []):
            if m.get("role") == "assistant":
                return m.get("content")
        return None
