"""tuneforge: from a pile of examples to a fine-tuned, evaluated, exported LLM.

Run `tuneforge --help`; the library mirrors the CLI (data, models, train, export, eval).
"""

__version__ = "0.1.0"
