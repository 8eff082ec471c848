"""Open Inference Protocol V2 tensors: decoding a request body (JSON, or the
``binary_tensor_data`` extension) into the model's batch, and encoding its outputs.

Numeric datatypes FP16/32/64, INT8-64 and UINT8-64 are accepted and converted to the model's
float32; BOOL, BYTES and BF16 are refused. Every problem is a :class:`V2BadRequest` (400).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from starlette.responses import Response

from app.errors import BadRequest
from app.inference.predictor import Array
from app.inference.registry import ServedModel

HEADER_LENGTH = "Inference-Header-Content-Length"
LABEL_OUTPUT = "label"

_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
_REFUSED = ("BOOL", "BYTES", "BF16")
MAX_DIMS = 16  # numpy's limit is 64; no served model takes more than a few
# A longer Inference-Header-Content-Length is larger than any body (and int() of a very
# long digit string is refused by Python itself).
_MAX_LENGTH_DIGITS = 18


class V2BadRequest(BadRequest):
    type = "invalid_v2_request"


def output_names(served: ServedModel) -> list[str]:
    names = [served.manifest.outputs[0].name]
    if served.manifest.labels is not None and names[0] != LABEL_OUTPUT:
        names.append(LABEL_OUTPUT)
    return names


# -- request decoding ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    id: str | None
    outputs: list[tuple[str, bool]]  # (name, binary)


def _params(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2BadRequest(f"{where} must be a JSON object")
    return value


def _flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise V2BadRequest(f"{where}.{key} must be true or false")
    return value


def _split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary tensor data (empty without the extension)."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    value = header_length.strip()
    if not (value.isascii() and value.isdigit()):
        raise V2BadRequest(f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}")
    n = int(value) if len(value) <= _MAX_LENGTH_DIGITS else len(body) + 1
    if n > len(body):
        raise V2BadRequest(
            f"{HEADER_LENGTH} is {n} but the request body has only {len(body)} bytes"
        )
    return view[:n], view[n:]


def _from_json(data: Any, dtype: np.dtype[Any], where: str) -> npt.NDArray[Any]:
    if not isinstance(data, list):
        raise V2BadRequest(f"{where}: 'data' must be a (flat or nested) list of numbers")
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise V2BadRequest(
            f"{where}: 'data' must be a list of numbers with a regular (rectangular) shape"
        ) from None
    if raw.size and raw.dtype.kind not in "iuf":
        raise V2BadRequest(f"{where}: 'data' must hold only numbers")
    if dtype.kind in "iu" and raw.size:
        if raw.dtype.kind == "f":
            raise V2BadRequest(f"{where}: 'data' must hold integers for this datatype")
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise V2BadRequest(f"{where}: a value is out of range for this datatype")
    with np.errstate(over="ignore"):
        return raw.astype(dtype)


def _tensor(tensor: Any, binary: memoryview, offset: int) -> tuple[str, npt.NDArray[Any], int]:
    """One input tensor: its name, its array (declared dtype and shape), the new offset."""
    if not isinstance(tensor, dict):
        raise V2BadRequest("each input must be a JSON object with name, shape, datatype")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise V2BadRequest("each input needs a 'name' string")
    where = f"input '{name}'"
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise V2BadRequest(f"{where} needs a 'datatype' string")
    if datatype in _REFUSED:
        raise V2BadRequest(
            f"{where}: datatype {datatype} is not supported; send a numeric tensor "
            "(FP32, or FP16/FP64/INT*/UINT*, converted to FP32)"
        )
    dtype = _DATATYPES.get(datatype)
    if dtype is None:
        raise V2BadRequest(
            f"{where}: unknown datatype {datatype!r}; expected one of {', '.join(_DATATYPES)}"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        type(d) is int and d >= 0
        for d in shape  # bool is not a dimension
    ):
        raise V2BadRequest(f"{where}: 'shape' must be a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise V2BadRequest(f"{where}: 'shape' has {len(shape)} dimensions; at most {MAX_DIMS}")
    count = math.prod(shape)
    params = _params(tensor.get("parameters"), f"{where} parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise V2BadRequest(f"{where} has both 'data' and parameters.binary_data_size")
        if type(size) is not int or size < 0:
            raise V2BadRequest(f"{where}: binary_data_size must be a non-negative integer")
        expected = count * dtype.itemsize
        if size != expected:
            raise V2BadRequest(
                f"{where}: binary_data_size is {size} bytes but shape {shape} of {datatype} "
                f"needs {expected}"
            )
        if offset + size > len(binary):
            raise V2BadRequest(
                f"{where}: the binary data after the JSON header is {len(binary)} bytes, "
                f"shorter than the inputs' binary_data_size"
            )
        array: npt.NDArray[Any] = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        offset += size
    else:
        if "data" not in tensor:
            raise V2BadRequest(f"{where} has neither 'data' nor parameters.binary_data_size")
        array = _from_json(tensor["data"], dtype, where)
        if array.size != count:
            raise V2BadRequest(
                f"{where}: shape {shape} holds {count} elements but 'data' has {array.size}"
            )
    try:
        shaped = array.reshape(shape)
    except ValueError:  # e.g. an empty tensor with a dimension numpy cannot address
        raise V2BadRequest(f"{where}: shape {shape} cannot be formed") from None
    return name, shaped, offset


def _outputs(value: Any, params: dict[str, Any], served: ServedModel) -> list[tuple[str, bool]]:
    default = _flag(params, "binary_data_output", False, "parameters")
    available = output_names(served)
    if value is None or value == []:
        return [(name, default) for name in available]
    if not isinstance(value, list):
        raise V2BadRequest("'outputs' must be a list of {name, parameters?} objects")
    selected: list[tuple[str, bool]] = []
    for out in value:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise V2BadRequest("each requested output needs a 'name' string")
        name = out["name"]
        if name not in available:
            raise V2BadRequest(
                f"model has no output '{name}'; its outputs are {', '.join(available)}"
            )
        if any(name == n for n, _ in selected):
            raise V2BadRequest(f"output '{name}' is requested twice")
        where = f"output '{name}' parameters"
        p = _params(out.get("parameters"), where)
        if p.get("classification"):
            raise V2BadRequest("the classification extension is not supported")
        if "binary_data" in p:
            binary = _flag(p, "binary_data", default, where)
        else:
            binary = _flag(p, "binary_data_output", default, where)
        selected.append((name, binary))
    return selected


def decode_request(
    body: bytes, header_length: str | None, served: ServedModel
) -> tuple[Array, DecodedRequest]:
    """The V2 request as the model's validated float32 batch, and what to answer with."""
    predictor = served.predictor
    assert predictor is not None
    header, binary = _split_body(body, header_length)
    if not len(header):
        raise V2BadRequest("the JSON inference header is empty; send a V2 inference request")
    try:
        payload = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise V2BadRequest(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise V2BadRequest("the inference request must be a JSON object")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2BadRequest("'id' must be a string")
    params = _params(payload.get("parameters"), "parameters")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2BadRequest("'inputs' must be a non-empty list of input tensors")
    expected = served.manifest.inputs[0].name
    if len(inputs) != 1:
        raise V2BadRequest(f"the model takes one input, '{expected}'; got {len(inputs)}")
    name, array, used = _tensor(inputs[0], binary, 0)
    if name != expected:
        raise V2BadRequest(f"the model has no input '{name}'; its input is '{expected}'")
    if used != len(binary):
        raise V2BadRequest(
            f"{len(binary) - used} bytes of binary data follow the inputs' binary_data_size"
        )
    outputs = _outputs(payload.get("outputs"), params, served)
    batch = predictor.decode(array)  # shape, batch size, finite; float32
    if not batch.flags.writeable:  # a view of the request body
        batch = batch.copy()
    return batch, DecodedRequest(request_id, outputs)


# -- response encoding -----------------------------------------------------------------


def _bytes_tensor(values: list[str]) -> bytes:
    parts = []
    for value in values:
        encoded = value.encode()
        parts += [struct.pack("<I", len(encoded)), encoded]
    return b"".join(parts)


def encode_response(
    model: str,
    served: ServedModel,
    raw: Array,
    request: DecodedRequest,
    headers: dict[str, str],
) -> Response:
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in request.outputs:
        entry: dict[str, Any] = {"name": name}
        data: Any
        if name == LABEL_OUTPUT and served.manifest.outputs[0].name != LABEL_OUTPUT:
            labels: list[str] = list(served.manifest.labels or ())
            names = [labels[i] for i in raw.reshape(len(raw), -1).argmax(axis=1).tolist()]
            entry.update(datatype="BYTES", shape=[len(names)])
            chunk, data = (_bytes_tensor(names) if binary else b""), names
        else:
            array = np.ascontiguousarray(raw, dtype="<f4")
            entry.update(datatype="FP32", shape=list(array.shape))
            chunk, data = (array.tobytes() if binary else b""), array.ravel()
        if binary:
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = data
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": served.version}
    if request.id is not None:
        body["id"] = request.id
    if served.variant is not None:
        # The variant served, besides the name asked for (``cnn:int8``): V2 parameters are
        # strings, numbers or booleans, never null, so the base model has none.
        body["parameters"] = {"variant": served.variant}
    body["outputs"] = outputs
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(header, 200, headers=headers, media_type="application/json")
    return Response(
        b"".join([header, *chunks]),
        200,
        headers={**headers, HEADER_LENGTH: str(len(header))},
        media_type="application/octet-stream",
    )
