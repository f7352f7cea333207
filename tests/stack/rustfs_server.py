# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reference server for the RustFS HTTP API of the StellaOps runbook.

No public server implements this API (the StellaOps runbook describes it;
the RustFS project itself ships an S3 API), so this file is *our* reference
implementation, used by the test stack (``tests/stack/stack.py``) and as the
executable specification the ``rustfs`` driver is written against.
Python standard library only.

API (all JSON bodies are UTF-8; ``<key>`` is the rest of the path,
URL-decoded, and may contain ``/``, spaces and any unicode)::

    PUT    /api/v1/buckets/<bucket>                 201 created, 200 already exists
    HEAD   /api/v1/buckets/<bucket>                 200 / 404
    DELETE /api/v1/buckets/<bucket>                 204; 404 missing; 409 {"error": "bucket not empty"}
    PUT    /api/v1/buckets/<bucket>/objects/<key>   201 {"key", "size", "sha256"} + ETag
           X-RustFS-Immutable: true                 object may not be overwritten or deleted ...
           X-RustFS-Retain-Seconds: N               ... until now+N (immutable without retain = forever;
                                                    retain without immutable = retained until expiry)
           409 {"error": "object is immutable until <iso8601>"} while locked
           404 {"error": "bucket not found"}
    GET    /api/v1/buckets/<bucket>/objects/<key>   200, streamed body, Content-Length, ETag,
                                                    X-RustFS-Sha256, X-RustFS-Immutable (when set),
                                                    X-RustFS-Retain-Until (when set), Last-Modified
    HEAD   /api/v1/buckets/<bucket>/objects/<key>   same headers, no body
    DELETE /api/v1/buckets/<bucket>/objects/<key>   204; 404 {"error": "object not found"}; 409 when locked
    GET    /api/v1/buckets/<bucket>/objects?prefix=<p>&limit=<n>&continuation_token=<t>
           200 {"objects": [{"key", "size", "sha256", "last_modified"}],
                "next_continuation_token": <last key returned, or null>, "is_truncated": bool}
           keys in lexicographic (code point = UTF-8 byte) order; limit defaults to 1000, max 1000;
           the token is the last key of the previous page (keys strictly greater are returned).
    GET    /health                                  200 {"status": "ok"}         (no API key)
    GET    /metrics                                 Prometheus text               (no API key)
           rustfs_requests_total{method="PUT",status="201"} N

With ``--api-key-header H --api-key K`` every ``/api`` request needs header H:
missing -> 401 {"error": "missing API key"}, wrong -> 403 {"error": "invalid API key"}.
With ``--tls-cert`` and ``--tls-key`` the server speaks HTTPS.

Request bodies may be sent with ``Content-Length`` or ``Transfer-Encoding:
chunked``; ``Expect: 100-continue`` is answered only once the request is
known to be acceptable. Objects are streamed to a temporary file (SHA-256
computed in flight) and renamed into place, so readers never see a partial
object and no object is ever held in memory.

On-disk layout (under ``--data-dir``): ``buckets/<bucket>/`` holds one
directory per key segment (``d`` + escaped segment) and one file per object
(``o`` + escaped last segment). An object file starts with one JSON line of
metadata followed by the object's bytes. ``tmp/`` holds uploads in flight.
Segments are escaped with %XX for anything but ``[A-Za-z0-9._~-]`` and
non-ASCII letters; an escaped segment longer than 240 bytes is refused (400).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 1024 * 1024
MAX_LIMIT = 1000
FOREVER = '9999-12-31T23:59:59Z'
BUCKET_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$')
SAFE = frozenset('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-')
MAX_SEGMENT = 240


