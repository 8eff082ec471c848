"""Uploaded model archives: which kind a file is, and loading it without running its pickles.

Two kinds are accepted, both self-contained (no Python class of the operator's is needed to
load them): a TorchScript module (``torch.jit.save``) and a ``torch.export`` program
(``torch.export.save``, ``.pt2``). A plain ``torch.save`` file is refused: loading one means
unpickling, which can run any code the file's author chose.

``torch.export.load`` (torch 2.13) is not pickle-free either, although most of a ``.pt2`` is
JSON and raw tensor bytes. It unpickles with no restriction:

* weights and tensor constants marked ``use_pickle`` in ``data/*/model_*_config.json``
  (``torch.load(weights_only=False)``);
* opaque-object constants (``pickle.loads``) and TorchBind objects;
* the legacy ``data/weights/<model>.pt`` / ``data/constants/<model>.pt`` files;
* ``data/sample_inputs/<model>.pt``: it tries ``torch.load(weights_only=True)`` and, if that
  fails, falls back to ``weights_only=False``;
* ``data/aotinductor/``: compiled shared libraries, i.e. native code, loaded if present.

So :func:`inspect_archive` refuses every member that would take one of those paths (from the
ZIP directory and the JSON configs, reading no pickle), and :func:`load_archive` loads the
sample inputs with the restricted unpickler itself before torch does, so torch's fallback
never runs. tests/catalog/test_archive.py proves both against archives that carry a payload.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import torch

__all__ = ["ArchiveFormat", "ArchiveRejected", "inspect_archive", "load_archive"]

ArchiveFormat = Literal["torchscript", "torch_export"]

PLAIN_PICKLE = (
    "a plain torch.save pickle: export the model with torch.jit.save or torch.export.save"
)
MAX_MEMBERS = 100_000

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a first member, or an empty ZIP's end record
# Constant file names of torch.export.save (torch/export/pt2_archive/constants.py).
_TENSOR_CONSTANT_PREFIX = "tensor_"


class ArchiveRejected(Exception):
    """The file is not an archive Tollgate will load; ``str(exc)`` is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def inspect_archive(path: Path) -> ArchiveFormat:
    """Decide an archive's format from its ZIP structure alone, reading no pickle.

    Raises :class:`ArchiveRejected` for a plain ``torch.save`` file (zip or legacy), a file
    that is not a ZIP or is empty, truncated or corrupt, a ZIP whose member names escape its
    folder, and a ``.pt2`` carrying anything ``torch.export.load`` would unpickle freely or
    run as native code."""
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        raise ArchiveRejected("the file is empty")
    if head not in _ZIP_MAGIC:
        if head[:1] == b"\x80":  # the PROTO opcode every torch.save pickle starts with
            raise ArchiveRejected(f"{PLAIN_PICKLE} (a legacy, non-zip one)")
        raise ArchiveRejected("not a ZIP archive (TorchScript and .pt2 files are ZIPs)")
    try:
        with zipfile.ZipFile(path) as archive:
            root, names = _member_names(archive)
            broken = archive.testzip()  # reads every member and checks its CRC
            if broken is not None:
                raise ArchiveRejected(f"the archive is corrupt (member {broken!r})")
            return _classify(archive, root, names)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise ArchiveRejected(f"the archive is truncated or corrupt ({exc})") from None


def load_archive(path: Path, fmt: ArchiveFormat, device: str = "cpu") -> torch.nn.Module:
    """Load an archive of format ``fmt`` onto ``device``, ready for inference.

    The archive is inspected again (a stored archive may have been replaced since it was
    uploaded), so this is safe to call on any file. A ``torch.export`` module is used as
    exported (its train/eval behaviour was fixed at export; ``eval()`` is not supported on
    it); a TorchScript module is put in eval mode."""
    found = inspect_archive(path)
    if found != fmt:
        raise ArchiveRejected(f"the archive is a {found} archive, not {fmt}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            module: torch.nn.Module = torch.jit.load(  # type: ignore[no-untyped-call]
                str(path), map_location=device
            )
            return module.eval()
        _check_sample_inputs(path)
        with path.open("rb") as file:  # a file object: torch wants a path ending in .pt2
            program = torch.export.load(file)
        if torch.device(device).type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        exported: torch.nn.Module = program.module()
        return exported


