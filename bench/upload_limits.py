"""What the hostile uploads of the security review cost now, each in a fresh process: peak memory (the
growth of the peak resident set, ``VmHWM``, over the process's own start-up with torch and Django
imported) and the refusal.

    python bench/upload_limits.py [--rows 200000] [--json PATH]

Cases (the files are built here, in a temporary folder; none is kept):

- ``gzip-bomb``: a dataset zip whose ``drawings/images-idx3-ubyte.gz`` (1.4 MB) inflates to 1.49 GB; its
  IDX header says 4 images (the review: a web worker reached 3.29 GB before refusing).
- ``huge-manifest``: a dataset zip of 4 drawings whose ``manifest.csv`` has 2 million rows (the review: 1.31 GB).
- ``wide-checkpoint``: a 254 KB checkpoint whose config says ``cnn {"widths": [4096, 4096, 4096]}``
  (the review: a 2 GB model was built before it was refused).
- ``largest-dataset``: a well-formed dataset zip of ``--rows`` drawings (the default is
  ``DRAWINGS_IMPORT_MAX_ROWS``), read and checked as an import reads it, without storing it: the memory
  the largest import accepted needs before its rows are written.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs in the child: argv = case, path. Prints one JSON line.
CHILD = r"""
import json, sys, time
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mnistsite.settings")
django.setup()
import torch, zipfile
from classifier import dataset
from engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from mnistsite.errors import ApplicationError
case, path = sys.argv[1], sys.argv[2]

class Staff:  # import_drawings checks who imports before it reads anything
    is_active = is_staff = True

def high_water_mb():  # this process's own peak RSS (ru_maxrss also counts the parent's, across fork and exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

before = high_water_mb()
began = time.perf_counter()
outcome = "accepted"
try:
    if case == "wide-checkpoint":
        model_from_checkpoint(load_checkpoint(path))
    elif case == "largest-dataset":
        with zipfile.ZipFile(path) as archive:
            data = dataset._open(archive)
            dataset._check(data)
        outcome = f"read and checked {len(data.labels):,} drawings"
    else:
        dataset.import_drawings(source=path, by=Staff())
except (ApplicationError, CheckpointError) as exc:
    outcome = getattr(exc, "message", str(exc))
grown = high_water_mb() - before
print(json.dumps({"case": case, "peak_growth_mb": round(grown, 1), "seconds": round(time.perf_counter() - began, 2),
                  "outcome": outcome}))
"""

IDX_HEADER = bytes([0, 0, 8, 3])


def images_header(count: int) -> bytes:
    return IDX_HEADER + count.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2


def labels_idx(labels: bytes) -> bytes:
    return bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + labels


def manifest(labels: bytes) -> bytes:
    return b"index,label\n" + b"".join(f"{i},{label}\n".encode() for i, label in enumerate(labels))


def dataset_zip(path: Path, *, images: tuple[str, bytes], labels: bytes, manifest_csv: bytes) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        gzipped = images[0].endswith(".gz")  # stored as it is, as a gzip file usually is
        archive.writestr(f"drawings/{images[0]}", images[1], zipfile.ZIP_STORED if gzipped else zipfile.ZIP_DEFLATED)
        archive.writestr("drawings/labels-idx1-ubyte", labels)
        archive.writestr("drawings/manifest.csv", manifest_csv)


def gzip_bomb(header: bytes, inflated: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(header)]
    zeros = bytes(1 << 20)
    left = inflated - len(header)
    while left > 0:
        parts.append(packer.compress(zeros[:min(left, len(zeros))]))
        left -= len(zeros)
    return b"".join(parts + [packer.flush()])


def build(case: str, folder: Path, rows: int) -> Path:
    path = folder / f"{case}.bin"
    four_labels = labels_idx(bytes([1, 2, 3, 4]))
    if case == "gzip-bomb":
        bomb = gzip_bomb(images_header(4), 1_490_000_000)
        dataset_zip(path, images=("images-idx3-ubyte.gz", bomb), labels=four_labels,
                    manifest_csv=manifest(bytes([1, 2, 3, 4])))
    elif case == "huge-manifest":
        dataset_zip(path, images=("images-idx3-ubyte", images_header(4) + bytes(4 * 784)), labels=four_labels,
                    manifest_csv=b"index,label\n" + b"x\n" * 2_000_000)
    elif case == "largest-dataset":
        import random

        rng = random.Random(0)
        labels = bytes(rng.randrange(10) for _ in range(rows))
        pixels = gzip.compress(images_header(rows) + rng.randbytes(rows * 784), compresslevel=1)
        dataset_zip(path, images=("images-idx3-ubyte.gz", pixels), labels=labels_idx(labels),
                    manifest_csv=manifest(labels))
    elif case == "wide-checkpoint":
        sys.path.insert(0, str(REPO))
        import torch

        from engine.checkpoint import make_checkpoint
        from engine.nets import build_model

        small = build_model("cnn", {"widths": [16, 32, 96]})
        checkpoint = make_checkpoint(model=small, arch="cnn", config={"widths": [16, 32, 96], "dropout": 0.2})
        checkpoint["config"] = {"widths": [4096, 4096, 4096], "dropout": 0.2}
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        path.write_bytes(buffer.getvalue())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="drawings in the largest dataset "
                        "(default: DRAWINGS_IMPORT_MAX_ROWS, 200000)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rows = args.rows or int(os.environ.get("DRAWINGS_IMPORT_MAX_ROWS", 200_000))
    results = []
    with tempfile.TemporaryDirectory(prefix="upload-limits-") as tmp:
        for case in ("gzip-bomb", "huge-manifest", "wide-checkpoint", "largest-dataset"):
            path = build(case, Path(tmp), rows)
            out = subprocess.run([sys.executable, "-c", CHILD, case, str(path)], cwd=REPO, capture_output=True,
                                 text=True, env={**os.environ, "DRAWINGS_IMPORT_MAX_ROWS": str(max(rows, 4))})
            if out.returncode:
                sys.exit(f"{case}: the measuring process failed:\n{out.stderr}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["file_bytes"] = path.stat().st_size
            path.unlink()
            results.append(result)
            print(f"{case:16} file {result['file_bytes'] / 1e6:7.2f} MB  peak +{result['peak_growth_mb']:7.1f} MB  "
                  f"{result['seconds']:6.2f} s  {result['outcome']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
