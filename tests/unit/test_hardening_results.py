"""A result that holds NaN or Inf is a clear 409, never a 500 (issue 10, item 7)."""

from __future__ import annotations

import math

import pytest

from backend.errors import NonFiniteResult
from backend.service.render import json_object_view


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_in_a_json_result_is_a_409(value: float) -> None:
    with pytest.raises(NonFiniteResult, match="JSON cannot carry") as info:
        json_object_view({"layers": [{"nmi": [0.5, value]}]})
    assert info.value.status == 409 and info.value.code == "non_finite_result"
    assert json_object_view({"layers": [{"nmi": [0.5, None]}]}).body == b'{"layers":[{"nmi":[0.5,null]}]}'
