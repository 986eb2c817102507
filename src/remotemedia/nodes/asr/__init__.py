"""Speech recognition nodes."""
