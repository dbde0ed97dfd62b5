"""Small facts of the installation, one row per key (e.g. the generated webhook secret)."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select, update

from wagate.adapters.store.tables import installation

WEBHOOK_SECRET_KEY = "webhook_secret"

FACT = select(installation.c.value).where(installation.c.key == bindparam("b_key"))

# Rows keyed by column; a second process inserting the same key fails on the primary key.
INSERT_FACT = insert(installation)

SET_FACT = (
    update(installation)
    .where(installation.c.key == bindparam("b_key"))
    .values(value=bindparam("b_value"))
)
