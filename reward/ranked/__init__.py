"""Rankings: K responses per prompt, scored or ordered (pairs are K = 2).

rows.py     ranked rows as their comparisons (ties counted) and grouped back by prompt; held-out metrics
loss.py     all-pairs Bradley–Terry (ties skipped or toward ½, per comparison or per prompt), Plackett–Luce
collate.py  a micro-batch of prompts: one packed segment [P | R1' | ... | RK'] per prompt (or padded)
"""
