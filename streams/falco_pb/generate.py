"""Regenerate the Falco gRPC stubs from streams/falco_proto (`--check`: fail if they are stale)."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE.parent / "falco_proto"
PROTOS = ("schema.proto", "outputs.proto", "version.proto")
PACKAGE = "streams.falco_pb"
# schema.proto declares no service, so its (empty) _grpc module is not kept.
STUBS = (
    "schema_pb2.py",
    "schema_pb2.pyi",
    "outputs_pb2.py",
    "outputs_pb2.pyi",
    "outputs_pb2_grpc.py",
    "version_pb2.py",
    "version_pb2.pyi",
    "version_pb2_grpc.py",
)
_LOCAL_IMPORT = re.compile(r"^import (schema_pb2|outputs_pb2|version_pb2) as (\w+)$", re.MULTILINE)


def _protoc(out: Path) -> None:
    from grpc_tools import protoc

    includes = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{includes}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(PROTO_DIR / name) for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see above)")


def _fix(name: str, text: str) -> str:
    # protoc writes top-level imports (`import schema_pb2`); the stubs live in a package.
    text = _LOCAL_IMPORT.sub(rf"from {PACKAGE} import \1 as \2", text)
    if name.endswith("_grpc.py"):
        # The gRPC plugin writes untyped code; the typed surface is the _pb2.pyi files.
        text = "# mypy: ignore-errors\n" + text
    return text


def generate(out: Path) -> None:
    """Write the post-processed stubs into `out`."""
    with tempfile.TemporaryDirectory() as raw:
        _protoc(Path(raw))
        for name in STUBS:
            text = (Path(raw) / name).read_text(encoding="utf-8")
            (out / name).write_text(_fix(name, text), encoding="utf-8")


def check() -> int:
    """0 when the checked-in stubs equal freshly generated ones, else 1 with a diff on stderr."""
    stale = 0
    with tempfile.TemporaryDirectory() as fresh:
        generate(Path(fresh))
        for name in STUBS:
            want = (Path(fresh) / name).read_text(encoding="utf-8")
            path = HERE / name
            have = path.read_text(encoding="utf-8") if path.exists() else ""
            if have != want:
                stale += 1
                diff = difflib.unified_diff(
                    have.splitlines(keepends=True),
                    want.splitlines(keepends=True),
                    f"checked-in/{name}",
                    f"generated/{name}",
                    n=1,
                )
                sys.stderr.writelines(list(diff)[:60])
    if stale:
        print(
            f"{stale} stub file(s) in {HERE} differ from {PROTO_DIR} as compiled by "
            f"grpcio-tools {_tools_version()}; run `python -m streams.falco_pb.generate`",
            file=sys.stderr,
        )
        return 1
    return 0


def _tools_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grpcio-tools")
    except PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    """Command line: regenerate in place, or `--check` that the checked-in stubs are current."""
    parser = argparse.ArgumentParser(
        prog="python -m streams.falco_pb.generate", description=__doc__
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with freshly generated stubs; exit 1 if stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        return check()
    generate(HERE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
