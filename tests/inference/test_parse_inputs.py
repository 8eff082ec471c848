"""The v1 body reader's boolean refusal, whatever the body's size or where the boolean sits
(the scan runs only when the body can hold one: app/inference/service.py), and the decoder's
numbers-only fast path, which must answer exactly as the general one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.catalog.records import TensorSpec
from app.catalog.service import shipped_snapshot
from app.config import shipped_models_dir
from app.errors import AppError
from app.inference.errors import InvalidTensor
from app.inference.predictor import Predictor
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
    assert _parse_inputs(body)[0] == json.loads(body)["inputs"]


@pytest.mark.parametrize(
    ("body", "numbers_only"),
    [
        (json.dumps({"inputs": IMAGE}).encode(), True),
        (b'{"inputs": [1e-05, 2E+3, -0.5, 7]}', True),
        (b'{"inputs": [[1, 2], [3]]}', True),  # ragged, but only numbers: the decoder says
        (b'{"inputs": [1, null]}', False),
        (b'{"inputs": [1, "2"]}', False),
        (b'{"inputs": [1, 2], "label": "x"}', False),
        (b'{"inputs": [1, 2], "note": "true or false"}', False),
    ],
)
def test_a_body_says_whether_it_can_hold_only_numbers(body: bytes, numbers_only: bool) -> None:
    assert _parse_inputs(body)[1] is numbers_only


def _predictor(shape: tuple[int, ...], value_range: tuple[float, float] | None) -> Predictor:
    spec = TensorSpec(name="x", shape=shape, dtype="float32", range=value_range)
    card = replace(
        shipped_snapshot(shipped_models_dir()).cards[0],
        inputs=(spec,),
        outputs=(TensorSpec(name="y", shape=(1,), dtype="float32"),),
        labels=None,
    )
    return Predictor(Path("unused.pt"), card, max_batch_items=4)  # decode only: never loaded


def _answer(predictor: Predictor, inputs: Any, numbers_only: bool) -> Any:
    try:
        batch = predictor.decode(inputs, numbers_only=numbers_only)
    except AppError as exc:
        return type(exc).__name__, str(exc), exc.details
    return batch.dtype, batch.tolist()


@pytest.mark.parametrize(
    "inputs",
    [
        [0.5, 0.25],  # one item
        [[0.5, 0.25], [1, 0]],  # a batch, ints among floats
        [[0.5, 0.25], [1]],  # ragged
        [[[0.5, 0.25]]],  # one level too deep
        [0.5, 0.25, 0.75],  # wrong item shape
        [],  # nothing
        [[0.0, 0.0]] * 5,  # over the batch limit
        [0.5, 1e39],  # overflows float32: infinite
        [0.5, 2.0],  # outside the declared range
        [-3.0, 0.5],
        7,  # a bare number
        [0.5, 1e30],
        [0.5, {}],  # no quote, no letter: the fast path's guess, refused by numpy
        [0.5, []],
    ],
)
def test_the_fast_path_answers_as_the_general_one(inputs: Any) -> None:
    predictor = _predictor((2,), (-1.0, 1.5))
    assert _answer(predictor, inputs, True) == _answer(predictor, inputs, False)


def test_the_fast_path_reads_any_json_integer_as_a_number() -> None:
    # orjson keeps integers up to 2**64 - 1 as ints; beside a negative one numpy's general
    # path makes an object array ("mixed values"), the fast path reads both as float32.
    inputs = orjson.loads(b"[-1, 18446744073709551615]")
    with pytest.raises(InvalidTensor, match="declared range"):
        _predictor((2,), (-1.0, 1.5)).decode(inputs, numbers_only=True)


def test_nan_anywhere_is_refused_on_both_paths() -> None:
    predictor = _predictor((3,), None)
    for numbers_only in (True, False):
        for at in range(3):
            item = [0.0, 0.0, 0.0]
            item[at] = float("nan")
            with pytest.raises(InvalidTensor, match="finite"):
                predictor.decode([item], numbers_only=numbers_only)
