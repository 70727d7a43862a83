"""The checkpoint format: one plain dict, written atomically, read by exactly one function.

A checkpoint never pickles classes: it holds the architecture's *name* and config values, the
``state_dict`` tensors, and plain metadata, so it loads with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from .nets import MAX_PARAMETERS, build_model, config_to_dict, count_parameters

FORMAT = "mnistsite.checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "arch", "config", "state_dict")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format
_PICKLE_PROTO = b"\x80"  # a bare pickle stream (legacy torch.save, or plain pickle.dump)
# Elements in all of a checkpoint's tensors: the parameters of the largest network a run may train, and
# as many again for buffers (batch norm statistics are a few per channel). Checked before any tensor is read.
MAX_STATE_ELEMENTS = 2 * MAX_PARAMETERS
# How deep and how large the plain values beside the weights (metrics, training record...) may be.
MAX_VALUE_DEPTH = 16
MAX_VALUE_ITEMS = 1_000_000


class CheckpointError(Exception):
    """The file is not a usable mnistsite checkpoint; the message says why."""


def sha256_of(source: str | Path | bytes | BinaryIO) -> str:
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
    elif isinstance(source, (str, Path)):
        with open(source, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    else:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_checkpoint(
    *,
    model: nn.Module,
    arch: str,
    config: Any,
    metrics: dict[str, Any] | None = None,
    preprocessing: str = "",
    training: dict[str, Any] | None = None,
    data_fingerprint: str = "",
    created_at: datetime | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict for a plain (unwrapped) module. Tensors are copied to the CPU.

    ``calibration`` (``engine.calibration.calibration_record``) holds the serving temperature; a
    checkpoint without it is served with ``T = 1``.
    """
    config_dict = config if isinstance(config, dict) else config_to_dict(config)
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    checkpoint = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": config_dict,
        "state_dict": state,
        "num_parameters": count_parameters(model),
        "metrics": metrics or {},
        "preprocessing": preprocessing,
        "training": training or {},
        "data_fingerprint": data_fingerprint,
        "created_at": (created_at or datetime.now(timezone.utc)).isoformat(),
        "torch_version": str(torch.__version__),
    }
    if calibration is not None:
        checkpoint["calibration"] = dict(calibration)
    return checkpoint


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> str:
    """Write ``checkpoint`` to ``path`` atomically (temp file in the same folder, then rename).

    Returns the sha256 of the written file.
    """
    _validate(checkpoint, source=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    load_checkpoint(data)  # never write a file that the loader would refuse
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(
    source: str | Path | bytes | BinaryIO, *, sha256: str | None = None
) -> dict[str, Any]:
    """Read a checkpoint from a path, bytes or a binary file object; the only loader in the project.

    Uses ``weights_only=True``: a pickle that tries to build arbitrary objects or run code is refused.
    When ``sha256`` is given the bytes must match it. Raises ``CheckpointError`` with a clear message
    for anything that is not a valid checkpoint.
    """
    name = str(source) if isinstance(source, (str, Path)) else "uploaded file"
    try:
        if isinstance(source, (str, Path)):
            data = Path(source).read_bytes()
        elif isinstance(source, bytes):
            data = source
        else:
            data = source.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {name} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {name}: {exc}") from exc
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise CheckpointError(
                f"checkpoint {name} failed its integrity check: sha256 is {actual}, expected {sha256}"
            )
    if not data:
        raise CheckpointError(f"checkpoint {name} is empty")
    if not (data.startswith(_ZIP_MAGIC) or data.startswith(_PICKLE_PROTO)):
        raise CheckpointError(f"{name} is not a PyTorch checkpoint file")
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{name} was refused: it contains objects other than tensors and plain values "
            f"(a checkpoint must be loadable with weights_only=True){_unsupported_reason(exc)}"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, KeyError, AttributeError, TypeError) as exc:
        raise CheckpointError(f"{name} is not a PyTorch checkpoint file ({_first_line(exc)})") from None
    _validate(checkpoint, source=name)
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], *, device: str | torch.device = "cpu") -> nn.Module:
    """Build the architecture named in the checkpoint and load its weights (strictly), in eval mode.

    Nothing is allocated before the config is known to be within a run's bounds (``MAX_PARAMETERS``) and
    every tensor of the ``state_dict`` to have the shape that config gives it."""
    _check_fits(checkpoint)
    try:
        model = build_model(checkpoint["arch"], checkpoint["config"])
    except (ValueError, TypeError) as exc:  # includes UnknownArchitectureError
        raise CheckpointError(f"checkpoint describes an unusable model: {exc}") from None
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint weights do not fit architecture {checkpoint['arch']!r}: {_first_line(exc)}"
        ) from None
    return model.to(device).eval()


