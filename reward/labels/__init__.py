"""Every kind of preference label beyond "A beats B" (issue #31), each to become an objective behind the
core's `Objective` seam (reward/loss.py). What is here so far, each module pure and tested:

    loss.py      the losses: ratings regression (+ the pairs ratings imply), strength-scaled Bradley–Terry,
                 masked multi-attribute regression and the combined reward (docs/loss.md §10-§12)
    rows.py      which label kind a file holds; every row checked with row and field; the labels in a line
    metrics.py   RMSE, Pearson, Spearman and implied-pair accuracy of ratings; accuracy by strength bucket

    strength.py  pairs with a `strength` column as training reads them (--strength_as weight | margin | ignore):
                 the recipe calls it; the core pair path sees only a per-pair weight or margin

reward/presets/graded.py generates a task for each. Not yet wired into training: rated completions
(regression) and several attributes.
"""
