"""The remotemedia.v1 service: protocol semantics between the wire and sessions."""
