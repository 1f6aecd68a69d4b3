"""What a user loads outside tuneforge answers like `tuneforge generate` and like what `eval` scored:
the merged model's generation_config.json carries the decoding, the saved chat template carries the format."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

PROMPTS = ["add 3 and 4", "add 10 and 25", "Translate to SQL: Show all users"]


def _tuneforge_answers(run) -> list[str]:
    from tuneforge.eval.harness import generate, load_for_inference
    from tuneforge.run import read_run

    loaded = load_for_inference(run)
    outs, _ = generate(loaded, [[{"role": "user", "content": p}] for p in PROMPTS],
                       max_new_tokens=read_run(run).max_new_tokens, batch_size=1)  # what `generate RUN` uses
    return outs


def test_merged_model_records_greedy_decoding(tiny_lora_run):
    gc = json.loads((tiny_lora_run / "model" / "generation_config.json").read_text())
    data = json.loads((tiny_lora_run / "data.json").read_text())
    assert gc["do_sample"] is False and gc["max_new_tokens"] == max(32, 2 * data["max_answer_tokens"])
    assert "temperature" not in gc or gc["temperature"] is None


def test_pipeline_with_no_decoding_arguments_gives_tuneforge_generate_answers(tiny_lora_run):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(tiny_lora_run / "model"))
    got = [pipe([{"role": "user", "content": p}])[0]["generated_text"][-1]["content"].strip() for p in PROMPTS]
    again = [pipe([{"role": "user", "content": p}])[0]["generated_text"][-1]["content"].strip() for p in PROMPTS]
    assert got == _tuneforge_answers(tiny_lora_run)
    assert again == got  # not sampled


def test_langchain_chat_path_gives_tuneforge_generate_answer(tiny_lora_run):
    from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline

    llm = HuggingFacePipeline.from_model_id(model_id=str(tiny_lora_run / "model"), task="text-generation",
                                            pipeline_kwargs={"return_full_text": False})
    chat = ChatHuggingFace(llm=llm)
    assert [chat.invoke(p).content.strip() for p in PROMPTS] == _tuneforge_answers(tiny_lora_run)


def test_the_guides_langchain_snippet_still_runs(tiny_lora_run):
    from langchain_huggingface import HuggingFacePipeline

    llm = HuggingFacePipeline.from_model_id(model_id=str(tiny_lora_run / "model"), task="text-generation")
    assert isinstance(llm.invoke("Your prompt here"), str)


def test_run_files_are_readable_by_others(tiny_lora_run):
    for f in ("adapter/adapter_model.safetensors", "model/model.safetensors", "run.json", "README.md"):
        mode = stat.S_IMODE(os.stat(tiny_lora_run / f).st_mode)
        assert mode == 0o644, (f, oct(mode))


def test_model_card_shows_the_chat_aware_paths(tiny_lora_run):
    card = (tiny_lora_run / "README.md").read_text()
    assert "ChatHuggingFace" in card and '"role": "user"' in card


def test_import_transformers_writes_nothing_to_stderr():
    r = subprocess.run([sys.executable, "-c", "import transformers"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
