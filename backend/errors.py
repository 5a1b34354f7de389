"""The small exception tree of vitscope. Every message says what was wrong and what is allowed.

Each class carries its HTTP ``status`` (the API answers with it) and its stable ``code`` (the error JSON's
machine-readable name); ``headers`` adds response headers where a class has some (``Retry-After``).
"""

from __future__ import annotations


class VitscopeError(Exception):
    """Base class; `code` is a stable machine-readable name used by the API's error JSON."""

    code = "vitscope_error"
    status = 400

    @property
    def headers(self) -> dict[str, str]:
        return {}


class NotFound(VitscopeError):
    code = "not_found"
    status = 404


class ModelNotFound(VitscopeError):
    code = "unknown_model"
    status = 404


class WeightsUnavailable(VitscopeError):
    """The model is known but its weights are not on disk (and cannot or may not be downloaded)."""

    code = "weights_unavailable"
    status = 409


class BadCheckpoint(VitscopeError):
    """A checkpoint file does not have the layout its format promises."""

    code = "bad_checkpoint"
    status = 409


class NonFiniteResult(BadCheckpoint):
    """A model computed NaN or Inf (finite weights can overflow), or a result holds one: never a 500."""

    code = "non_finite_result"


class NonFiniteWeights(BadCheckpoint):
    """NaN or Inf in a weights file, refused at import and at load."""

    code = "non_finite_weights"


class RandomInitDisabled(WeightsUnavailable):
    """A timm name without weights would be random numbers; refused unless VITSCOPE_ALLOW_RANDOM_INIT."""

    code = "random_init_disabled"


class BadImage(VitscopeError):
    code = "bad_image"


class BadRequest(VitscopeError):
    """An argument is out of range (layer, head, query, ...)."""

    code = "bad_request"


class ModelTooLarge(BadRequest):
    """The model would not fit the model memory bound (VITSCOPE_MODEL_MEMORY_BYTES), known before building."""

    code = "model_too_large"


class UnsupportedArchitecture(BadRequest):
    """The capture cannot trace this architecture (e.g. parallel blocks without one ``attn``)."""

    code = "unsupported_architecture"


class MethodNotAllowed(VitscopeError):
    code = "method_not_allowed"
    status = 405


class PayloadTooLarge(VitscopeError):
    code = "too_large"
    status = 413


class DownloadsDisabled(VitscopeError):
    code = "downloads_disabled"
    status = 403


class ClassModeRefused(VitscopeError):
    """Class mode (VITSCOPE_CLASS_MODE) is read-only: only the gallery's images, no model downloads."""

    code = "class_mode"
    status = 403


# ---------------------------------------------------------------------------------------------- the runner
class RunnerError(VitscopeError):
    code = "runner_error"
    status = 503


class QueueFull(RunnerError):
    """Too many requests wait for this device; retry after ``retry_after`` seconds (503)."""

    code = "busy"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RequestTimeout(RunnerError):
    """The request waited longer than the per-request timeout (504)."""

    code = "timeout"
    status = 504


class RunnerStopped(RunnerError):
    code = "shutting_down"
