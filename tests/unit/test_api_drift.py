"""The committed admin API code and Envoy descriptor set match proto/, and the protos lint clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from authz.api import generate

# What carries the generator's own version (protoc, grpcio-tools) rather than the API: ignored.
_VERSION_LINE = re.compile(r"^(# Protobuf Python Version: |GRPC_GENERATED_VERSION = )")


def _normalized(path: Path) -> list[str]:
    lines, kept, skipping = path.read_text().splitlines(), [], False
    for line in lines:
        if line.startswith("_runtime_version.ValidateProtobufRuntimeVersion("):
            skipping = True
        if not skipping and not _VERSION_LINE.match(line):
            kept.append(line)
        if skipping and line.strip() == ")":
            skipping = False
    return kept


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("api")
    descriptor = out / "admin_descriptor.binpb"
    generate.generate(out, descriptor)
    return out, descriptor


def test_generated_python_matches_the_protos(regenerated: tuple[Path, Path]) -> None:
    out, _ = regenerated
    fresh = sorted(p.relative_to(out).as_posix() for p in (out / "authz").rglob("*.py*"))
    committed = sorted(
        p.relative_to(generate.REPO).as_posix()
        for p in (generate.REPO / "authz" / "api").rglob("*.py*")
        if p.name != "generate.py" and "__pycache__" not in p.parts
    )
    assert fresh == committed, "run `make proto`: the set of generated files differs"
    for name in fresh:
        if name.endswith("_pb2.py") or name.endswith("_pb2_grpc.py"):
            assert _normalized(out / name) == _normalized(generate.REPO / name), (
                f"{name} is stale: run `make proto`"
            )
        else:
            assert (out / name).read_bytes() == (generate.REPO / name).read_bytes(), (
                f"{name} is stale: run `make proto`"
            )


def test_descriptor_set_matches_and_holds_what_the_transcoder_needs(regenerated: tuple[Path, Path]) -> None:
    _, descriptor = regenerated
    assert descriptor.read_bytes() == generate.DESCRIPTOR.read_bytes(), (
        "run `make proto`: descriptor set is stale"
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file
    names = {f.name for f in files}
    assert {
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/api/httpbody.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
        *generate.proto_files(),
    } <= names
    admin = [f for f in files if f.name.startswith("authz/")]
    assert all(f.source_code_info.location for f in admin), "source info is needed for the transcoder's docs"


def test_one_service_per_file_every_rpc_bound_under_v1_admin() -> None:
    """Under ``/v1/admin/``, except the OAuth endpoint (the token exchange, public: its credential is the
    OAuth access token it carries), which lives under ``/v1/oauth/``. The other public RPC, the receipt
    public keys, stays under ``/v1/admin/``."""
    from google.api import annotations_pb2

    from authz.server.admin.access import RULES

    files = descriptor_pb2.FileDescriptorSet.FromString(generate.DESCRIPTOR.read_bytes()).file
    for file in (f for f in files if f.name.startswith("authz/")):
        assert file.package == "authz.api.admin.v1"
        assert len(file.service) == 1, f"{file.name}: one service per file"
        for method in file.service[0].method:
            rule = method.options.Extensions[annotations_pb2.http]
            bindings = [rule, *rule.additional_bindings]
            for binding in bindings:
                path = getattr(binding, binding.WhichOneof("pattern"))
                oauth = file.service[0].name == "TokenExchangeService"
                assert path.startswith("/v1/oauth/" if oauth else "/v1/admin/"), (method.name, path)
                if oauth:
                    assert RULES[f"/{file.package}.{file.service[0].name}/{method.name}"].public


def test_buf_lint_is_clean() -> None:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if buf is None:
        pytest.skip("buf (buf-bin) is not installed")
    result = subprocess.run([buf, "lint"], cwd=generate.REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
