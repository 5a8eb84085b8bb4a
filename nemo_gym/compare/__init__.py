"""Comparing models on one dataset: the plan, the statistics, the report."""
