"""The remotemedia.v1 service: protocol semantics between the wire and sessions.

Built by one composition root (:mod:`~remotemedia.service.compose`); every edge runs
its calls through :mod:`~remotemedia.service.calls`.
"""
