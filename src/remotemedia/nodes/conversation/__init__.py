"""Conversation nodes: turns, replies and barge-in."""
