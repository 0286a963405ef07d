"""How one run is driven, around the recipe's stages: preflight (every check before anything loads), what the
loop plugs in chosen from the options (parts.py), checkpoints it can resume from exactly, written
atomically, and its state (state.py), the output-dir lock, SIGINT/SIGTERM handling, the report, and the
train command.
"""
