"""What the fuzz harnesses share: atheris when it is installed (``make fuzz``), plain imports otherwise
(the bounded always-run check in ``tests/unit/test_fuzz_harnesses.py`` calls ``one_input`` directly)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

try:
    import atheris
except ImportError:  # not in the dev extra: the harnesses still import and run without coverage
    atheris = None


def instrumented(active: bool) -> contextlib.AbstractContextManager:
    """``atheris.instrument_imports()`` (coverage feedback for the code under test) when the harness runs
    as the fuzzer (``active``) and atheris is installed; a no-op when a test imports the harness."""
    if active and atheris is not None:
        return atheris.instrument_imports(include=["authz"])
    return contextlib.nullcontext()


def main(one_input: Callable[[bytes], None]) -> None:
    if atheris is None:
        raise SystemExit("atheris is not installed: pip install -e '.[fuzz]' (make fuzz does)")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
