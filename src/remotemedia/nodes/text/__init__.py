"""Text nodes."""