def _member_names(archive: zipfile.ZipFile) -> tuple[str, set[str]]:
    """The archive's single top-level folder and its members' names below it."""
    infos = archive.infolist()
    if not infos:
        raise ArchiveRejected("the archive is empty")
    if len(infos) > MAX_MEMBERS:
        raise ArchiveRejected(f"the archive has more than {MAX_MEMBERS} members")
    roots: set[str] = set()
    names: set[str] = set()
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if (
            name.startswith(("/", "\\"))
            or "\\" in name
            or ".." in parts
            or (parts and ":" in parts[0])
        ):
            raise ArchiveRejected(f"unsafe member name in the archive: {name!r}")
        if len(parts) < 2:
            raise ArchiveRejected(
                f"member {name!r} is not inside the archive's folder (torch archives keep "
                "everything under one top-level folder)"
            )
        roots.add(parts[0])
        relative = "/".join(parts[1:]) + ("/" if name.endswith("/") else "")
        if relative in names:
            raise ArchiveRejected(f"the archive holds {name!r} twice")
        names.add(relative)
    if len(roots) != 1:
        raise ArchiveRejected("the archive has more than one top-level folder")
    return roots.pop(), names


def _classify(archive: zipfile.ZipFile, root: str, names: set[str]) -> ArchiveFormat:
    if "archive_format" in names:
        if archive.read(f"{root}/archive_format").strip() != b"pt2":
            raise ArchiveRejected("archive_format is not 'pt2': not a torch.export archive")
        _check_pt2_members(archive, root, names)
        return "torch_export"
    if "constants.pkl" in names and any(name.startswith("code/") for name in names):
        return "torchscript"
    if "data.pkl" in names:
        raise ArchiveRejected(PLAIN_PICKLE)
    raise ArchiveRejected(
        "neither a TorchScript (torch.jit.save) nor a .pt2 (torch.export.save) archive"
    )


def _check_pt2_members(archive: zipfile.ZipFile, root: str, names: set[str]) -> None:
    """Refuse a .pt2 member that torch.export.load would unpickle freely or run natively."""
    if any(name.startswith("data/aotinductor/") for name in names):
        raise ArchiveRejected(
            "the .pt2 holds AOTInductor-compiled native code (data/aotinductor/): "
            "upload the exported program without it"
        )
    models = sorted(
        name[len("models/") : -len(".json")]
        for name in names
        if name.startswith("models/") and name.endswith(".json") and name.count("/") == 1
    )
    if models != ["model"]:
        raise ArchiveRejected(
            f"a .pt2 with exactly one program named 'model' is expected (found {models})"
        )
    for kind in ("weights", "constants"):
        if f"data/{kind}/model.pt" in names:
            raise ArchiveRejected(
                f"the .pt2 stores its {kind} in the legacy pickled form: "
                "save it again with this torch's torch.export.save"
            )
        config_name = f"data/{kind}/model_{kind}_config.json"
        if config_name not in names:
            raise ArchiveRejected(f"the .pt2 has no {config_name}")
        for fqn, entry in _payload_config(archive, f"{root}/{config_name}").items():
            if not isinstance(entry, dict):
                raise ArchiveRejected(f"{config_name}: entry {fqn!r} is not an object")
            if entry.get("use_pickle") is not False:
                raise ArchiveRejected(
                    f"the .pt2 stores {kind[:-1]} {fqn!r} as a pickle, which would be loaded "
                    "without restriction: only plain tensors are accepted"
                )
            path_name = entry.get("path_name")
            if kind == "constants" and not (
                isinstance(path_name, str) and path_name.startswith(_TENSOR_CONSTANT_PREFIX)
            ):
                raise ArchiveRejected(
                    f"the .pt2 holds a non-tensor constant {fqn!r} (a pickled object): "
                    "only tensor constants are accepted"
                )
    if "data/sample_inputs/model.pt" not in names:
        raise ArchiveRejected("the .pt2 has no data/sample_inputs/model.pt")


def _payload_config(archive: zipfile.ZipFile, member: str) -> dict[str, Any]:
    try:
        config = json.loads(archive.read(member))["config"]
    except (ValueError, KeyError, TypeError):
        raise ArchiveRejected(f"{member} is not a valid payload config") from None
    if not isinstance(config, dict):
        raise ArchiveRejected(f"{member} is not a valid payload config")
    return config


def _check_sample_inputs(path: Path) -> None:
    """Load the sample inputs with the restricted unpickler, as torch tries first.

    If this fails, torch would retry with ``weights_only=False``: refuse instead. The bytes
    are the same ones torch reads next, so torch's own first try succeeds too."""
    with zipfile.ZipFile(path) as archive:
        root = archive.infolist()[0].filename.split("/", 1)[0]
        data = archive.read(f"{root}/data/sample_inputs/model.pt")
    try:
        loaded = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        raise ArchiveRejected(
            "the .pt2's sample inputs are not plain tensors (torch would load them with an "
            f"unrestricted unpickler): {str(exc).splitlines()[0][:200]}"
        ) from None
    if not isinstance(loaded, tuple | dict):
        raise ArchiveRejected("the .pt2's sample inputs are not a tuple or a dict")
