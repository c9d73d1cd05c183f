"""Coverage-guided fuzzing of token decoding and the caveat grammar (atheris; ``make fuzz``).

Any input is a token string (as text, and as base64url of the raw bytes) and a caveat: authenticating
must return a value (AuthenticatedToken or TokenRejection), never raise; parsing a caveat may raise only
InvalidArgument. A crash is an uncaught exception or a failed assertion.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from tests.fuzz._harness import instrumented, main

with instrumented(active=__name__ == "__main__"):
    from authz.errors import InvalidArgument
    from authz.secrets import Secret
    from authz.token import (
        AuthenticatedToken,
        KeyRing,
        TokenAuthenticator,
        TokenRejection,
        mint,
        parse_caveat,
    )

KEYRING = KeyRing(Secret("fuzz-master-key-0123456789abcdef-0123456789"))
AUTH = TokenAuthenticator(KEYRING, cache_size=0)
#: A valid token, the first entry of the corpus (``make fuzz`` writes it to the corpus directory).
SEED = mint(
    KEYRING,
    tenant="demo",
    agent="a",
    max_calls=5,
    tools=["read_invoice"],
    extra_caveats=["arg:amount <= 100"],
)


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    for token in (text, base64.urlsafe_b64encode(data).rstrip(b"=").decode()):
        result = AUTH.authenticate(token)
        assert isinstance(result, AuthenticatedToken | TokenRejection), type(result)
    with contextlib.suppress(InvalidArgument):
        parse_caveat(text)


if __name__ == "__main__":
    for corpus in (a for a in sys.argv[1:] if not a.startswith("-") and os.path.isdir(a)):
        with open(os.path.join(corpus, "seed-token"), "w") as seed:
            seed.write(SEED)
    main(one_input)
