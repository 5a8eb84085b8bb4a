"""What crosses between servers and into files: Responses <-> Chat Completions, usage sums, the record types."""
