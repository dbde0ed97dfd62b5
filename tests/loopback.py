"""httpx's request functions for the suite's plain HTTP on loopback, sharing one TLS context.

`httpx.get()` and friends build a client per call, and each client's default TLS
context loads certifi's CA bundle: ~20 ms of CPU a request, which was 63% of the test
process's CPU in the HTTP-heavy modules (test_send_endpoint, test_reads, test_delivery).
These are the same functions with httpx's own default context, made once.
"""

from __future__ import annotations

import functools

import httpx

TLS = httpx.create_ssl_context()

get = functools.partial(httpx.get, verify=TLS)
post = functools.partial(httpx.post, verify=TLS)
put = functools.partial(httpx.put, verify=TLS)
patch = functools.partial(httpx.patch, verify=TLS)
delete = functools.partial(httpx.delete, verify=TLS)
options = functools.partial(httpx.options, verify=TLS)
request = functools.partial(httpx.request, verify=TLS)