class ApiError(Exception):
    def __init__(self, status, message, close=False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def iso(ts):
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def http_date(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime('%a, %d %b %Y %H:%M:%S GMT')


def escape_segment(seg):
    out = []
    for ch in seg:
        if ch in SAFE or (ord(ch) > 127 and ch.isalnum()):
            out.append(ch)
        else:
            out.extend('%%%02X' % b for b in ch.encode('utf-8'))
    name = ''.join(out)
    if len(name.encode('utf-8')) > MAX_SEGMENT:
        raise ApiError(400, 'key segment too long (max %d bytes once escaped)' % MAX_SEGMENT)
    return name


def unescape_segment(name):
    return urllib.parse.unquote(name, encoding='utf-8', errors='strict')


# ---------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------

class Storage(object):
    def __init__(self, data_dir):
        self.root = os.path.abspath(data_dir)
        self.buckets = os.path.join(self.root, 'buckets')
        self.tmp = os.path.join(self.root, 'tmp')
        os.makedirs(self.buckets, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        self.lock = threading.Lock()   # serialises commit/delete decisions, never I/O of bodies

    # -- paths --------------------------------------------------------------
    def bucket_dir(self, bucket):
        if not BUCKET_RE.match(bucket) or '..' in bucket:
            raise ApiError(400, 'invalid bucket name')
        return os.path.join(self.buckets, bucket)

    def object_path(self, bucket, key):
        if key == '':
            raise ApiError(400, 'empty key')
        if len(key.encode('utf-8')) > 1024:
            raise ApiError(400, 'key longer than 1024 bytes')
        parts = key.split('/')
        dirs = ['d' + escape_segment(p) for p in parts[:-1]]
        return os.path.join(self.bucket_dir(bucket), *(dirs + ['o' + escape_segment(parts[-1])]))

    def bucket_exists(self, bucket):
        return os.path.isdir(self.bucket_dir(bucket))

    # -- metadata -------------------------------------------------------------
    @staticmethod
    def read_meta(path):
        """(meta dict, open file positioned at the data) or (None, None)."""
        try:
            handle = open(path, 'rb')
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None, None
        try:
            line = handle.readline(65536)
            meta = json.loads(line.decode('utf-8'))
        except Exception:
            handle.close()
            return None, None
        return meta, handle

    def stat(self, path):
        meta, handle = self.read_meta(path)
        if handle is not None:
            handle.close()
        return meta

    @staticmethod
    def locked_until(meta, now=None):
        """ISO time until which the object may not change, or None when it may."""
        if not meta:
            return None
        now = time.time() if now is None else now
        until = meta.get('retain_until')
        if until is None:
            return FOREVER if meta.get('immutable') else None
        return iso(until) if now < until else None

    # -- listing ------------------------------------------------------------
    def walk(self, bucket, prefix='', after=None):
        """Yield (key, path) in lexicographic key order; one directory read at a time."""
        base = self.bucket_dir(bucket)

        def children(directory, key_prefix):
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                return []
            items = []
            for entry in entries:
                name = entry.name
                if len(name) < 1 or name[0] not in 'do':
                    continue
                try:
                    seg = unescape_segment(name[1:])
                except UnicodeDecodeError:
                    continue
                if name[0] == 'd':
                    items.append((key_prefix + seg + '/', True, entry.path))
                else:
                    items.append((key_prefix + seg, False, entry.path))
            items.sort(key=lambda item: item[0])
            return items

        def visit(directory, key_prefix):
            for sort_key, is_dir, path in children(directory, key_prefix):
                if is_dir:
                    if not (sort_key.startswith(prefix) or prefix.startswith(sort_key)):
                        continue
                    if after is not None and not after.startswith(sort_key) and after[:len(sort_key)] > sort_key:
                        continue  # every key under this directory is <= after
                    yield from visit(path, sort_key)
                else:
                    if not sort_key.startswith(prefix):
                        continue
                    if after is not None and sort_key <= after:
                        continue
                    yield sort_key, path

        return visit(base, '')

    def prune_dirs(self, path, bucket_dir):
        parent = os.path.dirname(path)
        while parent != bucket_dir and parent.startswith(bucket_dir):
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

class Metrics(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}
        self.bytes_in = 0
        self.bytes_out = 0

    def count(self, method, status):
        with self.lock:
            key = (method, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1

    def add_bytes(self, received=0, sent=0):
        with self.lock:
            self.bytes_in += received
            self.bytes_out += sent

    def render(self):
        with self.lock:
            lines = ['# HELP rustfs_requests_total HTTP requests handled, by method and status.',
                     '# TYPE rustfs_requests_total counter']
            for (method, status), value in sorted(self.requests.items()):
                lines.append('rustfs_requests_total{method="%s",status="%s"} %d' % (method, status, value))
            lines += ['# HELP rustfs_received_bytes_total Object bytes received.',
                      '# TYPE rustfs_received_bytes_total counter',
                      'rustfs_received_bytes_total %d' % self.bytes_in,
                      '# HELP rustfs_sent_bytes_total Object bytes sent.',
                      '# TYPE rustfs_sent_bytes_total counter',
                      'rustfs_sent_bytes_total %d' % self.bytes_out]
        return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

class BodyReader(object):
    """Reads a request body given by Content-Length or chunked transfer coding."""

    def __init__(self, rfile, length=None, chunked=False):
        self.rfile = rfile
        self.remaining = length or 0
        self.chunked = chunked
        self.chunk_left = 0
        self.done = not chunked and not length

    def read(self, n=CHUNK):
        if self.done:
            return b''
        if not self.chunked:
            data = self.rfile.read(min(n, self.remaining))
            if not data:
                raise ApiError(400, 'request body shorter than Content-Length', close=True)
            self.remaining -= len(data)
            if self.remaining == 0:
                self.done = True
            return data
        if self.chunk_left == 0:
            line = self.rfile.readline(65537)
            if not line:
                raise ApiError(400, 'truncated chunked body', close=True)
            try:
                size = int(line.split(b';', 1)[0].strip(), 16)
            except ValueError:
                raise ApiError(400, 'bad chunk size line', close=True)
            if size == 0:
                while True:  # trailers
                    trailer = self.rfile.readline(65537)
                    if trailer in (b'\r\n', b'\n', b''):
                        break
                self.done = True
                return b''
            self.chunk_left = size
        data = self.rfile.read(min(n, self.chunk_left))
        if not data:
            raise ApiError(400, 'truncated chunked body', close=True)
        self.chunk_left -= len(data)
        if self.chunk_left == 0:
            if self.rfile.readline(3) not in (b'\r\n', b'\n'):
                raise ApiError(400, 'bad chunk terminator', close=True)
        return data

    def drain(self, limit=8 * CHUNK):
        """Consume the rest of a small body so the connection can be reused."""
        total = 0
        while not self.done and total <= limit:
            data = self.read()
            total += len(data)
        return self.done


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'rustfs-reference/1.0'
    sys_version = ''
    timeout = 300
    # Answers are written in pieces (status line and headers, then the body): without TCP_NODELAY each
    # small answer waits for the client's delayed ACK (about 40 ms per request).
    disable_nagle_algorithm = True

    # Expect: 100-continue is answered in _body() once the request is accepted.
    def handle_expect_100(self):
        self._expect_continue = True
        return True

    def setup(self):
        super().setup()
        self._expect_continue = False
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write('%s %s\n' % (self.log_date_time_string(), fmt % args))

    # -- helpers --------------------------------------------------------------
    @property
    def storage(self):
        return self.server.storage

    def _body(self):
        self._body_started = True
        if self._expect_continue:
            self._expect_continue = False
            self.wfile.write(b'HTTP/1.1 100 Continue\r\n\r\n')
            self.wfile.flush()
        te = (self.headers.get('Transfer-Encoding') or '').lower()
        if 'chunked' in te:
            return BodyReader(self.rfile, chunked=True)
        length = self.headers.get('Content-Length')
        try:
            length = int(length) if length else 0
        except ValueError:
            raise ApiError(400, 'bad Content-Length', close=True)
        if length < 0:
            raise ApiError(400, 'bad Content-Length', close=True)
        return BodyReader(self.rfile, length=length)

    def _has_body(self):
        te = (self.headers.get('Transfer-Encoding') or '').lower()
        try:
            return 'chunked' in te or int(self.headers.get('Content-Length') or 0) > 0
        except ValueError:
            return True

    def _send(self, status, body=b'', headers=None, content_type='application/json'):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode('utf-8')
        elif isinstance(body, str):
            body = body.encode('utf-8')
        # A request body we have not read makes the connection unusable.
        if not getattr(self, '_body_started', False) and self.command in ('PUT', 'POST') and self._has_body():
            self.close_connection = True
        # Counted before the answer leaves: a client that reads /metrics right after its answer sees it.
        self.server.metrics.count(self.command, status)
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD' and body:
            self.wfile.write(body)

    def _error(self, status, message, close=False):
        if close:
            self.close_connection = True
        self._send(status, {'error': message})

    def _check_key(self):
        header = self.server.api_key_header
        if not header:
            return
        value = self.headers.get(header)
        if value is None:
            raise ApiError(401, 'missing API key')
        if not hmac.compare_digest(value.encode('utf-8'), self.server.api_key.encode('utf-8')):
            raise ApiError(403, 'invalid API key')

    def _route(self):
        parsed = urllib.parse.urlsplit(self.path)
        raw_path = parsed.path
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        if raw_path in ('/health', '/metrics'):
            return raw_path, None, None, query
        if not raw_path.startswith('/api/'):
            raise ApiError(404, 'not found')
        self._check_key()
        match = re.match(r'^/api/v1/buckets/([^/]+)(/objects(/(.*))?)?$', raw_path, re.S)
        if not match:
            raise ApiError(404, 'not found')
        bucket = urllib.parse.unquote(match.group(1))
        if match.group(2) is None:
            return 'bucket', bucket, None, query
        if match.group(3) is None or match.group(4) == '':
            return 'list', bucket, None, query
        key = urllib.parse.unquote(match.group(4), encoding='utf-8', errors='strict')
        return 'object', bucket, key, query

    def _dispatch(self):
        self._body_started = False
        try:
            kind, bucket, key, query = self._route()
            name = '_%s_%s' % (kind.strip('/'), self.command.lower())
            method = getattr(self, name, None)
            if method is None:
                raise ApiError(405, 'method not allowed')
            method(bucket, key, query)
        except ApiError as exc:
            self._error(exc.status, exc.message, close=exc.close)
        except UnicodeDecodeError:
            self._error(400, 'path is not valid UTF-8')
        except (BrokenPipeError, ConnectionResetError, socket.timeout, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - reported to the client and the log
            self.log_error('internal error: %r', exc)
            try:
                self._error(500, 'internal error: %s' % exc.__class__.__name__, close=True)
            except Exception:
                self.close_connection = True

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _dispatch

    # -- unauthenticated endpoints ----------------------------------------------
    def _health_get(self, *_):
        self._send(200, {'status': 'ok'})

    _health_head = _health_get

    def _metrics_get(self, *_):
        # Count this request before rendering so the scrape includes itself.
        body = self.server.metrics.render()
        self._send(200, body, content_type='text/plain; version=0.0.4; charset=utf-8')

    # -- buckets --------------------------------------------------------------
    def _bucket_put(self, bucket, _key, _query):
        path = self.storage.bucket_dir(bucket)
        with self.storage.lock:
            if os.path.isdir(path):
                status = 200
            else:
                os.makedirs(path, exist_ok=True)
                status = 201
        self._send(status, {'bucket': bucket, 'created': status == 201})

    def _bucket_head(self, bucket, _key, _query):
        if not self.storage.bucket_exists(bucket):
            raise ApiError(404, 'bucket not found')
        self._send(200, {'bucket': bucket})

    _bucket_get = _bucket_head

    def _bucket_delete(self, bucket, _key, _query):
        path = self.storage.bucket_dir(bucket)
        with self.storage.lock:
            if not os.path.isdir(path):
                raise ApiError(404, 'bucket not found')
            if next(iter(self.storage.walk(bucket)), None) is not None:
                raise ApiError(409, 'bucket not empty')
            for dirpath, dirnames, filenames in os.walk(path, topdown=False):
                for name in filenames:
                    os.unlink(os.path.join(dirpath, name))
                for name in dirnames:
                    os.rmdir(os.path.join(dirpath, name))
            os.rmdir(path)
        self._send(204)

    # -- listing ----------------------------------------------------------------
    def _list_get(self, bucket, _key, query):
        if not self.storage.bucket_exists(bucket):
            raise ApiError(404, 'bucket not found')
        prefix = query.get('prefix', [''])[0]
        token = query.get('continuation_token', [None])[0] or None
        limit = query.get('limit', [str(MAX_LIMIT)])[0]
        try:
            limit = int(limit)
        except ValueError:
            raise ApiError(400, 'limit must be an integer')
        if limit < 1:
            raise ApiError(400, 'limit must be at least 1')
        limit = min(limit, MAX_LIMIT)
        objects = []
        truncated = False
        for key, path in self.storage.walk(bucket, prefix, token):
            if len(objects) == limit:
                truncated = True
                break
            meta = self.storage.stat(path)
            if meta is None:
                continue  # deleted while listing
            objects.append({'key': key, 'size': meta['size'], 'sha256': meta['sha256'],
                            'last_modified': iso(meta['mtime'])})
        self._send(200, {'objects': objects,
                         'next_continuation_token': objects[-1]['key'] if truncated else None,
                         'is_truncated': truncated})

    # -- objects ----------------------------------------------------------------
    def _object_headers(self, meta):
        headers = {'ETag': '"%s"' % meta['sha256'], 'X-RustFS-Sha256': meta['sha256'],
                   'Last-Modified': http_date(meta['mtime'])}
        if meta.get('immutable'):
            headers['X-RustFS-Immutable'] = 'true'
        if meta.get('retain_until') is not None:
            headers['X-RustFS-Retain-Until'] = iso(meta['retain_until'])
        return headers

    def _object_get(self, bucket, key, _query):
        path = self.storage.object_path(bucket, key)
        meta, handle = self.storage.read_meta(path)
        if handle is None:
            if not self.storage.bucket_exists(bucket):
                raise ApiError(404, 'bucket not found')
            raise ApiError(404, 'object not found')
        with handle:
            self.server.metrics.count(self.command, 200)  # before the answer leaves (see _send)
            self.send_response(200)
            self.send_header('Content-Type', meta.get('content_type') or 'application/octet-stream')
            self.send_header('Content-Length', str(meta['size']))
            for name, value in self._object_headers(meta).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == 'HEAD':
                return
            remaining = meta['size']
            while remaining > 0:
                data = handle.read(min(CHUNK, remaining))
                if not data:
                    self.close_connection = True  # file shorter than recorded: cut the connection
                    return
                self.server.metrics.add_bytes(sent=len(data))
                self.wfile.write(data)
                remaining -= len(data)

    _object_head = _object_get

    def _parse_retention(self):
        immutable = (self.headers.get('X-RustFS-Immutable') or '').strip().lower() in ('true', '1', 'yes')
        retain = self.headers.get('X-RustFS-Retain-Seconds')
        retain_until = None
        if retain not in (None, ''):
            try:
                seconds = float(retain)
            except ValueError:
                raise ApiError(400, 'X-RustFS-Retain-Seconds must be a number of seconds')
            if seconds < 0:
                raise ApiError(400, 'X-RustFS-Retain-Seconds must not be negative')
            retain_until = time.time() + seconds
        return immutable, retain_until

    def _object_put(self, bucket, key, _query):
        path = self.storage.object_path(bucket, key)
        if not self.storage.bucket_exists(bucket):
            raise ApiError(404, 'bucket not found')
        immutable, retain_until = self._parse_retention()
        until = self.storage.locked_until(self.storage.stat(path))
        if until:
            raise ApiError(409, 'object is immutable until %s' % until)
        body = self._body()
        digest = hashlib.sha256()
        size = 0
        fd, tmp_path = tempfile.mkstemp(dir=self.storage.tmp, prefix='up-')
        try:
            with os.fdopen(fd, 'wb') as out:
                placeholder = b' ' * 1024 + b'\n'   # metadata line, rewritten once the digest is known
                out.write(placeholder)
                while True:
                    data = body.read(CHUNK)
                    if not data:
                        break
                    digest.update(data)
                    out.write(data)
                    size += len(data)
                    self.server.metrics.add_bytes(received=len(data))
                now = time.time()
                meta = {'key': key, 'size': size, 'sha256': digest.hexdigest(), 'mtime': now,
                        'immutable': immutable, 'retain_until': retain_until,
                        'content_type': self.headers.get('Content-Type')}
                line = json.dumps(meta, ensure_ascii=True).encode('ascii')
                if len(line) > 1024:
                    meta['content_type'] = None
                    line = json.dumps(meta, ensure_ascii=True).encode('ascii')
                if len(line) > 1024:
                    meta['key'] = None
                    line = json.dumps(meta, ensure_ascii=True).encode('ascii')
                out.seek(0)
                out.write(line.ljust(1024) + b'\n')
            with self.storage.lock:
                if not self.storage.bucket_exists(bucket):
                    raise ApiError(404, 'bucket not found')
                until = self.storage.locked_until(self.storage.stat(path))
                if until:
                    raise ApiError(409, 'object is immutable until %s' % until)
                try:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                except (FileExistsError, NotADirectoryError):
                    raise ApiError(409, 'key conflicts with an existing path')
                os.replace(tmp_path, path)
                tmp_path = None
        finally:
            if tmp_path is not None:
                try:
                    os.unlink(tmp_path)
                except OSError:
                    pass
        self._send(201, {'key': key, 'size': size, 'sha256': meta['sha256']},
                   headers={'ETag': '"%s"' % meta['sha256']})

    def _object_delete(self, bucket, key, _query):
        path = self.storage.object_path(bucket, key)
        with self.storage.lock:
            meta = self.storage.stat(path)
            if meta is None:
                if not self.storage.bucket_exists(bucket):
                    raise ApiError(404, 'bucket not found')
                raise ApiError(404, 'object not found')
            until = self.storage.locked_until(meta)
            if until:
                raise ApiError(409, 'object is immutable until %s' % until)
            os.unlink(path)
            self.storage.prune_dirs(path, self.storage.bucket_dir(bucket))
        self._send(204)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address, storage, api_key_header=None, api_key=None, ssl_context=None, quiet=False):
        super().__init__(address, Handler)
        self.storage = storage
        self.api_key_header = api_key_header
        self.api_key = api_key
        self.metrics = Metrics()
        self.quiet = quiet
        self.ssl_context = ssl_context

    def get_request(self):
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # Handshake happens in the request thread (first read), not in the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


def make_server(host='127.0.0.1', port=0, data_dir='.', api_key_header=None, api_key=None,
                tls_cert=None, tls_key=None, quiet=False):
    """Build a server (call ``serve_forever`` in a thread); usable from tests."""
    if bool(api_key_header) != bool(api_key):
        raise ValueError('--api-key-header and --api-key go together')
    context = None
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise ValueError('--tls-cert and --tls-key go together')
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_cert, tls_key)
    return Server((host, port), Storage(data_dir), api_key_header, api_key, context, quiet=quiet)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Reference server for the StellaOps RustFS HTTP API.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8080)
    parser.add_argument('--data-dir', required=True)
    parser.add_argument('--api-key-header')
    parser.add_argument('--api-key')
    parser.add_argument('--api-key-file', help='read the API key from this file instead of the command line')
    parser.add_argument('--tls-cert')
    parser.add_argument('--tls-key')
    parser.add_argument('--quiet', action='store_true', help='do not log every request')
    args = parser.parse_args(argv)
    api_key = args.api_key
    if args.api_key_file:
        with open(args.api_key_file) as handle:
            api_key = handle.read().strip()
    try:
        server = make_server(args.host, args.port, args.data_dir, args.api_key_header, api_key,
                             args.tls_cert, args.tls_key, quiet=args.quiet)
    except ValueError as exc:
        parser.error(str(exc))

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheme = 'https' if server.ssl_context else 'http'
    sys.stderr.write('rustfs reference server listening on %s://%s:%d data %s\n'
                     % (scheme, args.host, server.server_address[1], os.path.abspath(args.data_dir)))
    sys.stderr.flush()
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
