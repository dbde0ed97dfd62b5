"""Every SQL statement of the store, named, one module per concern.

- `messages`: the outbox (accepting, idempotency) and reading messages back.
- `directory`: projects, API keys and phone numbers (the admin's and the sandbox's view).
- `installation`: small facts of the installation (its webhook secret).
- `queue`: claims, pacing, leases and send outcomes.
- `statuses`: what Meta's webhooks report (statuses, opt-outs, clicks) and timelines.

A statement that does not depend on the database is a module-level constant; one
that does is a small function of the `Dialect` (see `engine.py`), cached. Their
parameters are bound by name, `b_<what>`, because an UPDATE may not bind a name
that is also one of its columns; an INSERT takes rows keyed by column. The
adapters only take a connection, execute a named statement and map its rows;
`tables.py` says which index serves which statement's WHERE.
"""
