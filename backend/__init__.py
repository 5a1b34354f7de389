"""vitscope engine: model zoo, one-pass capture, the paper's analyses, cache and REST API."""

__version__ = "0.1.0"

# Bumped whenever an analysis changes its numbers: part of every cache key.
# 2: odd-grid delta bins as the paper's code, relative distance, the analyses beyond the paper, and each
# model's own preprocessing. 3: the effective rank from a float64 Gram matrix.
ANALYSIS_VERSION = "3"
