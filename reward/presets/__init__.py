"""Offline presets: the `tiny` model and tokenizer, the generated preference tasks, and the tour of one
optimizer step of the default run built from them (`python -m reward.presets.tour`)."""
