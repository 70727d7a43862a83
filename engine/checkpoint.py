"""The checkpoint format: one plain dict, written atomically, read by exactly one function.

A checkpoint never pickles classes: it holds the architecture's *name* and config values, the
``state_dict`` tensors, and plain metadata, so it loads with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from .nets import build_model, config_to_dict, count_parameters

FORMAT = "mnistsite.checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "arch", "config", "state_dict")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format
_PICKLE_PROTO = b"\x80"  # a bare pickle stream (legacy torch.save, or plain pickle.dump)


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
    """Build the architecture named in the checkpoint and load its weights (strictly), in eval mode."""
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
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: 'state_dict' must map names to tensors")


def _unsupported_reason(exc: BaseException) -> str:
    """The one useful line of torch's weights-only refusal, e.g. 'Unsupported global: GLOBAL posix.system'."""
    for line in str(exc).splitlines():
        if "Unsupported" in line:
            return " — " + line.strip().rstrip(".")
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
