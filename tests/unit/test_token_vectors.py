"""The shared attenuation vectors (tests/data/token_vectors.json) still hold for the Python SDK.

The TypeScript SDK's tests read the same file (sdk/typescript/test/vectors.test.mjs), so together the
two suites keep both SDKs' ``attenuate`` byte-identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.client import attenuate, inspect
from tests.data.make_token_vectors import CASES, build, python_kwargs

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "token_vectors.json").read_text())["cases"]


def test_the_committed_vectors_are_what_the_generator_writes():
    assert build() == VECTORS
    assert len(VECTORS) == len(CASES) >= 10


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_python_attenuate_reproduces_the_vector(case):
    out = attenuate(case["token"], **python_kwargs(case["options"]))
    assert out == case["expected"]
    before, after = inspect(case["token"]), inspect(out)
    assert after.caveats[: len(before.caveats)] == before.caveats
    assert len(after.caveats) > len(before.caveats) and not after.problems
