"""Whole datasets through the analyses: image sources, the CPU stage, the model workers, the Parquet store,
and two engines (in-process, or Ray tasks and actors) behind one driver (``pipeline.analyze_dataset``).

Nothing here imports torch or ray at package import: ``vitscope --help`` stays fast.
"""
