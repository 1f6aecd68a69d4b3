"""Data: read example files in any supported format, validate them, split them, tokenize them."""
