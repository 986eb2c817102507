"""The generated remotemedia.v1 stubs keep the original runtime's enum names and numbers.

Numbers alone are wire compatible, but generated code and the proto3 JSON mapping of
existing clients use the names, so a renamed value breaks them.
"""

from __future__ import annotations

from remotemedia.v1 import streaming_pb2 as spb


def test_stream_error_type_names_and_numbers_match_the_original() -> None:
    assert dict(spb.StreamErrorType.items()) == {
        "STREAM_ERROR_UNSPECIFIED": 0,
        "STREAM_ERROR_INIT_REQUIRED": 1,
        "STREAM_ERROR_INVALID_SEQUENCE": 2,
        "STREAM_ERROR_BUFFER_OVERFLOW": 3,
        "STREAM_ERROR_TIMEOUT": 4,
        "STREAM_ERROR_CLIENT_DISCONNECT": 5,
        "STREAM_ERROR_EXECUTION": 6,
    }
    # The module-level constants generated code refers to.
    assert spb.STREAM_ERROR_INIT_REQUIRED == 1
    assert spb.STREAM_ERROR_EXECUTION == 6
