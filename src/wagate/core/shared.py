"""One lookup for every caller that asks for the same key while it runs (single flight).

When a cached answer expires under load, every request in flight misses at once;
without this each would ask the database itself, and a pool of a few connections
would queue dozens of identical queries behind the writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


async def shared(
    lookups: MutableMapping[K, asyncio.Future[T]], key: K, look_up: Callable[[], Awaitable[T]]
) -> T:
    """The result of `look_up()`, shared with every caller that asks for `key` meanwhile.

    A caller that is cancelled leaves the lookup running for the others; a lookup
    that fails fails every caller that waited for it, and the next caller asks again.
    Removing `key` from `lookups` (a forget) makes the next caller start a new lookup.
    """
    lookup = lookups.get(key)
    if lookup is None:
        lookup = asyncio.ensure_future(look_up())
        lookups[key] = lookup

        def done(finished: asyncio.Future[T]) -> None:
            if lookups.get(key) is finished:  # not a newer lookup begun after a forget
                del lookups[key]
            if not finished.cancelled():
                finished.exception()  # retrieved: every waiter may have gone

        lookup.add_done_callback(done)
    return await asyncio.shield(lookup)
