"""Running an uploaded model's validation in a child process with a time and memory limit.

The operator's model runs in a fresh "spawn" child, so a model that loops forever, eats all
memory or crashes the interpreter costs that child only. The child sends its result back as
plain data, and the parent unpickles it with a loader that refuses every class and function
(:class:`_PlainUnpickler`): a child subverted by a hostile archive cannot make the parent run
code through the result channel.

Memory: ``memory_bytes`` caps the child's whole address space (``RLIMIT_AS``), torch
included: importing torch maps about 0.9 GB of virtual memory before the model is loaded,
and each thread's stack and malloc arena adds more. :data:`DEFAULT_MEMORY_BYTES` (8 GiB)
leaves room for a model of a few hundred MB, its traced and int8 copies, and the eval data.
CUDA reserves far more address space than it uses, so on a host with a GPU the cap is
applied as ``RLIMIT_DATA`` instead (private writable memory: the heap and every tensor on
the CPU), which CUDA's reservations do not count against.
"""

from __future__ import annotations

import io
import multiprocessing
import pickle
import resource
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

from app.catalog.pipeline import (
    FailureCode,
    PipelineReport,
    ValidationFailed,
    is_out_of_memory,
    process_archive,
)
from app.catalog.spec import ArchiveManifest

__all__ = ["DEFAULT_MEMORY_BYTES", "process_archive_isolated", "run_isolated"]

T = TypeVar("T")

DEFAULT_MEMORY_BYTES = 8 << 30
DEFAULT_TIMEOUT_S = 600.0
# The child imports torch before it starts the clock: that is not the model's time.
STARTUP_TIMEOUT_S = 120.0
MAX_RESULT_BYTES = 16 << 20


def run_isolated(
    fn: Callable[..., T],
    *args: Any,
    timeout_s: float,
    memory_bytes: int | None,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)`` in a spawned child under a memory cap, given ``timeout_s``
    seconds once the child has started (imports done). Blocking: call it from a worker
    thread, never on the event loop. As with any "spawn" child, the parent's ``__main__``
    is re-imported in the child: a script that calls this needs an
    ``if __name__ == "__main__":`` guard.

    ``fn`` must be a module-level function and return plain data (None, numbers, strings,
    bytes, lists, tuples, dicts, sets). A :class:`ValidationFailed` raised in the child is
    raised here with its code; a breach of the limits raises ``ValidationFailed`` with code
    "timeout" or "memory_limit"; any other exception or death of the child, "crashed"."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main, args=(sender, memory_bytes, fn, args, kwargs), daemon=True
    )
    child.start()
    sender.close()
    try:
        started = _receive(receiver, child, STARTUP_TIMEOUT_S)
        if started is None:
            raise ValidationFailed(
                "timeout", f"the validation process did not start within {STARTUP_TIMEOUT_S:g} s"
            )
        if started != ("started",):
            raise ValidationFailed(
                "crashed", "the validation process sent back a malformed message"
            )
        message = _receive(receiver, child, timeout_s)
        if message is None:
            raise ValidationFailed("timeout", f"validation took longer than {timeout_s:g} s")
    except BaseException:
        child.kill()
        raise
    finally:
        receiver.close()
        child.join(5)  # after a result, the child is only exiting
        if child.is_alive():
            child.kill()
            child.join(5)
    return cast(T, _outcome(message))


def process_archive_isolated(
    archive: Path,
    manifest: ArchiveManifest,
    eval_path: Path | None,
    out_dir: Path,
    *,
    tolerance: float = 0.01,
    measure_seconds: float = 0.2,
    threads: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int | None = DEFAULT_MEMORY_BYTES,
) -> PipelineReport:
    """:func:`~app.catalog.pipeline.process_archive` in a child process (see the module
    docstring for what the limits cover)."""
    data = run_isolated(
        _process_in_child,
        str(archive),
        manifest.model_dump(mode="json"),
        None if eval_path is None else str(eval_path),
        str(out_dir),
        tolerance=tolerance,
        measure_seconds=measure_seconds,
        threads=threads,
        timeout_s=timeout_s,
        memory_bytes=memory_bytes,
    )
    return PipelineReport.from_json(data)


def _process_in_child(
    archive: str,
    manifest: dict[str, Any],
    eval_path: str | None,
    out_dir: str,
    *,
    tolerance: float,
    measure_seconds: float,
    threads: int,
) -> dict[str, Any]:
    report = process_archive(
        Path(archive),
        ArchiveManifest.model_validate(manifest),
        None if eval_path is None else Path(eval_path),
        Path(out_dir),
        tolerance=tolerance,
        measure_seconds=measure_seconds,
        threads=threads,
    )
    return report.to_json()


def _child_main(
    sender: Connection,
    memory_bytes: int | None,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """The child: cap memory, say it started, run ``fn``, send the outcome as plain data."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes is not None:
        _limit_memory(memory_bytes)
    sender.send_bytes(pickle.dumps(("started",)))
    message: tuple[Any, ...]
    try:
        message = ("ok", fn(*args, **kwargs))
    except ValidationFailed as exc:
        message = ("failed", exc.code, exc.reason)
    except BaseException as exc:
        if is_out_of_memory(exc):
            message = ("failed", "memory_limit", f"ran out of memory: {exc}"[:500])
        else:
            message = ("failed", "crashed", f"{type(exc).__name__}: {exc}"[:500])
    try:
        payload = pickle.dumps(message)
    except Exception as exc:
        payload = pickle.dumps(("failed", "crashed", f"the result cannot be sent back: {exc}"))
    sender.send_bytes(payload)
    sender.close()


def _limit_memory(memory_bytes: int) -> None:
    import torch

    which = resource.RLIMIT_DATA if torch.cuda.is_available() else resource.RLIMIT_AS
    resource.setrlimit(which, (memory_bytes, memory_bytes))


def _receive(
    receiver: Connection, child: multiprocessing.process.BaseProcess, timeout_s: float
) -> tuple[Any, ...] | None:
    """The child's next message, None on timeout; raises if the child died first."""
    if not receiver.poll(timeout_s):
        return None
    try:
        data = receiver.recv_bytes(MAX_RESULT_BYTES)
    except EOFError:
        child.join(5)
        raise _death(child.exitcode) from None
    except OSError:
        raise ValidationFailed(
            "crashed", f"the validation process sent back more than {MAX_RESULT_BYTES} bytes"
        ) from None
    try:
        message = _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise ValidationFailed(
            "crashed", f"the validation process sent back something other than plain data: {exc}"
        ) from None
    if not isinstance(message, tuple) or not message:
        raise ValidationFailed("crashed", "the validation process sent back a malformed message")
    return message


def _death(exitcode: int | None) -> ValidationFailed:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        if -exitcode == signal.SIGKILL:
            return ValidationFailed(
                "memory_limit",
                "the validation process was killed (SIGKILL), most likely by the system for "
                "using too much memory",
            )
        return ValidationFailed("crashed", f"the validation process died of {name}")
    return ValidationFailed("crashed", f"the validation process exited with status {exitcode}")


def _outcome(message: tuple[Any, ...]) -> Any:
    if message[0] == "ok" and len(message) == 2:
        return message[1]
    if message[0] == "failed" and len(message) == 3:
        _, code, reason = message
        if code not in _CODES:
            code = "crashed"
        raise ValidationFailed(code, str(reason))
    raise ValidationFailed("crashed", "the validation process sent back a malformed message")


_CODES = frozenset(get_args(FailureCode))


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: no global may be looked up, so nothing can be called."""

    _ALLOWED = {("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")
