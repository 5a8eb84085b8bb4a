"""NeMo Gym's `nemo_gym.reward_profile` names for environments that import them (see nemo_gym.compat.metrics)."""

from nemo_gym.compat.metrics import (
    AggregateMetrics,
    AggregateMetricsMixin,
    AggregateMetricsRequest,
    add_avg_sample_std_dev,
    compute_aggregate_metrics,
    compute_pass_majority_metrics,
    compute_subset_metrics,
    highest_k_metrics,
)

__all__ = [
    "AggregateMetrics",
    "AggregateMetricsMixin",
    "AggregateMetricsRequest",
    "add_avg_sample_std_dev",
    "compute_aggregate_metrics",
    "compute_pass_majority_metrics",
    "compute_subset_metrics",
    "highest_k_metrics",
]
