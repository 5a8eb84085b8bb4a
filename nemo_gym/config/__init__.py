"""Configuration: files, env.yaml and overrides merged and interpolated, validated instances, secrets to redact."""
