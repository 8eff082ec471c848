"""Tests for the compressed ``cnn`` v1 variants written by ``python -m models.compress``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import models
from models.architectures import DigitsCNN, DigitsCNNSlim
from models.compress import VARIANTS, count_macs, count_parameters, prune_channels
from models.data import Split, digits_split, indices_sha256
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
from models.quantization import allow_nondeterministic

MODELS_ROOT = Path(models.__file__).resolve().parent
BASE_DIR = MODELS_ROOT / "cnn" / "1"
MEASURED_KEYS = {
    "cpu_items_per_s_batch32",
    "cpu_items_per_s_batch1",
    "threads",
    "macs_per_item",
    "parameters",
    "size_bytes",
}
EXPECTED = {
    "int8": ("quantized_state_dict", "qint8", None, "digits_cnn"),
    "fp16": ("state_dict", "float16", "cuda", "digits_cnn"),
    "pruned": ("state_dict", "float32", None, "digits_cnn_slim"),
    "distilled": ("state_dict", "float32", None, "digits_cnn_slim"),
}


@pytest.fixture(scope="module")
def test_split() -> Split:
    return digits_split()[1]


@pytest.fixture(scope="module")
def base() -> tuple[Path, Manifest]:
    return BASE_DIR, load_manifest(BASE_DIR / "manifest.json")


def _variant(variant: str) -> tuple[Path, Manifest]:
    mdir = MODELS_ROOT / "cnn" / f"1-{variant}"
    return mdir, load_manifest(mdir / "manifest.json")


def _predict(model: nn.Module, manifest: Manifest, x: torch.Tensor) -> torch.Tensor:
    """Logits as the manifest documents its accuracy: fp16 upcast to fp32 on CPU."""
    if manifest.dtype == "float16":
        model = model.float()
    with torch.inference_mode(), allow_nondeterministic():
        out: torch.Tensor = model(x)
    return out


def test_discover_lists_every_variant() -> None:
    found = discover(MODELS_ROOT)
    cnn = {m.variant: mdir for mdir, m in found if m.name == "cnn" and m.version == "1"}
    assert set(cnn) == {None, *VARIANTS}
    for variant, mdir in cnn.items():
        assert mdir.name == ("1" if variant is None else f"1-{variant}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_manifest_fields(variant: str, base: tuple[Path, Manifest]) -> None:
    mdir, manifest = _variant(variant)
    _, base_manifest = base
    text = (mdir / "manifest.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    assert text == json.dumps(raw, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    # models.package adds the archive block and the card's license and preprocessing notes
    assert (
        REQUIRED_KEYS | PACKAGED_KEYS <= set(raw) <= REQUIRED_KEYS | OPTIONAL_KEYS | PACKAGED_KEYS
    )
    assert manifest.variant == variant
    assert raw["base"] == {"name": "cnn", "version": "1"}
    fmt, dtype, device, architecture = EXPECTED[variant]
    assert (manifest.format, manifest.dtype, manifest.requires_device) == (fmt, dtype, device)
    assert manifest.architecture == architecture
    assert set(manifest.measured) == MEASURED_KEYS
    assert manifest.measured["threads"] == 1
    assert manifest.measured["size_bytes"] == manifest.weights_bytes
    assert manifest.measured["cpu_items_per_s_batch1"] > 0
    assert manifest.measured["cpu_items_per_s_batch32"] > 0
    assert raw["measured_env"]["torch_version"] == raw["training"]["torch_version"]
    assert manifest.inputs == base_manifest.inputs
    assert manifest.outputs == base_manifest.outputs
    assert manifest.labels == base_manifest.labels
    assert raw["dataset"] == base_manifest.raw["dataset"]
    assert isinstance(raw["metrics_note"], str)
    delta = manifest.metrics["test_accuracy"] - base_manifest.metrics["test_accuracy"]
    assert manifest.metrics["test_accuracy_delta_vs_base"] == pytest.approx(delta, abs=1e-6)
    if abs(delta) > 0.015:
        assert "NOT within" in raw["metrics_note"]
    else:
        assert "within the 1.5-point tolerance" in raw["metrics_note"]
    if variant == "fp16":
        assert "upcast" in raw["metrics_note"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_weights_sha256_matches_manifest(variant: str) -> None:
    mdir, manifest = _variant(variant)
    weights = mdir / manifest.weights_file
    assert sha256_file(weights) == manifest.weights_sha256
    assert weights.stat().st_size == manifest.weights_bytes


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_loads_and_matches_manifest_accuracy(variant: str, test_split: Split) -> None:
    mdir, manifest = _variant(variant)
    model = load_weights(mdir, manifest)
    assert not model.training
    if variant == "fp16":
        assert {p.dtype for p in model.parameters()} == {torch.float16}
    if variant == "int8":
        assert count_parameters(model) == 0  # all weights live in packed int8 params
        quantized = (torch.ao.nn.quantized.Conv2d, torch.ao.nn.quantized.Linear)
        assert sum(isinstance(m, quantized) for m in model.modules()) == 4
        assert not any(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())
    if variant in {"pruned", "distilled"}:
        assert isinstance(model, DigitsCNNSlim)
        assert model.conv1.out_channels == manifest.architecture_args["conv1_channels"]
        assert model.conv2.out_channels == manifest.architecture_args["conv2_channels"]
    logits = _predict(model, manifest, test_split.x)
    assert logits.shape == (len(test_split), 10)
    assert logits.dtype == torch.float32
    accuracy = (logits.argmax(dim=1) == test_split.y).double().mean().item()
    assert round(accuracy, 6) == manifest.metrics["test_accuracy"]
    assert manifest.metrics["test_n"] == len(test_split) == 360
    assert manifest.raw["dataset"]["test_indices_sha256"] == indices_sha256(test_split.indices)


def test_int8_and_pruned_are_smaller(base: tuple[Path, Manifest]) -> None:
    base_dir, base_manifest = base
    base_model = load_weights(base_dir, base_manifest)
    base_macs = count_macs(base_model, base_manifest.inputs[0].shape)
    base_params = count_parameters(base_model)
    assert base_manifest.measured["macs_per_item"] == base_macs
    assert base_manifest.measured["parameters"] == base_params

    _, int8 = _variant("int8")
    assert int8.weights_bytes < base_manifest.weights_bytes / 3  # ~4x smaller file
    # Same layers and weight count, each stored and multiplied in 8 bits instead of 32.
    assert int8.measured["macs_per_item"] == base_macs
    assert int8.measured["parameters"] == base_params

    for variant in ("pruned", "distilled"):
        mdir, manifest = _variant(variant)
        model = load_weights(mdir, manifest)
        macs = count_macs(model, manifest.inputs[0].shape)
        params = count_parameters(model)
        assert manifest.measured["macs_per_item"] == macs
        assert manifest.measured["parameters"] == params
        assert macs < base_macs / 2
        assert params < base_params
        assert manifest.weights_bytes < base_manifest.weights_bytes


def test_base_manifests_are_variant_null_and_weights_unchanged(
    base: tuple[Path, Manifest],
) -> None:
    _, base_manifest = base
    assert base_manifest.variant is None
    assert base_manifest.format == "state_dict"
    assert base_manifest.dtype == "float32"
    assert base_manifest.requires_device is None
    assert base_manifest.architecture_args == {}
    assert base_manifest.weights_sha256 == (
        "cc03cd53b200538753852991d4f9220d55b3086f5973c916e16db1d1666c9a1b"
    )
    assert set(base_manifest.measured) == MEASURED_KEYS
    linreg = load_manifest(MODELS_ROOT / "linreg" / "1" / "manifest.json")
    assert linreg.variant is None
    assert linreg.raw["variant"] is None


def test_old_manifest_without_new_keys_parses() -> None:
    raw = json.loads((BASE_DIR / "manifest.json").read_text(encoding="utf-8"))
    for key in ("variant", "measured", "measured_env"):
        raw.pop(key, None)
    manifest = parse_manifest(raw)
    assert (manifest.variant, manifest.format, manifest.dtype) == (None, "state_dict", "float32")
    assert (manifest.requires_device, manifest.architecture_args, manifest.measured) == (
        None,
        {},
        {},
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("variant", "Int 8", "variant"),
        ("format", "onnx", "format must be"),
        ("dtype", "bfloat16", "dtype must be"),
        ("dtype", "float32", "does not fit format"),
        ("requires_device", "tpu", "requires_device"),
        ("architecture_args", [16, 32], "architecture_args"),
        ("measured", {"parameters": "many"}, "measured.parameters"),
    ],
)
def test_parse_manifest_rejects_bad_variant_fields(key: str, value: object, message: str) -> None:
    raw = json.loads((MODELS_ROOT / "cnn" / "1-int8" / "manifest.json").read_text("utf-8"))
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw | {key: value})


def test_discover_rejects_variant_in_wrong_directory(tmp_path: Path) -> None:
    shutil.copytree(MODELS_ROOT / "cnn" / "1-pruned", tmp_path / "cnn" / "1-distilled")
    with pytest.raises(ManifestError, match="do not match"):
        discover(tmp_path)
    shutil.rmtree(tmp_path / "cnn")
    shutil.copytree(MODELS_ROOT / "cnn" / "1-pruned", tmp_path / "cnn" / "1")
    with pytest.raises(ManifestError, match="do not match"):
        discover(tmp_path)


def test_tampered_variant_weights_raise(tmp_path: Path) -> None:
    dst = tmp_path / "cnn" / "1-int8"
    shutil.copytree(MODELS_ROOT / "cnn" / "1-int8", dst)
    manifest = load_manifest(dst / "manifest.json")
    weights = dst / manifest.weights_file
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match="sha256"):
        load_weights(dst, manifest)


def test_bad_architecture_args_raise(tmp_path: Path) -> None:
    mdir, manifest = _variant("pruned")
    raw = manifest.raw | {"architecture_args": {"conv1_channels": 16, "depth": 3}}
    with pytest.raises(ManifestError, match="architecture_args"):
        load_weights(mdir, parse_manifest(raw))
    raw = manifest.raw | {"architecture_args": {"conv1_channels": 8}}
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_weights(mdir, parse_manifest(raw))


def test_prune_channels_keeps_largest_filters_and_function() -> None:
    torch.manual_seed(0)
    teacher = DigitsCNN().eval()
    with torch.no_grad():
        teacher.conv1.weight[5].mul_(100.0)  # must survive pruning
        teacher.conv1.weight[7].zero_()  # must be pruned
    pruned = prune_channels(teacher, 0.5)
    assert (pruned.conv1.out_channels, pruned.conv2.out_channels) == (16, 32)
    assert pruned.fc1.in_features == 32 * 7 * 7
    norms = teacher.conv1.weight.detach().abs().flatten(1).sum(1)
    kept = [
        i
        for i in range(32)
        if any(torch.equal(teacher.conv1.weight[i], w) for w in pruned.conv1.weight)
    ]
    assert 5 in kept
    assert 7 not in kept
    assert min(float(norms[i]) for i in kept) >= max(
        float(norms[i]) for i in range(32) if i not in kept
    )
    # Keeping every channel reproduces the teacher exactly.
    full = prune_channels(teacher, 1.0)
    x = torch.rand(4, 3, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(full(x), teacher(x), atol=1e-5)


def test_measure_only_retimes_the_committed_weights_and_nothing_else(tmp_path: Path) -> None:
    from models.compress import main

    shutil.copytree(MODELS_ROOT / "cnn", tmp_path / "cnn")
    before = {
        p.relative_to(tmp_path): p.read_bytes()
        for p in (tmp_path / "cnn").rglob("*")
        if p.is_file()
    }
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        argv = ["--measure-only", "--out", str(tmp_path), "--repeats", "1", "--no-progress"]
        assert main(argv) == 0
        assert torch.are_deterministic_algorithms_enabled() == deterministic
    finally:
        torch.set_num_threads(threads)
    timings = {"cpu_items_per_s_batch1", "cpu_items_per_s_batch32", "threads"}
    graphs = {}
    for path, old_bytes in before.items():
        new_bytes = (tmp_path / path).read_bytes()
        if path.name != "manifest.json":
            assert new_bytes == old_bytes, path  # weights are never rewritten
            continue
        old, new = json.loads(old_bytes), json.loads(new_bytes)
        for key in set(old) | set(new):
            if key == "measured":
                for field in set(old[key]) | set(new[key]):
                    if field not in timings:
                        assert new[key][field] == old[key][field], (path, field)
                assert new[key]["cpu_items_per_s_batch32"] > 0
            elif key != "measured_env":
                assert new[key] == old[key], (path, key)
        graphs[new["variant"]] = new["measured_env"]["cpu_graph"]
    assert graphs == {
        None: "script",
        "pruned": "script",
        "distilled": "script",
        "int8": "eager",
        "fp16": "eager",
    }
