"""Using a trained model: batched scoring, the loss explained term by term, plots, the consumers of a
reward model reproduced (GRPO, RewardBench, PPO, the pipeline) and the RewardFunction for RL loops.
"""
