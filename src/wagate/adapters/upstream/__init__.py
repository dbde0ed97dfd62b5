"""Talking to Meta's Graph API (or the sandbox, which answers like it)."""
