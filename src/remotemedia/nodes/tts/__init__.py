"""Text-to-speech nodes."""
