"""Training: the SFT recipe (sft.py) and its parts (packing, loss, checkpoint)."""
