"""Studies and comparisons that train models (benchmarks/ measures speed and cost only)."""
