"""Generate the JavaScript schema of the remotemedia.v1 messages into the web assets.

    python3 scripts/gen_js_proto.py           # regenerate (commit the result)
    python3 scripts/gen_js_proto.py --check   # exit 1 if the committed file differs (lint)

Reads the descriptors of the committed Python stubs (themselves generated from
proto/ and checked by scripts/gen_proto.py), and writes
src/remotemedia/web/remotemedia_pb.js: every message's fields (number, name, type,
label) and every enum, as data. remotemedia.js encodes and decodes with that table,
so the browser needs no protobuf library.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from remotemedia.v1 import common_pb2, execution_pb2, streaming_pb2

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "remotemedia" / "web" / "remotemedia_pb.js"

_TYPES = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_MESSAGE: "message",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}


def _field(field: FieldDescriptor) -> dict[str, Any]:
    entry: dict[str, Any] = {"no": field.number, "name": field.name, "type": _TYPES[field.type]}
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        entry["map"] = {"key": _TYPES[key.type], "value": _TYPES[value.type]}
        if value.message_type is not None:
            entry["map"]["ref"] = value.message_type.full_name
        if value.enum_type is not None:
            entry["map"]["ref"] = value.enum_type.full_name
        return entry
    if message is not None:
        entry["ref"] = message.full_name
    if field.enum_type is not None:
        entry["ref"] = field.enum_type.full_name
    if field.is_repeated:
        entry["repeated"] = True
        if field.is_packed:
            entry["packed"] = True
    oneof = field.containing_oneof
    if oneof is not None and not oneof.name.startswith("_"):
        entry["oneof"] = oneof.name
    elif field.has_presence and message is None:
        entry["optional"] = True  # proto3 `optional`: sent when set, even to its default
    return entry


def _walk(message: Descriptor, messages: dict[str, Any], enums: dict[str, Any]) -> None:
    if message.GetOptions().map_entry:
        return
    messages[message.full_name] = [_field(field) for field in message.fields]
    for nested in message.nested_types:
        _walk(nested, messages, enums)
    for enum in message.enum_types:
        _enum(enum, enums)


def _enum(enum: EnumDescriptor, enums: dict[str, Any]) -> None:
    enums[enum.full_name] = {value.name: value.number for value in enum.values}


def render() -> str:
    """The module's text."""
    messages: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    for module in (common_pb2, execution_pb2, streaming_pb2):
        file = module.DESCRIPTOR
        for message in file.message_types_by_name.values():
            _walk(message, messages, enums)
        for enum in file.enum_types_by_name.values():
            _enum(enum, enums)
    lines = ["{", ' "messages": {']
    for index, (name, fields) in enumerate(sorted(messages.items())):
        lines.append(f"  {json.dumps(name)}: [")
        lines += [f"   {json.dumps(field)}," for field in fields]
        lines.append("  ]" + ("," if index < len(messages) - 1 else ""))
    lines += [" },", ' "enums": {']
    for index, (name, values) in enumerate(sorted(enums.items())):
        comma = "," if index < len(enums) - 1 else ""
        lines.append(f"  {json.dumps(name)}: {json.dumps(values)}{comma}")
    lines += [" }", "}"]
    body = "\n".join(lines)
    return (
        "// Generated from proto/remotemedia/v1 by scripts/gen_js_proto.py; do not edit.\n"
        "// The remotemedia.v1 messages as data: remotemedia.js encodes and decodes with it.\n"
        f"export const schema = {body};\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(
                f"{OUT.relative_to(ROOT)} does not match proto/; run "
                "`python3 scripts/gen_js_proto.py` and commit the result.",
                file=sys.stderr,
            )
            sys.exit(1)
        print("JavaScript schema is up to date")
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
