"""From rollout files to training data: read and group records by row, profile rewards per row, export SFT / DPO /
RL datasets."""
