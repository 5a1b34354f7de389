"""The small exception tree of vitscope. Every message says what was wrong and what is allowed."""


class VitscopeError(Exception):
    """Base class; `code` is a stable machine-readable name used by the API's error JSON."""

    code = "vitscope_error"


class ModelNotFound(VitscopeError):
    code = "unknown_model"


class WeightsUnavailable(VitscopeError):
    """The model is known but its weights are not on disk (and cannot or may not be downloaded)."""

    code = "weights_unavailable"


class BadCheckpoint(VitscopeError):
    """A checkpoint file does not have the layout its format promises."""

    code = "bad_checkpoint"


class BadImage(VitscopeError):
    code = "bad_image"


class BadRequest(VitscopeError):
    """An argument is out of range (layer, head, query, ...)."""

    code = "bad_request"


class NotFound(VitscopeError):
    code = "not_found"


class MethodNotAllowed(VitscopeError):
    code = "method_not_allowed"


class PayloadTooLarge(VitscopeError):
    code = "too_large"


class DownloadsDisabled(VitscopeError):
    code = "downloads_disabled"


class ClassModeRefused(VitscopeError):
    """Class mode (VITSCOPE_CLASS_MODE) is read-only: only the gallery's images, no model downloads."""

    code = "class_mode"