def _check_fits(checkpoint: dict[str, Any]) -> None:
    """The model the checkpoint describes, built on the meta device (no memory), is within the bounds on a
    run's network, and the ``state_dict`` has exactly its tensors, shape for shape."""
    arch = checkpoint.get("arch")
    if not isinstance(arch, str):
        raise CheckpointError(f"checkpoint describes an unusable model: 'arch' must be a name, not {arch!r:.40}")
    try:
        with torch.device("meta"):
            skeleton = build_model(arch, checkpoint.get("config"))
    except (ValueError, TypeError) as exc:  # includes UnknownArchitectureError
        raise CheckpointError(f"checkpoint describes an unusable model: {exc}") from None
    parameters = count_parameters(skeleton)
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(
            f"checkpoint describes a network of {parameters:,} parameters; at most {MAX_PARAMETERS:,} are "
            "allowed (the bound on a training run's network)"
        )
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    given = {name: tuple(tensor.shape) for name, tensor in checkpoint["state_dict"].items()}
    problems = [f"missing {name}" for name in expected if name not in given]
    problems += [f"unexpected {name}" for name in given if name not in expected]
    problems += [f"{name} is {list(given[name])}, not {list(shape)}"
                 for name, shape in expected.items() if name in given and given[name] != shape]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"checkpoint weights do not fit architecture {arch!r}: {'; '.join(problems[:3])}{more}")


def _validate(checkpoint: Any, *, source: str) -> None:
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not an mnistsite checkpoint (no '{FORMAT}' header)")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{source} is missing checkpoint field(s): {', '.join(missing)}")
    version = checkpoint["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint format version {version!r}; this code reads up to {FORMAT_VERSION}"
        )
    if not isinstance(checkpoint["config"], dict):
        raise CheckpointError(f"{source}: 'config' must be a dict")
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{source}: 'state_dict' must map names to tensors")
    if any(v.layout != torch.strided for v in state.values()):
        raise CheckpointError(f"{source}: 'state_dict' must hold dense tensors")
    elements = sum(v.numel() for v in state.values())  # shapes only: nothing is read yet
    if elements > MAX_STATE_ELEMENTS:
        raise CheckpointError(
            f"{source}: 'state_dict' holds {elements:,} numbers; at most {MAX_STATE_ELEMENTS:,} are accepted"
        )
    for name, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: weight {name!r} holds NaN or infinite values")
    for key, value in checkpoint.items():
        if key != "state_dict":
            check_plain(value, where=key, source=source)


def check_plain(value: Any, *, where: str, source: str) -> None:
    """Everything beside the weights is plain JSON-able data (it is stored in the database as JSON):
    dicts with string keys, lists, strings, whole numbers, finite floats, booleans, None."""
    stack = [(value, where, 0)]
    seen = 0
    while stack:
        item, path, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUE_ITEMS or depth > MAX_VALUE_DEPTH:
            raise CheckpointError(f"{source}: {where!r} is too large or too deeply nested")
        if isinstance(item, float):
            if not math.isfinite(item):
                raise CheckpointError(f"{source}: {path} is {item}, not a finite number")
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise CheckpointError(f"{source}: {path} has a key that is not a string ({key!r:.40})")
                stack.append((child, f"{path}[{key!r:.60}]", depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif not (item is None or isinstance(item, (str, int, bool))):
            raise CheckpointError(f"{source}: {path} holds a {type(item).__name__}; only plain values "
                                  "(numbers, strings, lists, dicts) may be stored beside the weights")


def _unsupported_reason(exc: BaseException) -> str:
    """The one useful line of torch's weights-only refusal, e.g. 'Unsupported global: GLOBAL posix.system'."""
    for line in str(exc).splitlines():
        if "Unsupported" in line:
            return " — " + line.strip().rstrip(".")
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
