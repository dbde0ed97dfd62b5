"""Use cases, written against the ports: accept, read, administer (later: dispatch, ingest)."""
