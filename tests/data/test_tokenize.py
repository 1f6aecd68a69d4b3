"""Tokenization: the model's own chat template, loss on the answer only, and every answer ends with EOS."""

from tuneforge.data.formats import Sample
from tuneforge.data.tokenize import IGNORE, encode
from tuneforge.models.tiny import tiny_tokenizer

CHAT = Sample(messages=[{"role": "system", "content": "be terse"}, {"role": "user", "content": "Show all users"},
                        {"role": "assistant", "content": "SELECT * FROM users;"},
                        {"role": "user", "content": "and products?"},
                        {"role": "assistant", "content": "SELECT * FROM products;"}])


def _supervised_text(tok, e):
    return tok.decode([t for t, lab in zip(e.input_ids, e.labels) if lab != IGNORE])


def test_loss_falls_only_on_assistant_turns_each_closed_by_eos():
    tok = tiny_tokenizer()
    e = encode(CHAT, tok)
    assert _supervised_text(tok, e) == "SELECT * FROM users;<|im_end|>SELECT * FROM products;<|im_end|>"
    assert tok.decode(e.input_ids) == tok.apply_chat_template(CHAT.messages, tokenize=False)


def test_train_on_prompt_supervises_every_token():
    tok = tiny_tokenizer()
    e = encode(CHAT, tok, train_on_prompt=True)
    assert e.labels == e.input_ids


def test_template_without_eos_gets_one_appended():
    tok = tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" \
                        "{% if add_generation_prompt %}assistant: {% endif %}"
    e = encode(Sample(messages=CHAT.messages[1:3]), tok)
    assert e.input_ids[-1] == tok.eos_token_id and e.labels[-1] == tok.eos_token_id


def test_plain_text_is_language_modelling_ending_in_eos():
    tok = tiny_tokenizer()
    e = encode(Sample(text="hello"), tok)
    assert e.labels == e.input_ids and e.input_ids[-1] == tok.eos_token_id


def test_truncation_is_reported():
    tok = tiny_tokenizer()
    e = encode(CHAT, tok, max_seq_len=16)
    assert e.truncated and len(e.input_ids) == 16
