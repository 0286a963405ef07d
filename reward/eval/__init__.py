"""Using a trained model: batched scoring, the loss explained term by term, plots, the consumers of a
reward model reproduced (GRPO, RewardBench, PPO, the pipeline), the RewardFunction for RL loops and
the model card that tells each consumer how to call the model.
"""
