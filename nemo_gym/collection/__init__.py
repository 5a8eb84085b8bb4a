"""The collection engine: rows in, rollouts driven concurrently, records out, resumable, with metrics."""
