"""Keeping a run alive: checkpoints it can resume from exactly, written atomically; the output-dir lock;
SIGINT/SIGTERM handling.
"""
