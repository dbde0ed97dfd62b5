"""The Python ceiling for a durable accept: bare ASGI, msgspec decode, group commit to SQLite.

No auth, no validation beyond msgspec's, no framework: what any Python
gateway on this machine could at best do per durable request. `bench/accept`
runs it beside the real endpoint and prints both.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import msgspec
from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, insert

from wagate.adapters.store.engine import create_engine
from wagate.adapters.store.group_commit import GroupCommitter, Row


class Language(msgspec.Struct):
    code: str


class Template(msgspec.Struct):
    name: str
    language: Language


class Body(msgspec.Struct):
    messaging_product: str
    type: str
    template: Template
    to: str | None = None
    recipient: str | None = None
    recipient_type: str | None = None


metadata = MetaData()
accepted = Table(
    "accepted",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("recipient", Text, nullable=False),
    Column("request", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
decoder = msgspec.json.Decoder(Body)
encoder = msgspec.json.Encoder()
_insert = insert(accepted)


def create_app() -> Any:
    """The ceiling app on WAGATE_DATABASE_URL (a SQLite file)."""
    engine = create_engine(os.environ["WAGATE_DATABASE_URL"])
    state: dict[str, GroupCommitter] = {}

    async def write_batch(rows: Any) -> None:
        async with engine.begin() as connection:
            await connection.execute(_insert, list(rows))

    async def write_one(row: Row) -> None:
        await write_batch([row])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    async with engine.begin() as connection:
                        await connection.run_sync(metadata.create_all)
                    state["committer"] = GroupCommitter(write_batch, write_one)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await engine.dispose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = decoder.decode(body)
        message_id = uuid.uuid4().hex
        await state["committer"].submit(
            {
                "id": message_id,
                "recipient": request.to or request.recipient or "",
                "request": encoder.encode(request).decode(),
                "created_at": 0,
            }
        )
        answer = b'{"messages":[{"id":"' + message_id.encode() + b'"}]}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app
