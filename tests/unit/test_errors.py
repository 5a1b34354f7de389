"""Each error class carries its HTTP status; the API answers with it (no ordered list of classes)."""

from __future__ import annotations

import json

import pytest

from backend import errors as E
from backend.api.errors import vitscope_error_response


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (E.BadRequest, 400),
        (E.BadImage, 400),
        (E.NotFound, 404),
        (E.ModelNotFound, 404),
        (E.MethodNotAllowed, 405),
        (E.WeightsUnavailable, 409),
        (E.BadCheckpoint, 409),
        (E.PayloadTooLarge, 413),
        (E.DownloadsDisabled, 403),
        (E.ClassModeRefused, 403),
        (E.RunnerError, 503),
        (E.RunnerStopped, 503),
        (E.RequestTimeout, 504),
    ],
)
def test_status_and_body(cls: type[E.VitscopeError], status: int) -> None:
    response = vitscope_error_response(cls("what was wrong, and what is allowed"))
    assert response.status_code == status
    body = json.loads(bytes(response.body))
    assert body == {"error": {"code": cls.code, "message": "what was wrong, and what is allowed"}}
    assert "retry-after" not in response.headers


def test_queue_full_says_when_to_retry() -> None:
    response = vitscope_error_response(E.QueueFull("busy", retry_after=7))
    assert response.status_code == 503 and response.headers["retry-after"] == "7"


def test_the_runner_raises_the_same_classes() -> None:
    from backend import runner

    assert runner.QueueFull is E.QueueFull and runner.RequestTimeout is E.RequestTimeout
