"""uvicorn's HTTP/1.1 protocol with a request-header timeout, and the uvicorn settings ``serve`` runs with.

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but not the time a client takes to send a
request's headers: its keep-alive timer is cancelled by the first byte received, and a new connection has no
timer at all. A client that opens a connection and sends nothing, or trickles header bytes at 1 byte/s without
ever finishing the header block, holds the connection (and one of ``limit_concurrency``'s places) forever, so a
few hundred such sockets lock everyone out.

:class:`HeaderTimeoutProtocol` closes such a connection once :attr:`ServerOptions.header_timeout_s
<parakeet_runtime.engine.serving.server.ServerOptions.header_timeout_s>` has passed since the connection was
made, or since the first byte of a later request on a kept-alive connection (the idle time between requests
stays uvicorn's keep-alive timeout, so the two are independent). A client that had sent part of its headers gets
a 408 in OpenAI's error shape first; a silent one is closed without a response. Once a request's headers are
complete the timer stops: the body is bounded by ``body_timeout_s`` in the app. A request h11 cannot parse gets
uvicorn's 400 with a body in OpenAI's error shape (uvicorn's own is plain text), and so does a request refused
because ``limit_concurrency`` open connections (or requests) are reached: a 503 with ``Retry-After``
(:func:`_connection_limited` applies uvicorn's test; uvicorn's own answer is plain text). h11 bounds a request's
head (request line and headers) only while it arrives over several reads: :func:`_head_checked` answers 431 to a
head over the same limit that came in one read, and 400 to a request framed both by ``Content-Length`` and
``Transfer-Encoding`` (a way to smuggle a second request past a proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping, Sized
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .options import ServerOptions

logger = logging.getLogger(__name__)

_H11_HEAD_LIMIT = 16 * 1024
"""h11's default ``max_incomplete_event_size`` (uvicorn's when ``h11_max_incomplete_event_size`` is not set)."""


def _error_body(message: str, code: str, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


_Asgi = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                 Coroutine[Any, Any, None]]


def _connection_limited(app: _Asgi, limit: int, connections: Sized, tasks: Sized, retry_after_s: int) -> _Asgi:
    """``app``, except that a request arriving while ``limit`` connections are open or ``limit`` requests are
    running (uvicorn's ``limit_concurrency`` test, made when the request's task starts, so the request's own task
    is counted) gets a 503 in OpenAI's error shape with ``Retry-After``, and its connection is closed."""
    overloaded = _closing_error("too many connections; retry later", "overloaded", kind="server_error",
                                retry_after_s=retry_after_s)

    async def limited(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http" and (len(connections) >= limit or len(tasks) > limit):
            logger.warning("%d connections open, %d requests running (limit %d): answered 503", len(connections),
                           len(tasks), limit)
            await _send_error(send, 503, overloaded)
            return
        await app(scope, receive, send)

    return limited


def _head_size(scope: MutableMapping[str, Any]) -> int:
    """The fewest bytes the request line and headers that made ``scope`` can have had (what h11's limit counts):
    no space after a header's colon, no ``?`` without a query, and the path as sent (uvicorn's ``raw_path``
    starts with the app's ``root_path``), so a head within h11's limit is never counted over it."""
    query = scope.get("query_string", b"")
    path = len(scope.get("raw_path", b"")) - len(str(scope.get("root_path", "")).encode())
    line = len(scope.get("method", "")) + 1 + max(path, 1) + (len(query) + 1 if query else 0) + len(" HTTP/1.1\r\n")
    return line + sum(len(name) + 1 + len(value) + 2 for name, value in scope.get("headers", ())) + 2


_Response = tuple[list[tuple[bytes, bytes]], bytes]
"""An error response's headers and body."""


def _closing_error(message: str, code: str, *, kind: str = "invalid_request_error",
                   retry_after_s: int | None = None) -> _Response:
    """The headers and body of an error in OpenAI's shape after which the connection is closed."""
    body = _error_body(message, code, kind)
    retry = [] if retry_after_s is None else [(b"retry-after", str(retry_after_s).encode())]
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *retry,
            (b"connection", b"close")], body


