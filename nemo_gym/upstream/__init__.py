"""Calling a model endpoint: errors, retries, fallbacks, rate limits, OpenRouter's checks, the catalog and cost."""
