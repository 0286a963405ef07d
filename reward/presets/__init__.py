"""Offline presets: the `tiny` model and tokenizer, and the generated preference tasks."""
