"""Manifests and archives: what is accepted, and that a hostile archive runs no code.

The pickle payloads create a marker folder when unpickled; each test first shows that the
payload is live (torch or pickle does run it) and then that Tollgate refuses the file without
running it.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from app.catalog.archive import PLAIN_PICKLE, ArchiveRejected, inspect_archive, load_archive
from app.catalog.spec import ManifestInvalid, parse_manifest
from tests.catalog import mlp

FORMATS = ["torchscript", "torch_export"]


# Manifests


def test_a_manifest_parses_and_keeps_its_extra_keys() -> None:
    manifest = parse_manifest(json.dumps(mlp.digits_manifest()).encode())
    assert manifest.name == "digits-mlp"
    assert manifest.inputs[0].shape == [64]
    assert manifest.inputs[0].range == (0.0, 16.0)
    assert manifest.labels == mlp.DIGITS_LABELS
    assert manifest.model_dump()["training"] == {"notes": "full-batch Adam, 150 steps"}
    assert parse_manifest(mlp.diabetes_manifest()).labels is None


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.update({key: value})


def _input(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["inputs"][0].update({key: value})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_without("license"), "license: this field is required"),
        (_without("labels"), "a classification model needs `labels`, one per output class"),
        (
            _set("labels", [str(i) for i in range(9)]),
            "9 labels for an output of 10 classes (outputs[0].shape[-1])",
        ),
        (_set("labels", ["a"] * 10), "labels: labels must be distinct"),
        (_set("name", "Digits MLP"), "name: String should match pattern"),
        (_set("version", "../1"), "version: String should match pattern"),
        (_set("task", "ranking"), "task: Input should be 'classification' or 'regression'"),
        (
            lambda m: m["inputs"].append(dict(m["inputs"][0], name="mask")),
            "inputs: exactly one input tensor is supported for now (got 2)",
        ),
        (_set("outputs", []), "outputs: exactly one output tensor is supported for now (got 0)"),
        (
            _input("shape", [8, 0]),
            "inputs.0.shape: every dimension must be between 1 and 65536 (got 0)",
        ),
        (_input("shape", [2] * 9), "inputs.0.shape: List should have at most 8 items"),
        (_input("range", [16, 0]), "inputs.0.range: range low 16.0 is above high 0.0"),
        (_input("range", [0, float("inf")]), "inputs.0.range: range bounds must be finite"),
        (_input("dtype", "float16"), "inputs.0.dtype: Input should be 'float32'"),
        (_input("name", "1st"), "inputs.0.name: String should match pattern"),
        (_set("description", ""), "description: String should have at least 1 character"),
    ],
)
def test_a_bad_manifest_is_refused_with_a_clear_reason(
    change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    manifest = mlp.digits_manifest()
    change(manifest)
    with pytest.raises(ManifestInvalid) as refused:
        parse_manifest(manifest)
    assert reason in str(refused.value)
    assert refused.value.reason == str(refused.value)


def test_a_regression_manifest_may_not_carry_labels() -> None:
    with pytest.raises(ManifestInvalid, match="a regression model has no labels"):
        parse_manifest(mlp.diabetes_manifest(labels=["progression"]))


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"{", "the manifest is not valid JSON"), ("[1]", "the manifest must be a JSON object")],
)
def test_a_manifest_that_is_not_a_json_object_is_refused(data: bytes | str, reason: str) -> None:
    with pytest.raises(ManifestInvalid, match=reason):
        parse_manifest(data)


# Archives that are accepted


@pytest.mark.parametrize("fmt", FORMATS)
def test_both_formats_are_recognised_and_load(tmp_path: Path, fmt: mlp.Format) -> None:
    upload = mlp.write_mlp(tmp_path, fmt)
    assert inspect_archive(upload.archive) == fmt
    module = load_archive(upload.archive, fmt)
    x = torch.rand(5, 64) * 16
    with torch.inference_mode():
        assert torch.allclose(module(x), upload.reference(x), atol=1e-5)


def test_a_format_other_than_the_one_given_is_refused(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    with pytest.raises(ArchiveRejected, match="a torchscript archive, not torch_export"):
        load_archive(upload.archive, "torch_export")


# Archives that are refused


def test_a_plain_torch_save_of_a_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(mlp.trained_digits_mlp(), path)
    with pytest.raises(ArchiveRejected) as refused:
        inspect_archive(path)
    assert str(refused.value) == PLAIN_PICKLE


@pytest.mark.parametrize("kind", ["zip", "legacy", "raw"])
def test_a_hostile_pickle_is_refused_without_running(tmp_path: Path, kind: str) -> None:
    live, marker = tmp_path / "live", tmp_path / "marker"
    pickle.loads(pickle.dumps(mlp.Marker(live)))  # noqa: S301 - our payload, shown to be live
    assert live.exists()  # the payload works when unpickled
    path = tmp_path / "model.pt"
    if kind == "raw":
        path.write_bytes(pickle.dumps(mlp.Marker(marker)))
    else:
        torch.save(mlp.Marker(marker), path, _use_new_zipfile_serialization=kind == "zip")
    with pytest.raises(ArchiveRejected, match=r"a plain torch\.save pickle"):
        inspect_archive(path)
    with pytest.raises(ArchiveRejected, match=r"a plain torch\.save pickle"):
        load_archive(path, "torchscript")
    assert not marker.exists()


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    data = upload.archive.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveRejected, match="the archive is truncated or corrupt"):
        inspect_archive(path)


def test_a_corrupted_member_is_refused(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    data = bytearray(upload.archive.read_bytes())
    with zipfile.ZipFile(upload.archive) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
    header = info.header_offset  # the local header's name and extra lengths, then the data
    name_length, extra_length = struct.unpack("<HH", data[header + 26 : header + 30])
    start = header + 30 + name_length + extra_length
    data[start] ^= 0xFF  # one byte of a weight: the CRC no longer matches
    path = tmp_path / "corrupt.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveRejected, match="corrupt"):
        inspect_archive(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (bytes(range(256)) * 4, "not a ZIP archive"),
        (b"PK\x03\x04" + b"\x00" * 60, "the archive is truncated or corrupt"),
    ],
)
def test_a_file_that_is_not_an_archive_is_refused(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ArchiveRejected, match=reason):
        inspect_archive(path)


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (["m/code/x.py", "m/constants.pkl", "m/../../etc/cron.d/x"], "unsafe member name"),
        (["m/code/x.py", "m/constants.pkl", "/etc/passwd"], "unsafe member name"),
        (["m/code/x.py", "m/constants.pkl", "m\\..\\x"], "unsafe member name"),
        (["m/code/x.py", "m/constants.pkl", "n/data.pkl"], "more than one top-level folder"),
        (["m/code/x.py", "m/constants.pkl", "version"], "is not inside the archive's folder"),
        (["m/code/x.py", "m/constants.pkl", "m/code/x.py"], "twice"),
        (["m/data.pkl", "m/data/0", "m/version"], PLAIN_PICKLE),
        (["m/readme.txt"], "neither a TorchScript"),
        ([], "the archive is empty"),
    ],
)
def test_an_archive_with_a_bad_layout_is_refused(
    tmp_path: Path, names: list[str], reason: str
) -> None:
    path = tmp_path / "model.pt"
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile's "Duplicate name" warning
        for name in names:
            archive.writestr(name, b"x")
    with pytest.raises(ArchiveRejected, match=re.escape(reason)):
        inspect_archive(path)


def test_a_pt2_with_native_code_is_refused(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torch_export")
    path = tmp_path / "aoti.pt2"
    with zipfile.ZipFile(upload.archive) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        root = src.infolist()[0].filename.split("/")[0]
        dst.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ArchiveRejected, match="AOTInductor-compiled native code"):
        inspect_archive(path)


def _hostile_sample_inputs(tmp_path: Path, marker: Path) -> Path:
    """A real .pt2 whose sample inputs are a payload (torch.export.load unpickles them with
    weights_only=False when the restricted load fails)."""
    upload = mlp.write_mlp(tmp_path, "torch_export")
    return mlp.rewrite_zip(
        upload.archive,
        tmp_path / "hostile.pt2",
        {"data/sample_inputs/model.pt": mlp.malicious_pickle(marker)},
    )


def _hostile_weight(tmp_path: Path, marker: Path) -> Path:
    """A real .pt2 whose first weight is stored as a pickle (torch.load weights_only=False)."""
    upload = mlp.write_mlp(tmp_path, "torch_export")
    with zipfile.ZipFile(upload.archive) as archive:
        root = archive.infolist()[0].filename.split("/")[0]
        config = json.loads(archive.read(f"{root}/data/weights/model_weights_config.json"))
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    return mlp.rewrite_zip(
        upload.archive,
        tmp_path / "hostile.pt2",
        {
            "data/weights/model_weights_config.json": json.dumps(config).encode(),
            f"data/weights/{entry['path_name']}": mlp.malicious_pickle(marker),
        },
    )


@pytest.mark.parametrize("hostile", [_hostile_sample_inputs, _hostile_weight])
def test_a_pt2_that_torch_would_unpickle_freely_is_refused_without_running(
    tmp_path: Path, hostile: Callable[[Path, Path], Path]
) -> None:
    live = tmp_path / "live"
    with contextlib.suppress(Exception):
        torch.export.load(io.BytesIO(hostile(tmp_path, live).read_bytes()))
    assert live.exists()  # torch 2.13's own loader runs the payload

    marker = tmp_path / "marker"
    path = hostile(tmp_path, marker)
    with pytest.raises(ArchiveRejected, match=r"unrestricted unpickler|as a pickle"):
        load_archive(path, "torch_export")
    assert not marker.exists()
