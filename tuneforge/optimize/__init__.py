"""Smaller, faster models from a trained run: pruning (prune.py) and distillation (distill.py); measure.py compares."""
