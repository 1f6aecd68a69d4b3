"""Base models: resolve `--base` (alias, local dir, hub id, .gguf) to a transformers model + tokenizer."""
