"""Sample → input_ids/labels through the base model's own chat template, with a loss mask.

Loss falls on assistant tokens only (unless `train_on_prompt`), and every supervised turn ends
with the template's end-of-turn/EOS token, so a tuned model learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.data.formats import Preference, Sample
from tuneforge.data.tools import apply_template
from tuneforge.data.tools import prepare as prepare_tools
from tuneforge.errors import DataError

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss
    truncated: bool = False

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _assistant_spans(messages: list[dict], tokenizer,
                     tools: list[dict] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """Render the chat and return (text, [(start, end) char spans of each assistant reply]).

    Tool specs and tool turns are rendered by `data.tools.prepare` (as the server renders them), so an
    assistant's tool calls are supervised and tool results are not."""
    messages, kw = prepare_tools(messages, tools, tokenizer)
    render = lambda msgs, gen: tokenizer.apply_chat_template(  # noqa: E731
        msgs, tokenize=False, add_generation_prompt=gen, **kw)
    text = render(messages, False)
    eos = tokenizer.eos_token or ""
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(render(messages[:i], True))
        end = len(render(messages[: i + 1], False))
        if text[:start] != render(messages[:i], True)[:start]:
            raise DataError("chat template is not prefix-stable; cannot locate assistant turns",
                            field="chat_template", code="template")
        # stop the span right after the end-of-turn token: the newline that follows is format
        stop = text.find(eos, start, end) if eos else -1
        spans.append((start, stop + len(eos) if stop >= 0 else end))
    return text, spans


def encode(sample: Sample, tokenizer, *, max_seq_len: int = 2048,
           train_on_prompt: bool = False) -> Encoded:
    """Tokenize one sample; labels mirror input_ids on supervised positions, IGNORE elsewhere."""
    eos_id = tokenizer.eos_token_id
    if sample.messages is None:  # plain text: language modelling on every token
        ids = tokenizer(sample.text or "", add_special_tokens=False)["input_ids"]
        ids = list(ids) + ([eos_id] if eos_id is not None else [])
        labels = list(ids)
    else:
        if tokenizer.chat_template is None:
            raise DataError("the base model's tokenizer has no chat template", field="chat_template",
                            code="template")
        text, spans = _assistant_spans(sample.messages, tokenizer, sample.tools)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = []
        for tid, (s, e) in zip(ids, enc["offset_mapping"]):
            inside = any(a <= s < b for a, b in spans) and e > s
            labels.append(tid if (train_on_prompt or inside) else IGNORE)
        if spans and eos_id is not None and eos_id not in [ids[i] for i, l in enumerate(labels) if l != IGNORE]:
            ids.append(eos_id)  # the template did not close the turn with EOS: add it so the model stops
            labels.append(eos_id)
    truncated = len(ids) > max_seq_len
    return Encoded(ids[:max_seq_len], labels[:max_seq_len], truncated)


@dataclass
class EncodedPair:
    """A preference pair as two token sequences, prompt + chosen and prompt + rejected, each with its loss mask on
    its answer only (earlier assistant turns in a multi-turn prompt are context, not supervised)."""

    chosen: Encoded
    rejected: Encoded
    prompt_len: int  # tokens of the shared prompt (both sequences start with the same prompt_len ids)

    @property
    def prompt_ids(self) -> list[int]:
        return self.chosen.input_ids[:self.prompt_len]

    @property
    def truncated(self) -> bool:
        return self.chosen.truncated or self.rejected.truncated

    @property
    def supervised(self) -> bool:
        """Both answers keep at least one supervised token after truncation (else the pair cannot train)."""
        return bool(self.chosen.n_supervised and self.rejected.n_supervised)


def _encode_answer(prompt: list[dict], answer: list[dict], tokenizer, max_seq_len: int) -> tuple[Encoded, int]:
    messages = prompt + answer
    text, spans = _assistant_spans(messages, tokenizer)
    spans = spans[sum(m["role"] == "assistant" for m in prompt):]  # the answer's turns only
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [tid if any(a <= s < b for a, b in spans) and e > s else IGNORE
              for tid, (s, e) in zip(ids, enc["offset_mapping"])]
    eos_id = tokenizer.eos_token_id
    if eos_id is not None and eos_id not in [ids[i] for i, lab in enumerate(labels) if lab != IGNORE]:
        ids.append(eos_id)  # as in `encode`: the model must learn to stop after the preferred answer too
        labels.append(eos_id)
    first = next((i for i, lab in enumerate(labels) if lab != IGNORE), len(ids))
    return Encoded(ids[:max_seq_len], labels[:max_seq_len], len(ids) > max_seq_len), first


def encode_preference(pair: Preference, tokenizer, *, max_seq_len: int = 2048) -> EncodedPair:
    """Tokenize a preference pair with the base's chat template; truncation cuts the answers' ends (the prompt is
    kept whole when it fits), and a pair whose answer is cut entirely is not `supervised`."""
    if tokenizer.chat_template is None:
        raise DataError("the base model's tokenizer has no chat template", field="chat_template", code="template")
    chosen, pc = _encode_answer(pair.prompt, pair.chosen, tokenizer, max_seq_len)
    rejected, pr = _encode_answer(pair.prompt, pair.rejected, tokenizer, max_seq_len)
    return EncodedPair(chosen, rejected, min(pc, pr))


def render_prompt(sample_or_messages, tokenizer) -> str:
    """The text a model sees before it answers: the prompt turns through the chat template with the generation
    prompt added (plain text as is). Eval, serving checks and export verification all render prompts here."""
    tools = None
    if isinstance(sample_or_messages, Sample):
        if sample_or_messages.messages is None:
            return sample_or_messages.text or ""
        msgs, tools = sample_or_messages.prompt_messages, sample_or_messages.tools
    else:
        msgs = sample_or_messages
    return apply_template(tokenizer, msgs, tools, add_generation_prompt=True)
