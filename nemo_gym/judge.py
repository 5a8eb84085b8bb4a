"""NeMo Gym's `nemo_gym.judge`, provided by `nemo_gym.compat` (see docs/porting_nemo_gym_environments.md)."""

from nemo_gym.compat.judge import JudgeError, call_judge, judge_failsafe, reraise_judge_errors

__all__ = ["JudgeError", "call_judge", "judge_failsafe", "reraise_judge_errors"]
