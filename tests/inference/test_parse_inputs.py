"""The v1 body reader's boolean refusal, whatever the body's size or where the boolean sits
(the scan runs only when the body can hold one: app/inference/service.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.inference.errors import InvalidTensor
from app.inference.service import _parse_inputs

IMAGE = [[[0.0625 * ((i + j + k) % 16) for k in range(28)] for j in range(28)] for i in range(3)]


def _with(value: Any, at: tuple[int, int, int]) -> list[Any]:
    image = json.loads(json.dumps(IMAGE))
    image[at[0]][at[1]][at[2]] = value
    return image


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("at", [(0, 0, 0), (1, 14, 3), (2, 27, 27)])
def test_a_boolean_anywhere_in_a_large_body_is_refused(
    value: bool, at: tuple[int, int, int]
) -> None:
    body = json.dumps({"inputs": _with(value, at)}).encode()
    with pytest.raises(InvalidTensor, match="boolean"):
        _parse_inputs(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs":[1,true]}',
        b'{"inputs": [[false]]}',
        b'{"note": "x", "inputs": [0.5, true]}',
    ],
)
def test_compact_and_nested_booleans_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidTensor, match="boolean"):
        _parse_inputs(body)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"inputs": IMAGE}).encode(),
        b'{"inputs": [1e-05, 2E+3, -0.5, 7]}',
        # the letters of a boolean elsewhere in the body only cost the full scan
        b'{"inputs": [1, 2], "label": "true or false"}',
    ],
)
def test_numbers_are_read_as_numbers(body: bytes) -> None:
    assert _parse_inputs(body) == json.loads(body)["inputs"]
