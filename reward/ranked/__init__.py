"""Rankings: K responses per prompt, scored or ordered (pairs are K = 2).

rows.py   ranked rows as their comparisons (ties counted), per-prompt held-out metrics
loss.py   all-pairs Bradley–Terry (ties skipped or toward ½, per comparison or per prompt), Plackett–Luce
"""
