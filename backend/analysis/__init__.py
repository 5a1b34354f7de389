"""The paper's analyses (ANALYSES.md) as pure functions of tensors: no I/O, no globals."""

from backend.analysis._common import AnalysisArgumentError
from backend.analysis.attention import (
    DISTANCE_EPS,
    ENTROPY_EPS,
    NMI_EPS,
    AttentionMetrics,
    attention_entropy,
    attention_metrics,
    attention_nmi,
    attention_rollout,
    head_mean,
    mean_attention_distance,
    patch_attention,
    pixel_distances,
    query_index,
    query_map,
    rollout_query_map,
)
from backend.analysis.spectrum import (
    AMPLITUDE_EPS,
    half_diagonal_delta,
    half_diagonal_frequencies,
    high_frequency_delta,
    log_amplitude_spectrum,
)
from backend.analysis.summary import compute_metrics, layer_summary
from backend.analysis.tokens import (
    movement_coherence,
    movement_projection,
    pca_2d,
    singular_values,
    tsne_2d,
)

__all__ = [
    "AMPLITUDE_EPS",
    "DISTANCE_EPS",
    "ENTROPY_EPS",
    "NMI_EPS",
    "AnalysisArgumentError",
    "AttentionMetrics",
    "attention_entropy",
    "attention_metrics",
    "attention_nmi",
    "attention_rollout",
    "compute_metrics",
    "half_diagonal_delta",
    "half_diagonal_frequencies",
    "head_mean",
    "high_frequency_delta",
    "layer_summary",
    "log_amplitude_spectrum",
    "mean_attention_distance",
    "movement_coherence",
    "movement_projection",
    "patch_attention",
    "pca_2d",
    "pixel_distances",
    "query_index",
    "query_map",
    "rollout_query_map",
    "singular_values",
    "tsne_2d",
]
