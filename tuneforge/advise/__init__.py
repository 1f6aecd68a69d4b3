"""Before training: should this data be fine-tuned at all (`advisor`), and what will it cost (`cost`)."""
