"""Tests for the shipped model artifacts and the models package (fast, CPU-only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

import models
from app.catalog.archive import inspect_archive, load_archive
from models.architectures import ARCHITECTURES, DiabetesLinReg, DigitsCNN
from models.data import Split, diabetes_split, digits_preprocess, digits_split, indices_sha256
from models.manifest import (
    OPTIONAL_KEYS,
    REQUIRED_KEYS,
    Manifest,
    ManifestError,
    WeightsChecksumError,
    discover,
    load_manifest,
    load_weights,
    parse_manifest,
    sha256_file,
)
from models.package import PACKAGED_KEYS
from models.train import LinRegConfig, serialize_state_dict, train_linreg, write_artifacts

MODELS_ROOT = Path(models.__file__).resolve().parent
SHIPPED = [("cnn", "1"), ("linreg", "1")]


@pytest.fixture(scope="module")
def digits() -> tuple[Split, Split]:
    return digits_split()


@pytest.fixture(scope="module")
def diabetes() -> tuple[Split, Split]:
    return diabetes_split()


def _shipped(name: str, version: str) -> tuple[Path, Manifest]:
    mdir = MODELS_ROOT / name / version
    return mdir, load_manifest(mdir / "manifest.json")


# --- shipped artifacts -------------------------------------------------------------------


def test_discover_finds_shipped_models() -> None:
    found = discover(MODELS_ROOT)
    bases = [(mdir, m) for mdir, m in found if m.variant is None]
    assert [(m.name, m.version) for _, m in bases] == SHIPPED
    for mdir, m in found:
        assert mdir == MODELS_ROOT / m.name / m.dir_name


@pytest.mark.parametrize(("name", "version"), SHIPPED)
def test_manifest_is_canonical_json_with_exact_keys(name: str, version: str) -> None:
    path = MODELS_ROOT / name / version / "manifest.json"
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    # models.package adds the archive block and the card's license and preprocessing notes
    assert (
        REQUIRED_KEYS | PACKAGED_KEYS <= set(raw) <= REQUIRED_KEYS | OPTIONAL_KEYS | PACKAGED_KEYS
    )
    assert raw["variant"] is None
    assert text == json.dumps(raw, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert raw["training"]["seed"] == raw["dataset"]["seed"] == 0


@pytest.mark.parametrize(
    "manifest_dir",
    [d for d, _ in discover(MODELS_ROOT)],
    ids=lambda d: d.relative_to(MODELS_ROOT).as_posix(),
)
def test_archive_is_the_one_recorded_and_reproduces_the_trained_weights(manifest_dir: Path) -> None:
    """Tollgate serves only ``model.pt`` (models.package): it must be the file the manifest
    names, a TorchScript archive that loads without the repository's classes, and compute
    what the trained weights compute."""
    manifest = load_manifest(manifest_dir / "manifest.json")
    block = manifest.raw["archive"]
    archive = manifest_dir / block["file"]
    assert block["format"] == "torchscript" == inspect_archive(archive)
    assert (sha256_file(archive), archive.stat().st_size) == (block["sha256"], block["bytes"])
    if manifest.requires_device == "cuda":
        return  # fp16: checked against eager when packaged; no CPU fp16 forward here
    x = torch.rand(4, *manifest.inputs[0].shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = load_weights(manifest_dir, manifest)(x)
        got = load_archive(archive, "torchscript")(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "version"), SHIPPED)
def test_weights_sha256_matches_manifest(name: str, version: str) -> None:
    mdir, manifest = _shipped(name, version)
    weights = mdir / manifest.weights_file
    assert sha256_file(weights) == manifest.weights_sha256
    assert weights.stat().st_size == manifest.weights_bytes


@pytest.mark.parametrize(("name", "version"), SHIPPED)
def test_load_weights_builds_eval_model(name: str, version: str) -> None:
    mdir, manifest = _shipped(name, version)
    model = load_weights(mdir, manifest)
    assert isinstance(model, type(ARCHITECTURES[manifest.architecture]()))
    assert not model.training
    x = torch.zeros((2, *manifest.inputs[0].shape))
    with torch.inference_mode():
        out = model(x)
    assert tuple(out.shape) == (2, *manifest.outputs[0].shape)
    assert out.dtype == torch.float32


@pytest.mark.parametrize(("name", "version"), SHIPPED)
def test_tampered_weights_raise(tmp_path: Path, name: str, version: str) -> None:
    src, _ = _shipped(name, version)
    dst = tmp_path / name / version
    shutil.copytree(src, dst)
    manifest = load_manifest(dst / "manifest.json")
    weights = dst / manifest.weights_file
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match="sha256"):
        load_weights(dst, manifest)
    weights.write_bytes(bytes(data[:-1]))
    with pytest.raises(WeightsChecksumError, match="size"):
        load_weights(dst, manifest)


def test_shipped_cnn_accuracy_matches_manifest(digits: tuple[Split, Split]) -> None:
    mdir, manifest = _shipped("cnn", "1")
    _, test = digits
    model = load_weights(mdir, manifest)
    with torch.inference_mode():
        pred = model(test.x).argmax(dim=1)
    accuracy = (pred == test.y).double().mean().item()
    assert round(accuracy, 6) == manifest.metrics["test_accuracy"]
    assert manifest.metrics["test_accuracy"] >= 0.97
    assert manifest.metrics["test_n"] == len(test) == 360
    assert manifest.raw["dataset"]["test_indices_sha256"] == indices_sha256(test.indices)
    assert manifest.labels == tuple(str(i) for i in range(10))


def test_shipped_linreg_r2_matches_manifest(diabetes: tuple[Split, Split]) -> None:
    mdir, manifest = _shipped("linreg", "1")
    train, test = diabetes
    model = load_weights(mdir, manifest)
    with torch.inference_mode():
        pred = model(test.x).double().numpy().ravel()
    y = test.y.double().numpy().ravel()
    r2 = float(r2_score(y, pred))
    assert r2 == pytest.approx(manifest.metrics["test_r2"], abs=1e-5)
    assert manifest.metrics["test_n"] == len(test)
    assert manifest.raw["dataset"]["test_indices_sha256"] == indices_sha256(test.indices)
    closed = LinearRegression().fit(train.x.double().numpy(), train.y.double().numpy().ravel())
    closed_r2 = float(r2_score(y, closed.predict(test.x.double().numpy())))
    assert closed_r2 == pytest.approx(manifest.metrics["sklearn_closed_form_r2"], abs=1e-5)
    assert abs(r2 - closed_r2) < 0.01


# --- data ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("loader", "n_total"), [(digits_split, 1797), (diabetes_split, 442)])
def test_splits_disjoint_and_deterministic(
    loader: object, n_total: int, digits: tuple[Split, Split], diabetes: tuple[Split, Split]
) -> None:
    first = digits if loader is digits_split else diabetes
    again = digits_split() if loader is digits_split else diabetes_split()
    train, test = first
    assert set(train.indices).isdisjoint(test.indices)
    assert sorted(train.indices + test.indices) == list(range(n_total))
    assert train.indices == sorted(train.indices)
    assert len(test) == int(np.ceil(0.2 * n_total))
    for a, b in zip(first, again, strict=True):
        assert a.indices == b.indices
        assert torch.equal(a.x, b.x)
        assert torch.equal(a.y, b.y)
        assert a.x.dtype == torch.float32
        assert a.x.shape[0] == a.y.shape[0] == len(a)


def test_other_seed_gives_other_split(digits: tuple[Split, Split]) -> None:
    assert digits_split(seed=1)[1].indices != digits[1].indices


def test_digits_split_is_stratified(digits: tuple[Split, Split]) -> None:
    _, test = digits
    counts = torch.bincount(test.y, minlength=10)
    assert int(counts.min()) >= 35
    assert int(counts.max()) <= 37


def test_digits_preprocess_shapes_and_range() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 17, size=(4, 8, 8))
    x = digits_preprocess(images)
    assert x.shape == (4, 3, 28, 28)
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0
    assert float(x.max()) <= 1.0
    assert torch.equal(x[:, 0], x[:, 2])
    assert torch.equal(digits_preprocess(images.reshape(4, 64)), x)
    assert torch.equal(digits_preprocess(images[0]), x[:1])
    ones = digits_preprocess(np.full((1, 8, 8), 16))
    assert torch.allclose(ones, torch.ones(1, 3, 28, 28), atol=1e-6)
    with pytest.raises(ValueError, match="expected images"):
        digits_preprocess(np.zeros((2, 7, 7)))


def test_diabetes_split_dtypes(diabetes: tuple[Split, Split]) -> None:
    train, test = diabetes
    assert train.x.shape == (353, 10)
    assert test.y.shape == (89, 1)
    assert test.y.dtype == torch.float32
    assert float(test.y.max()) > 100.0  # raw target, not scaled


# --- architectures / manifest parsing / training helpers --------------------------------


def test_architecture_output_shapes() -> None:
    assert set(ARCHITECTURES) == {"digits_cnn", "digits_cnn_slim", "diabetes_linreg"}
    assert DigitsCNN()(torch.rand(2, 3, 28, 28)).shape == (2, 10)
    assert DiabetesLinReg()(torch.rand(2, 10)).shape == (2, 1)


def _raw_manifest(name: str = "cnn") -> dict[str, object]:
    raw = json.loads((MODELS_ROOT / name / "1" / "manifest.json").read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("architecture", "resnet9000", "unknown architecture"),
        ("task", "ranking", "task must be"),
        ("weights", {"file": "../evil.pt", "sha256": "0" * 64, "bytes": 1}, "bare file name"),
        ("weights", {"file": "weights.pt", "sha256": "xyz", "bytes": 1}, "sha256"),
        ("labels", ["a", "b"], "labels"),
        ("inputs", [{"name": "x", "shape": [0], "dtype": "float32"}], "shape"),
    ],
)
def test_parse_manifest_rejects_bad_fields(key: str, value: object, message: str) -> None:
    raw = _raw_manifest() | {key: value}
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw)


def test_parse_manifest_rejects_missing_key() -> None:
    raw = _raw_manifest()
    del raw["weights"]
    with pytest.raises(ManifestError, match="missing keys"):
        parse_manifest(raw)


def test_discover_rejects_misplaced_manifest(tmp_path: Path) -> None:
    shutil.copytree(MODELS_ROOT / "linreg" / "1", tmp_path / "linreg" / "2")
    with pytest.raises(ManifestError, match="do not match"):
        discover(tmp_path)


def test_write_artifacts_is_deterministic_and_loadable(
    tmp_path: Path, diabetes: tuple[Split, Split]
) -> None:
    train, test = diabetes
    cfg = LinRegConfig(steps=300)
    model_a = train_linreg(train, cfg, progress=False)
    model_b = train_linreg(train, cfg, progress=False)
    assert serialize_state_dict(model_a) == serialize_state_dict(model_b)

    body = _raw_manifest("linreg")
    del body["weights"]
    dirs = [write_artifacts(tmp_path / d, m, body) for d, m in (("a", model_a), ("b", model_b))]
    for fname in ("weights.pt", "manifest.json"):
        assert (dirs[0] / fname).read_bytes() == (dirs[1] / fname).read_bytes()
    ((mdir, manifest),) = discover(tmp_path / "a")
    loaded = load_weights(mdir, manifest)
    with torch.inference_mode():
        assert torch.equal(loaded(test.x), model_a(test.x))
