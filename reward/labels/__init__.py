"""Every kind of preference label beyond "A beats B" (issue #31), each to become an objective behind the
core's `Objective` seam (reward/loss.py). What is here so far, each module pure and tested:

    loss.py      the losses: ratings regression (+ the pairs ratings imply), strength-scaled Bradley–Terry,
                 masked multi-attribute regression and the combined reward (docs/loss.md §10-§12)
    rows.py      which label kind a file holds; every row checked with row and field; the labels in a line
    metrics.py   RMSE, Pearson, Spearman and implied-pair accuracy of ratings; accuracy by strength bucket

reward/presets/graded.py generates a task for each. Not yet wired: the training option, the collated
batches and the evaluation hook (train.py does not read these rows yet).
"""
