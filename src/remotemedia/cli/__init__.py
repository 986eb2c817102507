"""The ``remotemedia`` command line."""
