"""vitscope engine: model zoo, one-pass capture, the paper's analyses, cache and REST API."""

__version__ = "0.1.0"

# Bumped whenever an analysis changes its numbers: part of every cache key.
ANALYSIS_VERSION = "1"
