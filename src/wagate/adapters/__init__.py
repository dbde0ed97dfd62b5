"""Adapters: storage, upstream client, sandbox, HTTP, CLI."""
