"""The validation pipeline: variants built and measured, bad models and eval data refused,
and the child process's time and memory limits."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from app.catalog.archive import load_archive
from app.catalog.isolate import process_archive_isolated, run_isolated
from app.catalog.pipeline import PipelineReport, ValidationFailed, process_archive
from app.catalog.spec import parse_manifest
from tests.catalog import mlp

FORMATS = ["torchscript", "torch_export"]
FAST = {"measure_seconds": 0.01}
CUDA = torch.cuda.is_available()


def _process(
    archive: Path, manifest: dict[str, Any], eval_npz: Path | None, out: Path, **options: Any
) -> PipelineReport:
    return process_archive(archive, parse_manifest(manifest), eval_npz, out, **{**FAST, **options})


def _refusal(
    archive: Path, manifest: dict[str, Any], eval_npz: Path | None, out: Path
) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as refused:
        _process(archive, manifest, eval_npz, out)
    return refused.value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_upload_gets_a_measured_int8_variant_within_tolerance(
    tmp_path: Path, fmt: mlp.Format
) -> None:
    upload = mlp.write_mlp(tmp_path, fmt)
    out = tmp_path / "out"
    report = _process(upload.archive, upload.manifest, upload.eval_npz, out)

    assert report.format == fmt
    base, int8 = report.variants[0], report.variants[1]
    assert (base.variant, base.format, base.file, base.dtype) == (None, fmt, "", "float32")
    assert base.sha256 == _sha256(upload.archive)
    assert base.bytes == upload.archive.stat().st_size == base.measured["size_bytes"]
    assert base.published and base.unpublished_reason is None
    assert base.measured["accuracy"] > 0.9
    assert base.measured["cpu_items_per_s_batch1"] > 0
    assert base.measured["cpu_items_per_s_batch32"] > 0

    assert (int8.variant, int8.format, int8.file, int8.dtype) == (
        "int8",
        "torchscript",
        "int8.pt",
        "qint8",
    )
    assert int8.requires_device is None
    assert int8.sha256 == _sha256(out / "int8.pt")
    assert int8.bytes == (out / "int8.pt").stat().st_size == int8.measured["size_bytes"]
    assert int8.bytes < base.bytes
    assert int8.compression["method"].startswith("dynamic quantization of Linear layers")
    assert int8.compression["quantized_layers"] == "2"
    assert int8.published, int8.unpublished_reason
    assert abs(int8.measured["accuracy"] - base.measured["accuracy"]) <= 0.01
    assert int8.measured["cpu_items_per_s_batch32"] > 0

    # The saved int8 file answers like the float model it came from.
    loaded = load_archive(out / "int8.pt", "torchscript")
    _, _, x_test, _ = mlp.digits_data()
    x = torch.from_numpy(x_test)
    with torch.inference_mode():
        quantized, reference = loaded(x), upload.reference(x)
    assert (quantized - reference).abs().max() < 0.5
    assert (quantized.argmax(1) == reference.argmax(1)).float().mean() > 0.97

    if CUDA:
        fp16 = next(v for v in report.variants if v.variant == "fp16")
        assert (fp16.dtype, fp16.requires_device) == ("float16", "cuda")
        assert fp16.measured["gpu_items_per_s_batch32"] > 0
    else:
        assert len(report.variants) == 2
        assert report.skipped == [("fp16", "needs a CUDA GPU; this host has none")]


def test_a_report_survives_json(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    report = _process(upload.archive, upload.manifest, upload.eval_npz, tmp_path / "out")
    assert PipelineReport.from_json(json.loads(json.dumps(report.to_json()))) == report


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_regression_model_is_measured_by_r2_and_mae(tmp_path: Path, fmt: mlp.Format) -> None:
    upload = mlp.write_regression(tmp_path, fmt)
    report = _process(upload.archive, upload.manifest, upload.eval_npz, tmp_path / "out")
    base, int8 = report.variants[:2]
    assert base.measured["r2"] > 0.3
    assert 30 < base.measured["mae"] < 70
    assert abs(int8.measured["r2"] - base.measured["r2"]) < 0.05
    assert "accuracy" not in base.measured


def test_without_eval_data_no_variant_is_published(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    report = _process(upload.archive, upload.manifest, None, tmp_path / "out")
    base, int8 = report.variants[:2]
    assert base.published
    assert "accuracy" not in base.measured
    assert (int8.published, int8.unpublished_reason) == (
        False,
        "no eval data: accuracy not measured",
    )


def test_an_int8_variant_that_loses_accuracy_is_not_published(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    near_ties = mlp.write_near_ties(tmp_path / "ties.npz", upload.reference)
    strict = _process(upload.archive, upload.manifest, near_ties, tmp_path / "a", tolerance=0.0)
    base, int8 = strict.variants[:2]
    assert base.measured["accuracy"] == 1.0  # right on every item by construction
    assert int8.measured["accuracy"] < 1.0
    assert not int8.published
    assert int8.unpublished_reason is not None
    assert re.fullmatch(
        r"accuracy 0\.\d{3} vs base 1\.000: drop \d+\.\d points > tolerance 0\.0",
        int8.unpublished_reason,
    )
    lenient = _process(upload.archive, upload.manifest, near_ties, tmp_path / "b", tolerance=1.0)
    assert lenient.variants[1].published


def test_a_model_with_convolutions_gets_static_int8_calibrated_on_eval_data(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    module = mlp.TinyCNN().eval()
    archive = mlp.save_module(module, tmp_path / "cnn.pt", "torchscript", (64,))
    _, _, x_test, _ = mlp.digits_data()
    with torch.inference_mode():
        predicted = module(torch.from_numpy(x_test)).argmax(1).numpy()
    eval_npz = mlp.write_eval(tmp_path / "eval.npz", x_test, labels=predicted)

    report = _process(archive, mlp.digits_manifest(), eval_npz, tmp_path / "out")
    base, int8 = report.variants[:2]
    assert base.measured["accuracy"] == 1.0  # quantizing did not touch the base
    assert int8.compression["method"].startswith("static post-training quantization")
    assert int8.compression["calibration"] == "256 eval inputs chosen with seed 0"
    graph = load_archive(tmp_path / "out" / "int8.pt", "torchscript").inlined_graph
    assert any(node.kind().startswith("quantized::conv2d") for node in graph.nodes())
    assert int8.measured["accuracy"] > 0.8

    # Without eval data there is nothing to calibrate on: only the Linear layer is quantized.
    report = _process(archive, mlp.digits_manifest(), None, tmp_path / "dynamic")
    assert report.variants[1].compression["method"].startswith("dynamic quantization")


def test_a_model_with_nothing_to_quantize_gets_no_int8(tmp_path: Path) -> None:
    archive = mlp.save_module(mlp.NoLayers(), tmp_path / "m.pt", "torchscript", (64,))
    _, _, x_test, y_test = mlp.digits_data()
    eval_npz = mlp.write_eval(tmp_path / "eval.npz", x_test, labels=y_test)
    report = _process(archive, mlp.digits_manifest(), eval_npz, tmp_path / "out")
    assert [v.variant for v in report.variants] == [None]
    assert ("int8", "no Linear or convolution layers to quantize") in report.skipped


class _Float64Out(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :10].double()


class _Float16Out(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :10].half()


class _TupleOut(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, :10], x


def test_an_output_shape_other_than_declared_is_refused(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    manifest = mlp.digits_manifest(
        outputs=[{"name": "logits", "dtype": "float32", "shape": [12]}],
        labels=[str(i) for i in range(12)],
    )
    refused = _refusal(upload.archive, manifest, None, tmp_path / "out")
    assert refused.code == "output_shape"
    assert refused.reason == (
        "the model returned shape (2, 10) for a batch of 2; the manifest declares "
        "outputs[0].shape [12], so (2, 12) was expected"
    )


@pytest.mark.parametrize(
    ("module", "code", "reason"),
    [
        (mlp.NanOut(), "nan_output", "the model returned NaN or infinite values"),
        (
            _Float64Out(),
            "output_dtype",
            "the model returned float64; the manifest declares float32",
        ),
        (
            _Float16Out(),
            "output_dtype",
            "the model returned float16; the manifest declares float32",
        ),
        (_TupleOut(), "manifest_mismatch", "the model returned a tuple; a single tensor"),
    ],
)
def test_a_model_with_bad_outputs_is_refused(
    tmp_path: Path, module: nn.Module, code: str, reason: str
) -> None:
    archive = mlp.save_module(module, tmp_path / "m.pt", "torchscript", (64,))
    refused = _refusal(archive, mlp.digits_manifest(), None, tmp_path / "out")
    assert (refused.code, refused.reason[: len(reason)]) == (code, reason)


def test_an_input_shape_other_than_declared_is_refused(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    manifest = mlp.digits_manifest(
        inputs=[{"name": "pixels", "dtype": "float32", "shape": [8, 8], "range": [0, 16]}]
    )
    refused = _refusal(upload.archive, manifest, None, tmp_path / "out")
    assert refused.code == "manifest_mismatch"
    assert refused.reason.startswith(
        "the model failed on a (2, 8, 8) input of the declared shape: "
    )


def test_a_program_exported_with_a_fixed_batch_is_refused(tmp_path: Path) -> None:
    program = torch.export.export(mlp.trained_digits_mlp(), (torch.rand(2, 64),))
    archive = tmp_path / "fixed.pt2"
    torch.export.save(program, archive)
    refused = _refusal(archive, mlp.digits_manifest(), None, tmp_path / "out")
    assert refused.code == "manifest_mismatch"
    assert "it must accept any batch size" in refused.reason


def test_an_archive_that_does_not_load_is_refused(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    broken = mlp.rewrite_zip(
        upload.archive, tmp_path / "broken.pt", {"constants.pkl": b"not a pickle"}
    )
    refused = _refusal(broken, upload.manifest, None, tmp_path / "out")
    assert refused.code == "load_failed"
    assert refused.reason.startswith("the archive did not load: ")


def _eval_case(tmp_path: Path, **arrays: Any) -> Path:
    path = tmp_path / "bad.npz"
    with path.open("wb") as file:
        np.savez(file, **arrays)
    return path


_X = np.full((5, 64), 3.0, dtype=np.float32)
_Y = np.arange(5, dtype=np.int64)


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({"inputs": _X[:, :63], "labels": _Y}, "`inputs` has shape (5, 63); (N, 64) was expected"),
        ({"inputs": _X[0], "labels": _Y}, "`inputs` has shape (64,)"),
        ({"inputs": _X[:0], "labels": _Y[:0]}, "`inputs` must hold between 1 and 100000 items"),
        ({"labels": _Y}, "the .npz has no `inputs` array"),
        ({"inputs": _X}, "classification eval data needs integer `labels`"),
        (
            {"inputs": _X, "targets": _Y.astype(np.float32)},
            "needs integer `labels` (found `targets`: that is for regression)",
        ),
        ({"inputs": _X, "labels": _Y[:4]}, "`labels` has shape (4,); (5,) was expected"),
        ({"inputs": _X, "labels": _Y + 6}, "`labels` must lie in [0, 10) (got 6..10)"),
        ({"inputs": _X, "labels": _Y.astype(np.float32)}, "`labels` must be integer class"),
        ({"inputs": _X * 10, "labels": _Y}, "`inputs` spans [30, 30], outside the declared"),
        ({"inputs": _X * np.nan, "labels": _Y}, "`inputs` holds NaN or infinite values"),
        ({"inputs": _X.astype(str), "labels": _Y}, "`inputs` must be numbers"),
        (
            {"inputs": np.array([object()] * 5), "labels": _Y},
            "the eval data is not a readable .npz without pickles",
        ),
    ],
)
def test_bad_classification_eval_data_is_refused(
    tmp_path: Path, arrays: dict[str, Any], reason: str
) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    eval_npz = _eval_case(tmp_path, **arrays)
    refused = _refusal(upload.archive, upload.manifest, eval_npz, tmp_path / "out")
    assert refused.code == "eval_invalid"
    assert reason in refused.reason


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        (
            {"inputs": _X[:, :10] / 10, "labels": _Y},
            "regression eval data needs `targets` (found `labels`: that is for classification)",
        ),
        (
            {"inputs": _X[:, :10] / 10, "targets": np.ones((5, 2))},
            "`targets` has shape (5, 2); (N,) or (N, 1) was expected",
        ),
        (
            {"inputs": _X[:, :10] / 10, "targets": np.full(5, np.inf)},
            "`targets` must be finite numbers",
        ),
    ],
)
def test_bad_regression_eval_data_is_refused(
    tmp_path: Path, arrays: dict[str, Any], reason: str
) -> None:
    upload = mlp.write_regression(tmp_path, "torchscript")
    eval_npz = _eval_case(tmp_path, **arrays)
    refused = _refusal(upload.archive, upload.manifest, eval_npz, tmp_path / "out")
    assert (refused.code, reason in refused.reason) == ("eval_invalid", True)


def test_eval_data_that_is_not_an_npz_is_refused(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torchscript")
    not_npz = tmp_path / "eval.npz"
    not_npz.write_bytes(b"inputs,labels\n1,2\n")
    refused = _refusal(upload.archive, upload.manifest, not_npz, tmp_path / "out")
    assert refused.code == "eval_invalid"


# In a child process


def test_an_isolated_run_reports_like_an_in_process_one(tmp_path: Path) -> None:
    upload = mlp.write_mlp(tmp_path, "torch_export")
    report = process_archive_isolated(
        upload.archive,
        parse_manifest(upload.manifest),
        upload.eval_npz,
        tmp_path / "out",
        tolerance=0.01,
        measure_seconds=0.01,
        threads=1,
        timeout_s=120,
        memory_bytes=4 << 30,
    )
    assert [v.variant for v in report.variants][:2] == [None, "int8"]
    assert report.variants[1].sha256 == _sha256(tmp_path / "out" / "int8.pt")
    assert report.variants[0].measured["accuracy"] > 0.9


def _isolated(
    archive: Path, manifest: dict[str, Any], out: Path, **limits: Any
) -> ValidationFailed:
    options = {"timeout_s": 120.0, "memory_bytes": 4 << 30, **limits}
    with pytest.raises(ValidationFailed) as refused:
        process_archive_isolated(
            archive,
            parse_manifest(manifest),
            None,
            out,
            tolerance=0.01,
            measure_seconds=0.01,
            threads=1,
            **options,
        )
    return refused.value


def test_a_hostile_pickle_is_refused_in_the_child_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    torch.save(mlp.Marker(marker), path)
    refused = _isolated(path, mlp.digits_manifest(), tmp_path / "out")
    assert (refused.code, refused.reason[:26]) == ("archive_rejected", "a plain torch.save pickle:")
    hostile_pt2 = mlp.rewrite_zip(
        mlp.write_mlp(tmp_path, "torch_export").archive,
        tmp_path / "hostile.pt2",
        {"data/sample_inputs/model.pt": mlp.malicious_pickle(marker)},
    )
    refused = _isolated(hostile_pt2, mlp.digits_manifest(), tmp_path / "out")
    assert refused.code == "archive_rejected"
    assert not marker.exists()


def test_a_model_that_never_returns_is_stopped(tmp_path: Path) -> None:
    archive = mlp.save_module(mlp.Spin(), tmp_path / "spin.pt", "torchscript", (64,))
    refused = _isolated(archive, mlp.digits_manifest(), tmp_path / "out", timeout_s=1.0)
    assert (refused.code, refused.reason) == ("timeout", "validation took longer than 1 s")


def test_a_model_that_wants_too_much_memory_is_stopped(tmp_path: Path) -> None:
    archive = mlp.save_module(mlp.Hog(), tmp_path / "hog.pt", "torchscript", (64,))
    refused = _isolated(archive, mlp.digits_manifest(), tmp_path / "out", memory_bytes=3 << 30)
    assert refused.code == "memory_limit"
    assert refused.reason.startswith("ran out of memory: ")


def test_an_unexpected_error_in_the_child_is_a_crash() -> None:
    with pytest.raises(ValidationFailed) as refused:
        run_isolated(mlp.fail_unexpectedly, timeout_s=60, memory_bytes=None)
    assert (refused.value.code, refused.value.reason) == ("crashed", "KeyError: 'boom'")


def test_the_parent_unpickles_no_object_from_the_child(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(ValidationFailed) as refused:
        run_isolated(mlp.return_a_payload, str(marker), timeout_s=60, memory_bytes=None)
    assert refused.value.code == "crashed"
    assert "posix.mkdir is not plain data" in refused.value.reason
    assert not marker.exists()
