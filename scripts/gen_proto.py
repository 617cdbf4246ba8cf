"""Regenerate the committed protobuf modules under src/boundary_audit/wire/pb.

Uses the protoc bundled in the pinned grpcio-tools wheel (see pyproject's dev
extra), so that everyone produces byte-identical output. ``--check`` compares
instead of writing and exits 1 when the committed files are stale.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
PB_DIR = SRC / "boundary_audit" / "wire" / "pb"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")


def proto_files() -> list[Path]:
    return sorted(PB_DIR.glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Run protoc for every .proto into ``out_dir`` (laid out like ``src``)."""
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{SRC}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(p.relative_to(SRC)) for p in proto_files()),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}: {' '.join(args)}")


def stale_files() -> list[str]:
    """Names of generated files that differ from what protoc produces now."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh_dir = Path(tmp) / PB_DIR.relative_to(SRC)
        fresh = {p.name for p in fresh_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        committed = {p.name for p in PB_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        stale = sorted(fresh ^ committed)
        for name in sorted(fresh & committed):
            if not filecmp.cmp(fresh_dir / name, PB_DIR / name, shallow=False):
                stale.append(name)
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated protobuf files: " + ", ".join(stale), file=sys.stderr)
            print("run: .venv/bin/python scripts/gen_proto.py", file=sys.stderr)
            return 1
        return 0
    for old in PB_DIR.iterdir():
        if old.name.endswith(GENERATED_SUFFIXES):
            old.unlink()
    generate(SRC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
