"""The REST front end: an event loop reads every connection; a worker runs a request only once it has arrived
whole.

Built on Tornado's HTTP/1.1 server (``tornado.httpserver.HTTPServer`` with a connection delegate: its parser,
keep-alive, header and body deadlines), on an asyncio loop in one thread. A connection that is idle, stalled or
dripping its request a byte at a time costs a file descriptor and a few kilobytes, never a thread, a worker or a
queue place, and is closed at its deadline:

- ``idle_timeout``: the headers of a request must have arrived whole this long after the connection opened or
  its last answer went out (Tornado's header timeout);
- ``read_timeout``: the body must have arrived whole this long after its headers (Tornado's body timeout).

A whole request that runs a model (every POST) takes one of ``workers`` threads; up to ``queue`` more wait for
one, at most ``queue_timeout`` seconds; beyond that it is answered 503 with ``Retry-After`` at once. Status,
metadata and metrics GETs only read memory and are answered on the loop, so they stay fast under overload.
Request bodies held in memory at once are bounded too (``body_budget`` bytes, by their declared length).

Connections beyond what the process's file descriptor limit leaves room for are accepted, answered 503 and
closed at once, and counted (``cnnkit_rest_connections_refused_total``); if the limit is hit anyway, a spare
descriptor kept for the purpose lets the server accept and close the excess instead of spinning on it.
"""
import asyncio
import concurrent.futures
import errno
import http
import logging
import os
import resource
import threading
import time

from tornado import httputil, iostream
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

from serving.rest import ENTRYPOINT, answer, error_reply, overloaded_reply, route

log = logging.getLogger("serving")
#: descriptors kept free for everything else the process opens (model files, gRPC, logs)
RESERVED_FDS = 64
OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


class Overloaded(Exception):
    pass


class RestServer:
    """``start()`` runs the loop in a thread of its own until ``stop()``, which drains: it stops
    accepting, lets requests that arrived finish, then closes every connection. The listening socket is bound in
    the constructor, so a port in use is an ``OSError`` there."""

    def __init__(self, address, repository, metrics, max_body_bytes, workers=16, queue=64, read_timeout=10.0,
                 idle_timeout=10.0, queue_timeout=10.0, body_budget=None):
        self.repository, self.metrics = repository, metrics
        self.max_body_bytes = max_body_bytes
        self.body_budget = body_budget or max(4 * max_body_bytes, 256 << 20)
        self.workers, self.queue = workers, queue
        self.read_timeout, self.idle_timeout, self.queue_timeout = read_timeout, idle_timeout, queue_timeout
        self._sockets = bind_sockets(address[1], address[0], backlog=1024)
        self.server_address = self._sockets[0].getsockname()[:2]
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.max_connections = max(1, soft - _open_fds() - RESERVED_FDS)
        self._spare = os.open(os.devnull, os.O_RDONLY)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="rest")
        self._connections = 0
        self._admitted = 0  # requests running or waiting for a worker
        self._in_flight = 0  # requests that arrived and are not answered yet
        self._buffered = 0  # declared body bytes of requests being read
        self.draining = False
        self._loop, self._stop, self._thread = asyncio.new_event_loop(), asyncio.Event(), None

    # -- the loop --------------------------------------------------------------------------------------------
    def start(self):
        """Run the loop in a thread of its own."""
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), name="rest",
                                        daemon=True)
        self._thread.start()

    async def _serve(self):
        self._slots = asyncio.Semaphore(self.workers)
        self._http = _HTTPServer(self, idle_connection_timeout=self.idle_timeout, body_timeout=self.read_timeout,
                                 max_body_size=1 << 62, chunk_size=1 << 16)
        io_loop = IOLoop.current()
        for sock in self._sockets:
            io_loop.add_handler(sock, self._accept, IOLoop.READ)
        await self._stop.wait()
        for sock in self._sockets:
            io_loop.remove_handler(sock)
        self.server_close()
        self.draining = True
        while self._in_flight:
            await asyncio.sleep(0.02)
        await self._http.close_all_connections()
        self._pool.shutdown(wait=True)
        os.close(self._spare)

    def stop(self):
        """Stop accepting, let requests that arrived finish, close every connection; returns when done."""
        if self._thread is None:  # never started
            self.server_close()
            os.close(self._spare)
            self._pool.shutdown()
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self._loop.close()

    def server_close(self):
        for sock in self._sockets:
            sock.close()

    # -- connections -----------------------------------------------------------------------------------------
    def _accept(self, sock, events):
        for _ in range(128):  # then let the loop serve the connections it has
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as err:
                if err.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self._shed(sock)
                continue
            if self._connections >= self.max_connections:
                self._refuse(connection, "max_connections")
                continue
            self._connections += 1
            self.metrics.rest_connections.inc()
            self._http.handle_stream(iostream.IOStream(connection, max_buffer_size=1 << 20), address)

    def _shed(self, sock):
        """Out of descriptors: free the spare, accept the waiting connection into it, refuse it, take the spare
        back. Without this the listening socket stays readable and the loop spins."""
        os.close(self._spare)
        try:
            connection, _ = sock.accept()
            self._refuse(connection, "fd_limit")
        except OSError:
            pass
        finally:
            self._spare = os.open(os.devnull, os.O_RDONLY)

    def _refuse(self, connection, reason):
        self.metrics.rest_refused.labels(reason).inc()
        body = (b'{"error": "overloaded: too many open connections; retry"}')
        try:
            connection.setblocking(False)
            connection.send(OVERLOADED % (len(body), body))
        except OSError:
            pass
        connection.close()

    def _closed(self):
        self._connections -= 1
        self.metrics.rest_connections.dec()

    # -- requests --------------------------------------------------------------------------------------------
    def reserve(self, size):
        if self._buffered + size > self.body_budget:
            return False
        self._buffered += size
        return True

    def release(self, size):
        self._buffered -= size

    async def respond(self, request):
        """Answer a request that has arrived whole (on the loop)."""
        call = route(request.method, request.target)
        self._in_flight += 1
        try:
            if request.refusal is not None:
                reply = request.refusal
            elif not call.work:
                reply = answer(self.repository, self.metrics, call, None)
            else:
                try:
                    reply = await self._work(request, call)
                except Overloaded as err:
                    reply = overloaded_reply(str(err))
            if reply is not None:
                request.send(reply, close=self.draining or reply.code == 413)
                if call.api not in ("metrics", "page"):
                    self.metrics.observe(self.repository.label(call.name), call.api, ENTRYPOINT, reply.status,
                                         time.perf_counter() - request.started)
        finally:
            request.release()
            self._in_flight -= 1

    async def _work(self, request, call):
        if self._admitted >= self.workers + self.queue:
            raise Overloaded(self._overloaded_message())
        self._admitted += 1
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), self.queue_timeout)
            except asyncio.TimeoutError:
                raise Overloaded(self._overloaded_message()) from None
            try:
                if request.closed:  # its client left while it waited: run nothing for nobody
                    return None
                body = b"".join(request.chunks)
                request.chunks = None
                return await self._loop.run_in_executor(self._pool, answer, self.repository, self.metrics, call,
                                                        body)
            finally:
                self._slots.release()
        finally:
            self._admitted -= 1

    def _overloaded_message(self):
        return (f"overloaded: {self.workers} requests in progress and up to {self.queue} waiting "
                f"(at most {self.queue_timeout:g} s); retry")


