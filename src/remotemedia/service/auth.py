"""Bearer-token checks for every RPC (sans-IO).

Messages are the original runtime's, word for word, so existing clients that match
on them keep working. Tokens are compared in constant time, against every
configured token, so neither a token's content nor which token matched leaks
through timing.
"""

from __future__ import annotations

import hmac

from remotemedia.config import AuthConfig
from remotemedia.errors import AuthenticationError

__all__ = ["check_authorization"]

MISSING = "Missing authorization header. Include 'authorization: Bearer <token>' in gRPC metadata."
BAD_FORMAT = "Invalid authorization format. Expected 'Bearer <token>'"
BAD_TOKEN = "Invalid API token. Check your authentication credentials."
_PREFIX = "Bearer "


def check_authorization(header: str | None, config: AuthConfig) -> None:
    """Check an ``authorization`` metadata value against the configured tokens.

    Raises:
        AuthenticationError: Auth is required and the header is missing, malformed
            or carries an unknown token.
    """
    if not config.required:
        return
    if header is None:
        raise AuthenticationError(MISSING)
    if not header.startswith(_PREFIX):
        raise AuthenticationError(BAD_FORMAT)
    offered = header[len(_PREFIX) :].encode()
    matched = False
    for token in config.tokens:
        matched |= hmac.compare_digest(offered, token.encode())
    if not matched:
        raise AuthenticationError(BAD_TOKEN)
