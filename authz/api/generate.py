"""Regenerate the admin API's Python code and Envoy's descriptor set from ``proto/``.

``python -m authz.api.generate`` (``make proto``) writes, with ``grpc_tools.protoc``:

- ``authz/api/admin/v1/<file>_pb2.py`` / ``_pb2.pyi`` / ``_pb2_grpc.py`` for every
  ``proto/authz/api/admin/v1/*.proto`` (imports are ``authz.api.admin.v1.<file>_pb2``); nothing is
  generated for the vendored ``proto/google/``: ``google.api`` and ``google.rpc`` come from the
  ``googleapis-common-protos`` package;
- ``authz/local/envoy/admin_descriptor.binpb``: a ``FileDescriptorSet`` with imports and source info for Envoy's
  gRPC-JSON transcoder, which also holds ``google/rpc/status.proto`` and ``error_details.proto`` so
  ``convert_grpc_status`` can render the ``google.rpc.ErrorInfo`` details of an error as JSON.

The output is committed; ``tests/unit/test_api_drift.py`` regenerates into a temporary directory and
compares, so a proto change without ``make proto`` fails the tests.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
PROTO_ROOT = REPO / "proto"
PACKAGE_DIR = "authz/api/admin/v1"
DESCRIPTOR = REPO / "authz" / "local" / "envoy" / "admin_descriptor.binpb"
#: Imported only for the descriptor set (error details rendered by the transcoder).
EXTRA_DESCRIPTOR_FILES = ("google/rpc/status.proto", "google/rpc/error_details.proto")

_INIT_DOCS = {
    "authz/api": '"""Generated from proto/ by ``python -m authz.api.generate`` (``make proto``); do not edit."""\n',
    "authz/api/admin": '"""The admin API (generated; see :mod:`authz.api.generate`)."""\n',
    PACKAGE_DIR: '"""``authz.api.admin.v1``: messages and gRPC stubs (generated; do not edit)."""\n',
}


def proto_files(root: Path = PROTO_ROOT) -> list[str]:
    """The admin protos, relative to ``root``, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in (root / PACKAGE_DIR).glob("*.proto"))


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    well_known = str(resources.files("grpc_tools") / "_proto")
    code = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", *args])
    if code != 0:
        raise SystemExit(f"protoc failed (exit {code}): {' '.join(args)}")


def generate(out_root: Path = REPO, descriptor: Path = DESCRIPTOR) -> list[Path]:
    """Write the Python package under ``out_root`` and the descriptor set to ``descriptor``.

    Returns the files written. Stale generated modules (of a deleted proto) are removed first.
    """
    files = proto_files()
    if not files:
        raise SystemExit(f"no protos under {PROTO_ROOT / PACKAGE_DIR}")
    package = out_root / PACKAGE_DIR
    package.mkdir(parents=True, exist_ok=True)
    for stale in package.glob("*_pb2*.py*"):
        stale.unlink()
    _protoc([f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", *files])
    for folder, doc in _INIT_DOCS.items():
        (out_root / folder / "__init__.py").write_text(doc)
    descriptor.parent.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            f"--descriptor_set_out={descriptor}",
            "--include_imports",
            "--include_source_info",
            *files,
            *EXTRA_DESCRIPTOR_FILES,
        ]
    )
    written = sorted(package.glob("*_pb2*.py*")) + [out_root / f / "__init__.py" for f in _INIT_DOCS]
    return [*written, descriptor]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO, help="root of the generated package (default: repo)")
    parser.add_argument("--descriptor", type=Path, default=DESCRIPTOR, help="descriptor set path")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.descriptor):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
