"""Training: the recipe (recipe.py: one loop for every objective), the objectives it runs (objectives/: sft, ...)
and its parts (packing, loss, checkpoint, distributed, early stopping, cross-validation, lineage, trackers)."""
