"""Prompt tuning: learn `num_virtual_tokens` soft-prompt embeddings; the model's weights stay frozen.

Minimal parameters (<0.1%), fast to try; cannot be merged into weights, so transformers pipeline,
vLLM and GGUF cannot serve it — use PeftModel.from_pretrained / tuneforge generate.
"""

from __future__ import annotations


def prepare(model, cfg):
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    kw = dict(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens)
    if cfg.prompt_tuning_init_text:
        kw.update(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=cfg.prompt_tuning_init_text,
                  tokenizer_name_or_path=model.name_or_path)
    else:
        kw.update(prompt_tuning_init=PromptTuningInit.RANDOM)
    # virtual tokens go through peft's forward: train.loss sees a prompt-learning model and takes its generic path
    return get_peft_model(model, PromptTuningConfig(**kw))
