# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A loopback HTTP(S) reverse proxy that injects faults, for tests.

    from tests.stack.faultproxy import FaultProxy   # or put tests/stack on sys.path

    with FaultProxy(os.environ['OBJSTORE_S3_URL'], slowdown_rate=0.2, seed=1) as proxy:
        spec['storage_driver']['config']['url'] = proxy.url
        ...
        assert proxy.injected['slowdown'] > 0

Every request is forwarded (streamed both ways, keep-alive, ``Host``
header kept as sent so S3 SigV4 signatures stay valid) to ``upstream_url``
unless a fault is drawn for it. Faults, drawn per request from a seeded
``random.Random`` in this order:

* ``reset_rate``: the connection is reset (RST) right after the request
  head was read, before anything is answered.
* ``slowdown_rate``: ``503 SlowDown`` with S3's XML error body (JSON
  ``{"error": "slow down"}`` for RustFS ``/api/`` paths), ``Retry-After: 1``.
* ``truncate_rate``: the request is forwarded, but the response body is
  cut after half of its bytes and the connection reset.
* ``delay_rate``: the request is forwarded after ``delay_seconds``.
* ``corrupt_rate``: a PUT is forwarded with one byte of its body flipped (in the middle of its
  first 256 KiB: object data, not the aws-chunked framing, for any body longer than a few bytes),
  as bit rot on the way would.

Rates may be changed on a running proxy (plain attributes). ``injected``
counts what happened: ``reset``, ``slowdown``, ``truncate``, ``delay``,
``corrupt``, ``forwarded``, ``upstream_error``. With ``tls_cert`` and ``tls_key`` the
proxy serves HTTPS (tests make the CA and the certificate with ``trustme``)
so HTTPS clients can be tested against a plain-HTTP upstream.

