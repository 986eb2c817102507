"""Generated from proto/remotemedia/v1 by scripts/gen_proto.py; do not edit."""
