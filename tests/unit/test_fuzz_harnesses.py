"""The atheris harnesses of ``make fuzz``, run here without coverage guidance on a bounded, seeded set of
inputs (their seeds plus mutations of them), so a broken harness or a crash on a known input fails
``make test`` too. The long, coverage-guided runs are ``make fuzz``."""

from __future__ import annotations

import random

import pytest

from tests.fuzz import fuzz_body, fuzz_token


def mutations(seeds: list[bytes], count: int) -> list[bytes]:
    rng = random.Random(14)
    out = list(seeds)
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            action = rng.randrange(3)
            at = rng.randrange(len(data) + 1)
            if action == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif action == 1:
                data[at:at] = bytes([rng.randrange(256)])
            elif data:
                del data[min(at, len(data) - 1)]
        out.append(bytes(data))
    return out


@pytest.mark.parametrize(
    ("harness", "seeds"),
    [
        (fuzz_token, [fuzz_token.SEED.encode(), b"", b"tenant = demo", b"arg:amount <= 100"]),
        (fuzz_body, [*fuzz_body.SEEDS.values(), b"", b"[]", b"{}", b"\xff"]),
    ],
    ids=["token", "body"],
)
def test_harness_survives_its_seeds_and_their_mutations(harness, seeds):
    for data in mutations(seeds, 1500):
        harness.one_input(data)
