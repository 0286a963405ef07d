"""Every kind of preference label beyond "A beats B" (issue #31), each an objective behind the core's
`Objective` seam (reward/loss.py), plugged in by the recipe (reward/run/rows.py, reward/run/parts.py):

    rows.py        which label kind a file holds; every row checked with row and field; the labels in a line
    loss.py        the losses: ratings regression (+ the pairs ratings imply, one divisor N: the rated
                   completions in the step) and `RegressionObjective`, strength-scaled Bradley–Terry,
                   masked multi-attribute regression and the combined reward (docs/loss.md §10-§12)
    metrics.py     RMSE, Pearson, Spearman and implied-pair accuracy of ratings; accuracy by strength bucket
    rated.py       rated completions {"prompt"?, "completion", "score"} as training reads them: the `rated`
                   format (reward/data.py `RowFormat`), grouped by prompt, tokenized; the training ratings'
                   μ and σ, saved with the model as config.json `reward_ratings`
    evaluation.py  held-out evaluation of rated rows: the regression loss, implied-pair accuracy, RMSE on
                   the rating scale, Pearson and Spearman (eval_rmse, eval_pearson, ...)
    strength.py    pairs with a `strength` column as training reads them (--strength_as weight | margin |
                   ignore): the core pair path sees only a per-pair weight or margin; held-out accuracy per
                   level (eval_accuracy_strength_1, ...)

Wired into training: strength pairs and rated completions (a regression reward model, `--dataset_name
ratings.jsonl`, --rating_standardize, --rating_pair_weight; docs/training.md). Not yet: several attributes
(a num_labels=A head): `attribute_regression_loss` and `combined_reward` exist and are tested, but train.py
and score.py do not read a `scores` {attribute: rating} file. reward/presets/graded.py generates a task for
ratings and for strength.
"""