async def _send_error(send: Callable[[Any], Awaitable[None]], status: int, response: _Response) -> None:
    headers, body = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _head_checked(app: _Asgi, limit: int) -> _Asgi:
    """``app``, except that an HTTP request whose head is over ``limit`` bytes (h11's limit, which h11 applies only
    to a head arriving over several reads) gets a 431, and one with both ``Content-Length`` and
    ``Transfer-Encoding`` a 400 (h11 frames it as chunked and keeps the connection: what follows the chunked body
    would be read as another request, which a proxy framing by ``Content-Length`` never saw; RFC 9112 section 6.3),
    both in OpenAI's error shape, and the connection is closed."""
    too_large = _closing_error(f"the request line and headers are over {limit} bytes",
                               "request_headers_too_large")
    ambiguous = _closing_error("malformed HTTP request (both Content-Length and Transfer-Encoding)",
                               "invalid_http_request")

    async def checked(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
        refusal = None
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope.get("headers", ())}
            if (size := _head_size(scope)) > limit:
                logger.info("request head of about %d bytes (limit %d): answered 431", size, limit)
                refusal = 431, too_large
            elif b"content-length" in names and b"transfer-encoding" in names:
                logger.info("request with both Content-Length and Transfer-Encoding: answered 400")
                refusal = 400, ambiguous
        if refusal is None:
            await app(scope, receive, send)
            return
        await _send_error(send, *refusal)

    return checked


def _timeout_response(timeout_s: float) -> bytes:
    body = _error_body(f"the request headers did not arrive within {timeout_s:g} s", "request_timeout")
    head = ("HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    return head + body


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol that closes connections whose request headers do not arrive in time.

    The timeout is the class attribute :attr:`header_timeout_s`; :func:`protocol_class` makes a subclass with a
    given value (uvicorn instantiates the protocol class itself, with its own arguments)."""

    header_timeout_s: float = ServerOptions.header_timeout_s
    retry_after_s: int = ServerOptions.retry_after_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        configured = self.config.h11_max_incomplete_event_size
        self.app = _head_checked(self.app, _H11_HEAD_LIMIT if configured is None else configured)
        if self.limit_concurrency is not None:  # uvicorn's own test answers in plain text: see _connection_limited
            self.app = _connection_limited(self.app, self.limit_concurrency, self.connections, self.tasks,
                                           self.retry_after_s)
            self.limit_concurrency = None

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _waiting_for_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._waiting_for_headers() and data:
            self._arm_header_timer()  # the first byte of the next request on a kept-alive connection
        self._header_bytes += len(data)
        super().data_received(data)
        if not self._waiting_for_headers():
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request, whose headers are then complete
        if not self._waiting_for_headers() or self.transport.is_closing():
            self._cancel_header_timer()
        elif self._header_timer is None and (pipelined := len(self.conn.trailing_data[0])):
            # part of the next request's head came with the last one (no later data_received arms the timer)
            self._arm_header_timer()
            self._header_bytes = pipelined

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (malformed request line or headers, headers over h11's size limit, bad
        chunked framing): uvicorn's 400, with a body in OpenAI's error shape instead of plain text."""
        headers, body = _closing_error(f"malformed HTTP request ({msg.rstrip('.')})", "invalid_http_request")
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._waiting_for_headers():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if self._header_bytes:
            logger.info("request headers from %s incomplete after %g s (%d bytes); answered 408 and closed",
                        client, self.header_timeout_s, self._header_bytes)
            # h11 cannot answer a request it has not parsed: the response is written as bytes, then the
            # connection is closed (as a keep-alive timeout does).
            self.transport.write(_timeout_response(self.header_timeout_s))
        else:
            logger.debug("no request from %s within %g s of connecting; closed", client, self.header_timeout_s)
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()


def protocol_class(header_timeout_s: float,
                   retry_after_s: int = ServerOptions.retry_after_s) -> type[HeaderTimeoutProtocol]:
    """A :class:`HeaderTimeoutProtocol` subclass with ``header_timeout_s`` and the ``Retry-After`` of its
    connection-limit 503, for uvicorn's ``http=``."""
    if isinstance(header_timeout_s, bool) or not (header_timeout_s > 0 and math.isfinite(header_timeout_s)):
        raise ValueError(f"header_timeout_s must be a positive number of seconds, got {header_timeout_s}")
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,),
                {"header_timeout_s": float(header_timeout_s), "retry_after_s": int(retry_after_s)})


def uvicorn_settings(options: ServerOptions) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` that enforce ``options``' connection limits
    and timeouts (the protocol with the header timeout, keep-alive, connection limit, shutdown grace)."""
    return {"http": protocol_class(options.header_timeout_s, options.retry_after_s),
            "timeout_keep_alive": options.keep_alive_s, "limit_concurrency": options.max_connections,
            "timeout_graceful_shutdown": options.shutdown_grace_s}
