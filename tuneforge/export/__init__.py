"""Export a run: merged transformers model (merge.py); later int8/int4, ONNX, GGUF."""