Request bodies: ``Content-Length`` bodies are forwarded as they are,
``Transfer-Encoding: chunked`` bodies are forwarded chunk by chunk (still
chunked), and ``Expect: 100-continue`` is answered by the proxy itself
(``100 Continue``, or the fault response without reading the body), the
header is not forwarded.
"""

from __future__ import annotations

import http.client
import random
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 256 * 1024
HOP_BY_HOP = frozenset(('connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te',
                        'trailer', 'trailers', 'transfer-encoding', 'upgrade', 'expect', 'proxy-connection'))

SLOWDOWN_XML = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>'
                '<Resource>%s</Resource><RequestId>%s</RequestId></Error>')


class _Reset(Exception):
    """Raised to abort a connection with RST."""


def _reset_socket(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    except OSError:
        pass
    try:
        if isinstance(sock, ssl.SSLSocket):
            raw = socket.socket(fileno=sock.detach())  # drop TLS state, close the TCP socket hard
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            raw.close()
        else:
            sock.close()
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'faultproxy/1.0'
    sys_version = ''
    timeout = 300

    def setup(self):
        super().setup()
        self.upstream = None
        self._corrupt = False
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def finish(self):
        try:
            super().finish()
        finally:
            if self.upstream is not None:
                self.upstream.close()

    def log_message(self, fmt, *args):
        if self.server.proxy.verbose:
            sys.stderr.write('faultproxy: %s\n' % (fmt % args))

    def handle_expect_100(self):
        # Answered in _forward once we know the request goes upstream.
        self._expect_continue = True
        return True

    def handle_one_request(self):
        self._expect_continue = False
        try:
            super().handle_one_request()
        except _Reset:
            self.close_connection = True
            _reset_socket(self.request)
            # Keep socketserver from touching the dead socket.
            self.wfile = _NullWriter()
            self.rfile = _NullReader()
        except (ConnectionError, socket.timeout, ssl.SSLError, OSError):
            self.close_connection = True

    # -- dispatch ---------------------------------------------------------------
    def _dispatch(self):
        proxy = self.server.proxy
        fault = proxy._draw()
        if fault == 'reset':
            raise _Reset()
        if fault == 'slowdown':
            return self._slowdown()
        if fault == 'delay':
            time.sleep(proxy.delay_seconds)
        self._corrupt = False
        if proxy.corrupt_rate and self.command == 'PUT' and self._has_body() and proxy._draw_corrupt():
            self._corrupt = True
        return self._forward(truncate=(fault == 'truncate'))

    def _body_piece(self, data):
        """``data`` as forwarded: the first piece of a body picked for corruption has one byte flipped."""
        if self._corrupt and data:
            self._corrupt = False
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]
            self.server.proxy._count('corrupt')
        return data

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _has_body(self):
        te = (self.headers.get('Transfer-Encoding') or '').lower()
        try:
            return 'chunked' in te or int(self.headers.get('Content-Length') or 0) > 0
        except ValueError:
            return True

    def _slowdown(self):
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith('/api/'):
            body, ctype = b'{"error": "slow down"}', 'application/json'
        else:
            body = (SLOWDOWN_XML % (path, uuid.uuid4().hex[:16].upper())).encode('utf-8')
            ctype = 'application/xml'
        if self._has_body():
            # Never read the body (the client may be waiting for 100 Continue): close afterwards.
            self.close_connection = True
        self.send_response(503, 'Slow Down')
        self.send_header('Content-Type', ctype)
        self.send_header('Retry-After', '1')
        self.send_header('Content-Length', str(len(body)))
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _connect(self):
        proxy = self.server.proxy
        if self.upstream is None:
            if proxy.upstream_scheme == 'https':
                self.upstream = http.client.HTTPSConnection(proxy.upstream_host, proxy.upstream_port,
                                                            timeout=proxy.upstream_timeout,
                                                            context=proxy.upstream_context)
            else:
                self.upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                           timeout=proxy.upstream_timeout)
        return self.upstream

    def _send_request_upstream(self, conn):
        chunked = 'chunked' in (self.headers.get('Transfer-Encoding') or '').lower()
        conn.putrequest(self.command, self.server.proxy.upstream_base + self.path,
                        skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() in HOP_BY_HOP:
                continue
            conn.putheader(name, value)
        if chunked:
            conn.putheader('Transfer-Encoding', 'chunked')
        conn.endheaders()
        if self._expect_continue:
            self._expect_continue = False
            self.wfile.write(b'HTTP/1.1 100 Continue\r\n\r\n')
            self.wfile.flush()
        if chunked:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError('client closed during chunked body')
                size = int(line.split(b';', 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b'\r\n', b'\n', b''):
                        pass
                    conn.send(b'0\r\n\r\n')
                    break
                conn.send(b'%x\r\n' % size)
                left = size
                while left:
                    data = self.rfile.read(min(CHUNK, left))
                    if not data:
                        raise ConnectionError('client closed during chunked body')
                    conn.send(self._body_piece(data))
                    left -= len(data)
                conn.send(b'\r\n')
                self.rfile.readline(3)
        else:
            left = int(self.headers.get('Content-Length') or 0)
            while left:
                data = self.rfile.read(min(CHUNK, left))
                if not data:
                    raise ConnectionError('client closed during body')
                conn.send(self._body_piece(data))
                left -= len(data)

    def _forward(self, truncate=False):
        proxy = self.server.proxy
        try:
            conn = self._connect()
            try:
                self._send_request_upstream(conn)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if self.headers.get('Content-Length') not in (None, '0') or self.headers.get('Transfer-Encoding'):
                    raise
                # A stale keep-alive upstream connection: retry a bodiless request once.
                conn.close()
                self._send_request_upstream(conn)
                response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            proxy._count('upstream_error')
            if self.upstream is not None:
                self.upstream.close()
                self.upstream = None
            body = ('bad gateway: %s' % exc.__class__.__name__).encode()
            self.close_connection = True
            self.send_response(502)
            self.send_header('Content-Type', 'text/plain')
            self.send_header('Content-Length', str(len(body)))
            self.send_header('Connection', 'close')
            self.end_headers()
            self.wfile.write(body)
            return
        proxy._count('truncate' if truncate else 'forwarded')

        self.send_response_only(response.status, response.reason)
        length = response.getheader('Content-Length')
        upstream_chunked = length is None and self.command != 'HEAD' and response.status not in (204, 304) \
            and not (100 <= response.status < 200)
        for name, value in response.getheaders():
            if name.lower() in HOP_BY_HOP:
                continue
            self.send_header(name, value)
        if upstream_chunked:
            self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()
        if self.command == 'HEAD' or response.status in (204, 304):
            response.read()
            self._after_response(response)
            return
        total = int(length) if length is not None else None
        cut = (total // 2) if (truncate and total) else (0 if truncate else None)
        sent = 0
        while True:
            want = CHUNK if cut is None else min(CHUNK, max(cut - sent, 0))
            if cut is not None and want == 0:
                raise _Reset()
            data = response.read1(want) if hasattr(response, 'read1') else response.read(want)
            if not data:
                break
            if upstream_chunked:
                self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
            else:
                self.wfile.write(data)
            sent += len(data)
        if upstream_chunked:
            self.wfile.write(b'0\r\n\r\n')
        if cut is not None:
            raise _Reset()
        response.read()  # marks the upstream response complete so the connection can be reused
        self._after_response(response)

    def _after_response(self, response):
        if response.will_close and self.upstream is not None:
            self.upstream.close()
            self.upstream = None


class _NullWriter(object):
    closed = False

    def write(self, data):
        return len(data)

    def flush(self):
        pass

    def close(self):
        pass


class _NullReader(_NullWriter):
    def read(self, *_):
        return b''

    def readline(self, *_):
        return b''


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address, proxy, ssl_context):
        self.proxy = proxy
        self.ssl_context = ssl_context
        super().__init__(address, _Handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def shutdown_request(self, request):
        try:
            super().shutdown_request(request)
        except OSError:
            pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError, _Reset)):
            return
        super().handle_error(request, client_address)


class FaultProxy(object):
    """See the module docstring."""

    FAULTS = ('reset', 'slowdown', 'truncate', 'delay')

    def __init__(self, upstream_url, slowdown_rate=0.0, reset_rate=0.0, delay_rate=0.0, delay_seconds=0.5,
                 seed=None, tls_cert=None, tls_key=None, truncate_rate=0.0, host='127.0.0.1', port=0,
                 upstream_verify=False, upstream_timeout=120, verbose=False, corrupt_rate=0.0):
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme not in ('http', 'https') or not parsed.hostname:
            raise ValueError('upstream_url must be http(s)://host:port, got %r' % upstream_url)
        self.upstream_url = upstream_url
        self.upstream_scheme = parsed.scheme
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or (443 if parsed.scheme == 'https' else 80)
        self.upstream_base = parsed.path.rstrip('/')
        self.upstream_timeout = upstream_timeout
        self.upstream_context = None
        if parsed.scheme == 'https':
            if upstream_verify is True:
                self.upstream_context = ssl.create_default_context()
            elif upstream_verify:
                self.upstream_context = ssl.create_default_context(cafile=upstream_verify)
            else:
                self.upstream_context = ssl._create_unverified_context()
        self.slowdown_rate = slowdown_rate
        self.reset_rate = reset_rate
        self.delay_rate = delay_rate
        self.delay_seconds = delay_seconds
        self.truncate_rate = truncate_rate
        self.corrupt_rate = corrupt_rate
        self.verbose = verbose
        self.host = host
        self.port = port
        self.tls = bool(tls_cert and tls_key)
        if bool(tls_cert) != bool(tls_key):
            raise ValueError('tls_cert and tls_key go together')
        self._context = None
        if self.tls:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(tls_cert, tls_key)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.injected = dict((name, 0) for name in self.FAULTS + ('corrupt', 'forwarded', 'upstream_error'))
        self._server = None
        self._thread = None

    # -- internals ----------------------------------------------------------------
    def _draw(self):
        with self._lock:
            rng = self._random
            if self.reset_rate and rng.random() < self.reset_rate:
                fault = 'reset'
            elif self.slowdown_rate and rng.random() < self.slowdown_rate:
                fault = 'slowdown'
            elif self.truncate_rate and rng.random() < self.truncate_rate:
                fault = 'truncate'
            elif self.delay_rate and rng.random() < self.delay_rate:
                fault = 'delay'
            else:
                return None
            if fault != 'truncate':  # counted when the response is actually cut
                self.injected[fault] += 1
            return fault

    def _draw_corrupt(self):
        with self._lock:
            return self._random.random() < self.corrupt_rate

    def _count(self, name):
        with self._lock:
            self.injected[name] = self.injected.get(name, 0) + 1

    # -- public -------------------------------------------------------------------
    def start(self):
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self, self._context)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={'poll_interval': 0.1},
                                        name='faultproxy-%d' % self.port, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self):
        return '%s://%s:%d' % ('https' if self.tls else 'http', self.host, self.port)

    def set_rates(self, **rates):
        for name, value in rates.items():
            if not hasattr(self, name):
                raise AttributeError(name)
            setattr(self, name, value)

    def reset_counters(self):
        with self._lock:
            for name in self.injected:
                self.injected[name] = 0

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._server = None
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        return 'FaultProxy(%s -> %s)' % (self.url if self._server else 'stopped', self.upstream_url)