class _HTTPServer(HTTPServer):
    """Tornado's server, handing each request to a ``_Request`` of the front end and telling it of each closed
    connection."""

    def start_request(self, server_conn, request_conn):
        return _Request(self.request_callback, request_conn)

    def on_close(self, server_conn):
        super().on_close(server_conn)
        self.request_callback._closed()


class _Request(httputil.HTTPMessageDelegate):
    """One request on one connection, as Tornado reads it: headers, body chunks, end."""

    def __init__(self, front, conn):
        self.front, self.conn = front, conn
        self.chunks, self.size, self.reserved = [], 0, 0
        self.refusal = None  # the error reply decided from the headers or the body's size
        self.closed = self.scheduled = self.answered = False
        self.method = self.target = None

    def headers_received(self, start_line, headers):
        self.started = time.perf_counter()
        self.method, self.target = start_line.method, start_line.path
        front, limit = self.front, self.front.max_body_bytes
        length = headers.get("Content-Length")
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        if length is None and not chunked:  # no body
            if self.method == "POST":
                self.refusal = error_reply(400, "a POST needs a Content-Length header", "INVALID_ARGUMENT")
        elif length is not None and not length.isdigit():
            self.refusal = error_reply(400, f"Content-Length {length[:40]!r} is not a number", "INVALID_ARGUMENT")
        elif length is not None and int(length) > limit:
            self.refusal = _too_large(int(length), limit)
            if int(length) > 4 * limit:  # not worth reading away: answer now, close after the answer
                self.finish()
        elif not front.reserve(int(length) if length else limit):
            self.refusal = overloaded_reply("overloaded: too many request bodies arriving at once; retry")
            self.finish()
        else:
            self.reserved = int(length) if length else limit

    def data_received(self, chunk):
        if self.refusal is not None or self.chunks is None:
            return  # read away, so that the client gets to see the answer
        self.size += len(chunk)
        if self.size > self.front.max_body_bytes:  # a chunked body that grew over the limit
            self.refusal, self.chunks = _too_large(self.size, self.front.max_body_bytes), []
            return
        self.chunks.append(chunk)

    def finish(self):
        """The request has arrived (or its answer is decided early, from its headers): answer it, once."""
        if not self.scheduled:
            self.scheduled = True
            self.front._loop.create_task(self.front.respond(self))

    def on_connection_close(self):
        self.closed = True
        self.release()

    def release(self):
        self.front.release(self.reserved)
        self.reserved = 0

    def send(self, reply, close=False):
        if self.answered or self.closed:
            return
        self.answered = True
        headers = httputil.HTTPHeaders({"Content-Type": reply.content_type, "Content-Length": str(len(reply.payload)),
                                        "Server": "cnnkit-serving"})
        for name, value in reply.headers:
            headers[name] = value
        if close:
            headers["Connection"] = "close"
        try:
            written = self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", reply.code,
                                                                         http.HTTPStatus(reply.code).phrase),
                                              headers, reply.payload)
            self.conn.finish()
        except (iostream.StreamClosedError, httputil.HTTPOutputError):
            return
        if close:
            written.add_done_callback(lambda _: self.conn.close())


def _too_large(length, limit):
    return error_reply(413, f"request body of {length} bytes is over the limit of {limit}", "RESOURCE_EXHAUSTED")


def _open_fds():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32
