# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lean S3 client for the copy hot path of the ``s3`` driver.

A handful of requests, each on one object or one listing page: GET
(streamed), HEAD, PUT of bytes in memory, PUT of a stream of known size,
ListObjectsV2 and HEAD bucket. They are signed with AWS Signature Version 4
by hand and spoken as plain HTTP/1.1 over keep-alive sockets (standard
library only) shared by every worker thread.

Why: botocore spends about 0.7 ms of CPU (events, parameter validation,
endpoint rules, signing, response parsing) and urllib3 with http.client
another 0.2 ms around each request of a few hundred microseconds of real
HTTP work; with the GIL and two requests per copied object, the copy is
CPU-bound long before the servers are (see docs/performance.md).

Integrity: every PUT carries a digest of its bytes. Bytes in memory and
streams without a known MD5 carry their SHA-256 in ``x-amz-checksum-sha256``
(a header, or an aws-chunked trailer so that the digest is computed while
sending); a server that implements S3's checksums recomputes it over what it
stored, refuses a mismatch (``BadDigest``) and echoes the value. A stream
whose MD5 the source recorded (its plain ETag) goes as it is: the ETag
answered is the server's MD5 of what it stored, and must be the source's
(``Content-MD5`` would make SeaweedFS compute the MD5 twice). The answer
tells whether the server proved the write, so that the engine can count it
as verified without reading the object back.

It only answers plain success (and 404 for HEAD). Anything else -- an HTTP
error, a connection failure, a redirect -- raises ``FastPathMiss`` and the
driver redoes the same request through boto3, so every error a user can
meet is still produced and mapped by the one code path that always did. A
streamed PUT cannot be redone (its stream is consumed): once its body has
started, a failure raises ``StreamBroken`` and the engine retries the whole
object. It is used for static credentials on an explicit endpoint with
path-style addressing; AWS credential chains (``iamauto``), virtual-hosted
addressing and everything else stay on boto3.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import errno
import fcntl
import hashlib
import hmac
import os
import select
import socket
import ssl
import sys
import threading
import time
from xml.etree import ElementTree
from xml.sax.saxutils import escape as xml_escape

try:
    from urllib.parse import quote, unquote_plus, urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    from urllib import quote, unquote_plus  # noqa
    from urlparse import urlsplit  # noqa

EMPTY_SHA256 = hashlib.sha256(b'').hexdigest()
ALGORITHM = 'AWS4-HMAC-SHA256'
STREAM_CHUNK = 1024 * 1024          # aws-chunked chunk size of a streamed PUT
MAX_HEADER_BYTES = 64 * 1024
# A streamed copy hashes each piece it receives and sends it on: pieces that stay in the CPU's cache
# cost less than 1 MiB ones (measured on 40 x 32 MiB: client CPU -6 %, wall -3 %).
RECV_MAX = 128 * 1024
# What a PUT declares its body to be (as rclone does for bytes of no known type): a server left without a
# type guesses one from the bytes (SeaweedFS does, chunk by chunk).
CONTENT_TYPE = 'application/octet-stream'
IDLE_CONNECTIONS = 128
# A streamed copy between two plain-HTTP endpoints moves the bytes from one socket to the other in the kernel
# (splice through a pipe) and copies each piece once, peeked, for the digests: one copy of every byte through
# Python instead of two, and 1 MiB handed to the destination at a time (its server wakes up less often).
# Measured on 40 x 32 MiB: client CPU -11 %, wall -8 % (docs/performance.md). Linux only; Python 3.10+.
SPLICE = sys.platform.startswith('linux') and hasattr(os, 'splice')
SPLICE_PIPE = 1024 * 1024           # the pipe's size asked for (the default fs.pipe-max-size)
# What is peeked (and hashed) at a time: 256 KiB still hashes from the cache and halves the calls of 128 KiB
# (client CPU -4 %, wall -4 % on 40 x 32 MiB).
SPLICE_PEEK = 256 * 1024
F_SETPIPE_SZ = getattr(fcntl, 'F_SETPIPE_SZ', 1031)
F_GETPIPE_SZ = getattr(fcntl, 'F_GETPIPE_SZ', 1032)
# What a kernel that cannot splice these sockets answers: such a failure turns SPLICE off for the process.
SPLICE_UNSUPPORTED = frozenset((errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP))
# A streamed PUT goes over a kept-alive connection only when it has been idle this long at most (and the
# server has not closed it): once the body has started, a connection found closed costs the whole object.
# Reusing one saves a connection (and a TLS handshake) per object.
STREAM_REUSE_IDLE = 2.0
S3_NS = '{http://s3.amazonaws.com/doc/2006-03-01/}'
# The codes of a server that checked a checksum sent with a request and found another digest.
DIGEST_ERROR_CODES = frozenset(('BadDigest', 'InvalidDigest', 'XAmzContentChecksumMismatch',
                                'XAmzContentSHA256Mismatch'))


class FastPathMiss(Exception):
    """The request did not plainly succeed: redo it through boto3 (which maps the error)."""


class StreamBroken(Exception):
    """A streamed PUT failed after its body started: the stream is spent, retry the whole object."""


class SourceFailed(Exception):
    """The stream being uploaded raised: ``error`` is the caller's own exception, re-raised as is."""

    def __init__(self, error):
        super(SourceFailed, self).__init__(str(error))
        self.error = error


class OtherBytesStored(Exception):
    """A streamed PUT was stored, but the server's MD5 of what it stored (its ETag) is not the one expected:
    the bytes changed on the way, or the source's or this server's ETags are not content MD5s. The
    caller removes the write (``version_id``, when the bucket keeps versions) and copies the object again."""

    def __init__(self, etag, version_id):
        super(OtherBytesStored, self).__init__('the server stored bytes whose ETag is %s' % (etag or 'missing'))
        self.etag, self.version_id = etag, version_id


class ShortStream(Exception):
    """The stream being uploaded ended before its announced size."""

    def __init__(self, got, size):
        super(ShortStream, self).__init__('stream ended after %d of %d bytes' % (got, size))
        self.got, self.size = got, size


def usable_key(name):
    """Keys whose path a server might rewrite (dot segments, empty segments) go through boto3."""
    if not name or '//' in name:
        return False
    segments = name.split('/')
    return not any(segment in ('.', '..') for segment in segments)


def proxied(url):
    """True when the environment sends requests to ``url`` through a proxy (boto3 honours it; this client
    connects directly, so it stays out of the way)."""
    try:
        from urllib.request import getproxies, proxy_bypass
    except ImportError:  # pragma: no cover - Python 2 is not supported
        return True
    parts = urlsplit(url)
    if not getproxies().get(parts.scheme):
        return False
    return not proxy_bypass(parts.netloc)


def lent_digest(stream):
    """The SHA-256 object of a stream that hashes what it passes on and has passed nothing yet (the
    engine's HashingReader), else None. Once the stream is read, it is the digest of what was read:
    hashing the same bytes twice would cost about a second of CPU per GiB."""
    digest = getattr(stream, 'sha256', None)
    if digest is None or not hasattr(digest, 'hexdigest') or getattr(stream, 'size', None) != 0:
        return None
    return digest


def plain_md5(etag):
    """The ETag when it is a plain MD5 (32 hex digits, as S3 gives single-part objects), else None.

    A multipart upload's ETag (``<hex>-<parts>``) is not the content's MD5; neither is the ETag of an
    object encrypted with SSE-KMS or SSE-C, which a streamed copy then finds different from the source's.
    """
    etag = (etag or '').strip('"').lower()
    if len(etag) != 32 or any(char not in '0123456789abcdef' for char in etag):
        return None
    return etag


def b64_digest(digest):
    """A hashlib digest as S3 checksums carry it (base64 of the raw bytes)."""
    return base64.b64encode(digest.digest()).decode('ascii')


def b64_of_hex(hex_digest):
    return base64.b64encode(binascii.unhexlify(hex_digest)).decode('ascii')


def hex_of_b64(value):
    try:
        return binascii.hexlify(base64.b64decode(value)).decode('ascii')
    except (TypeError, ValueError, binascii.Error):
        return None


def chunked_length(size, chunk):
    """Bytes on the wire of ``size`` payload bytes in aws-chunked framing with a SHA-256 trailer."""
    full, rest = divmod(size, chunk)
    total = full * (len('%x' % chunk) + 2 + chunk + 2)
    if rest:
        total += len('%x' % rest) + 2 + rest + 2
    return total + len(b'0\r\n') + len('x-amz-checksum-sha256:') + 44 + 2 + 2


class _Connection(object):
    """One keep-alive HTTP/1.1 connection: requests are written whole, answers parsed by hand."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = bytearray()
        self.reusable = True
        self.idle_since = None

    def still_open(self):
        """False when the idle connection has something to read: the server closed it (or broke the protocol)."""
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (AttributeError, OSError, ValueError):  # no poll() here: not worth the risk
            return False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError('connection closed by the server')
        self.buffer += data

    def read_head(self):
        """(status, {lower-case name: value}) of the next answer."""
        while True:
            end = self.buffer.find(b'\r\n\r\n')
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise ValueError('answer headers too long')
            self._fill()
        head = bytes(self.buffer[:end]).decode('latin-1')
        del self.buffer[:end + 4]
        lines = head.split('\r\n')
        parts = lines[0].split(' ', 2)
        if len(parts) < 2 or not parts[0].startswith('HTTP/1.'):
            raise ValueError('not an HTTP/1.x answer')
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(':')
            if sep:
                headers[name.strip().lower()] = value.strip()
        if parts[0] == 'HTTP/1.0' or headers.get('connection', '').lower() == 'close':
            self.reusable = False
        return int(parts[1]), headers

    def read_some(self, limit):
        """Up to ``limit`` body bytes (at least one; ConnectionError at a premature end)."""
        if not self.buffer:
            data = self.sock.recv(min(limit, RECV_MAX))  # straight from the socket: no buffer copy
            if not data:
                raise ConnectionError('connection closed by the server')
            return data
        data = bytes(self.buffer[:limit])
        del self.buffer[:len(data)]
        return data

    def read_exact(self, size):
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_body(self, status, headers, method):
        """The whole body of a (small) answer."""
        if method == 'HEAD' or status in (204, 304) or 100 <= status < 200:
            return b''
        if 'chunked' in headers.get('transfer-encoding', '').lower():
            parts = []
            while True:
                while b'\r\n' not in self.buffer:
                    self._fill()
                line, _sep, _rest = bytes(self.buffer).partition(b'\r\n')
                del self.buffer[:len(line) + 2]
                size = int(line.split(b';')[0], 16)
                if size == 0:
                    while True:  # trailers, then the blank line
                        while b'\r\n' not in self.buffer:
                            self._fill()
                        end = self.buffer.find(b'\r\n')
                        del self.buffer[:end + 2]
                        if end == 0:
                            return b''.join(parts)
                parts.append(self.read_exact(size))
                self.read_exact(2)
        length = headers.get('content-length')
        if length is None:
            self.reusable = False
            parts = [bytes(self.buffer)]
            del self.buffer[:]
            while True:
                data = self.sock.recv(262144)
                if not data:
                    return b''.join(parts)
                parts.append(data)
        return self.read_exact(int(length))

    def close(self):
        self.reusable = False
        try:
            self.sock.close()
        except OSError:
            pass


class FastS3(object):
    """GET / PUT / HEAD of single objects and ListObjectsV2 pages on one S3 endpoint (path-style)."""

    def __init__(self, url, region, access_key, secret_key, session_token=None, verify=None, ca_bundle=None,
                 connect_timeout=60, read_timeout=60, maxsize=64):
        parts = urlsplit(url)
        if parts.scheme not in ('http', 'https') or not parts.hostname or parts.path not in ('', '/') \
                or parts.query or parts.username:
            raise FastPathMiss('endpoint not supported by the fast path')
        self.host_header = parts.netloc
        self.hostname = parts.hostname
        self.port = parts.port or (443 if parts.scheme == 'https' else 80)
        self.region = region or 'us-east-1'
        self._access_key = access_key
        self._secret = ('AWS4' + secret_key).encode('utf-8')
        self._token = session_token
        self._keys = {}
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle = []
        self._idle_max = max(int(maxsize or 0), IDLE_CONNECTIONS)
        self._lock = threading.Lock()
        self._tls = None
        if parts.scheme == 'https':
            if verify is False:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                context = ssl.create_default_context(cafile=ca_bundle or _default_ca_bundle())
            self._tls = context

    # -- signing ------------------------------------------------------------
    def _signing_key(self, date):
        key = self._keys.get(date)
        if key is None:
            key = self._secret
            for part in (date, self.region, 's3', 'aws4_request'):
                key = hmac.new(key, part.encode('utf-8'), hashlib.sha256).digest()
            self._keys = {date: key}
        return key

    def _headers(self, method, path, payload_hash, extra=None, query=''):
        amz_date = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
        date = amz_date[:8]
        headers = {'host': self.host_header, 'x-amz-content-sha256': payload_hash, 'x-amz-date': amz_date}
        if self._token:
            headers['x-amz-security-token'] = self._token
        if extra:
            headers.update(extra)
        names = sorted(headers)
        signed = ';'.join(names)
        canonical_headers = ''.join('%s:%s\n' % (n, headers[n]) for n in names)
        canonical = '%s\n%s\n%s\n%s\n%s\n%s' % (method, path, query, canonical_headers, signed, payload_hash)
        scope = '%s/%s/s3/aws4_request' % (date, self.region)
        to_sign = '%s\n%s\n%s\n%s' % (ALGORITHM, amz_date, scope,
                                      hashlib.sha256(canonical.encode('utf-8')).hexdigest())
        signature = hmac.new(self._signing_key(date), to_sign.encode('utf-8'), hashlib.sha256).hexdigest()
        headers['Authorization'] = '%s Credential=%s/%s, SignedHeaders=%s, Signature=%s' % (
            ALGORITHM, self._access_key, scope, signed, signature)
        return headers

    def _put_headers(self, path, payload_hash, extra):
        """Signed headers of an object PUT: ``extra`` and the type every stored body is declared as."""
        headers = {'content-type': CONTENT_TYPE}
        headers.update(extra)
        return self._headers('PUT', path, payload_hash, headers)

    @staticmethod
    def path(bucket, name):
        return '/%s/%s' % (quote(bucket, safe=''), quote(name, safe='/~'))

    # -- connections ----------------------------------------------------------
    def _connect(self):
        sock = socket.create_connection((self.hostname, self.port), timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.hostname)
            sock.settimeout(self._read_timeout)
        except Exception:
            sock.close()
            raise
        return _Connection(sock)

    def _take(self, max_idle=None):
        """(connection, kept-alive?): the last one given back when there is one (idle at most ``max_idle``
        seconds and still open, when that is asked), else a new one."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
                if conn is not None and max_idle is not None and time.monotonic() - conn.idle_since > max_idle:
                    self._idle.append(conn)  # the newest is too old: so are the others, left for short requests
                    conn = None
            if conn is None:
                return self._connect(), False
            if max_idle is None or conn.still_open():
                return conn, True
            conn.close()

    def _give_back(self, conn):
        if conn.reusable and not conn.buffer:
            conn.idle_since = time.monotonic()
            with self._lock:
                if len(self._idle) < self._idle_max:
                    self._idle.append(conn)
                    return
        conn.close()

    @staticmethod
    def _request_bytes(method, target, headers, body_length):
        lines = ['%s %s HTTP/1.1' % (method, target)]
        lines.extend('%s: %s' % item for item in headers.items())
        if body_length is not None:
            lines.append('Content-Length: %d' % body_length)
        return ('\r\n'.join(lines) + '\r\n\r\n').encode('utf-8')

    def _exchange(self, method, target, headers, body=b''):
        """Send a request whose body is in memory; (conn, status, headers), the answer's body unread.

        A kept-alive connection that the server closed meanwhile is replaced once (the request had
        not been answered, so sending it again is safe).
        """
        request = self._request_bytes(method, target, headers, len(body) if method in ('PUT', 'POST') else None)
        for attempt in (1, 2):
            try:
                conn, reused = self._take()
            except Exception as exc:  # DNS, refused, TLS: boto3 redoes it and maps what it meets
                raise FastPathMiss('%s: connect: %s: %s' % (method, type(exc).__name__, exc))
            try:
                conn.send(request + body if len(body) < 65536 else request)
                if len(body) >= 65536:
                    conn.send(body)
                status, answer = conn.read_head()
                return conn, status, answer
            except Exception as exc:
                conn.close()
                if reused and attempt == 1 and isinstance(exc, (ConnectionError, OSError)) \
                        and not isinstance(exc, socket.timeout):
                    continue
                raise FastPathMiss('%s %s: %s' % (method, type(exc).__name__, exc))
        raise FastPathMiss('%s: no connection' % method)  # pragma: no cover - the loop returns or raises

    def _simple(self, method, target, headers, body=b''):
        """(status, headers, body) of a request whose answer is small."""
        conn, status, answer = self._exchange(method, target, headers, body)
        try:
            data = conn.read_body(status, answer, method)
        except Exception as exc:
            conn.close()
            raise FastPathMiss('%s body: %s: %s' % (method, type(exc).__name__, exc))
        self._give_back(conn)
        return status, answer, data

    # -- requests -------------------------------------------------------------
    def get(self, bucket, name):
        """A streaming body of the object's bytes (status 200)."""
        path = self.path(bucket, name)
        conn, status, answer = self._exchange('GET', path, self._headers('GET', path, EMPTY_SHA256))
        if status != 200 or 'content-length' not in answer:
            self._discard(conn, status, answer, 'GET')
            raise FastPathMiss('GET answered %d' % status)
        return FastBody(self, conn, int(answer['content-length']), (answer.get('etag') or '').strip('"') or None)

    def head(self, bucket, name):
        """(size, etag, metadata, sha256 hex or None) or None when the object does not exist (404)."""
        path = self.path(bucket, name)
        status, answer, _body = self._simple('HEAD', path, self._headers('HEAD', path, EMPTY_SHA256))
        if status == 404:
            return None
        if status != 200:
            raise FastPathMiss('HEAD answered %d' % status)
        length = answer.get('content-length')
        metadata = dict((k[len('x-amz-meta-'):], v) for k, v in answer.items() if k.startswith('x-amz-meta-'))
        sha = answer.get('x-amz-checksum-sha256')
        return (int(length) if length is not None else None, (answer.get('etag') or '').strip('"') or None,
                metadata, hex_of_b64(sha) if sha else None)

    def head_bucket(self, bucket):
        """True when the bucket answers 200, False when it answers 404 (no such bucket); anything else is a
        miss (boto3 tells why)."""
        target = '/%s' % quote(bucket, safe='')
        status, _answer, _body = self._simple('HEAD', target, self._headers('HEAD', target, EMPTY_SHA256))
        if status == 404:
            return False
        if status != 200:
            raise FastPathMiss('HEAD bucket answered %d' % status)
        return True

    def create_bucket(self, bucket, location=None):
        """CreateBucket (with ``location`` as its LocationConstraint). True when the bucket was made or was
        already ours; anything else is a miss (boto3 asks again and maps the error)."""
        target = '/%s' % quote(bucket, safe='')
        body = b''
        if location:
            body = ('<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    '<LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>'
                    % xml_escape(location)).encode('utf-8')
        headers = self._headers('PUT', target, hashlib.sha256(body).hexdigest())
        status, _answer, answer_body = self._simple('PUT', target, headers, body)
        if status == 200 or (status == 409 and _error_code(answer_body) == 'BucketAlreadyOwnedByYou'):
            return True
        raise FastPathMiss('CreateBucket answered %d' % status)

    def put(self, bucket, name, data, sha256_hex=None):
        """Store ``data`` (bytes) in one request with its SHA-256 checksum (``sha256_hex`` when the caller
        already has it).

        Returns (etag, sha256 hex of ``data``, True when the server echoed that checksum). A server
        that checks the digest and finds a mismatch answers 400 BadDigest: a miss, which boto3 redoes.
        """
        path = self.path(bucket, name)
        hexed = sha256_hex or hashlib.sha256(data).hexdigest()
        b64 = b64_of_hex(hexed)
        headers = self._put_headers(path, hexed, {'x-amz-checksum-sha256': b64})
        status, answer, _body = self._simple('PUT', path, headers, data)
        if status != 200:
            raise FastPathMiss('PUT answered %d' % status)
        return (answer.get('etag') or '').strip('"') or None, hexed, answer.get('x-amz-checksum-sha256') == b64

    def refuses_wrong_checksum(self, bucket, name, data, wrong_b64):
        """PUT ``data`` with a wrong ``x-amz-checksum-sha256``: True when the server refuses it for the digest
        (it checks checksums, nothing was stored), False when it stored it; anything else is a miss."""
        path = self.path(bucket, name)
        headers = self._put_headers(path, hashlib.sha256(data).hexdigest(), {'x-amz-checksum-sha256': wrong_b64})
        status, _answer, body = self._simple('PUT', path, headers, data)
        if status == 200:
            return False
        if status == 400 and _error_code(body) in DIGEST_ERROR_CODES:
            return True
        raise FastPathMiss('checksum probe answered %d' % status)

    def put_stream(self, bucket, name, stream, size, md5_hex=None):
        """Stream ``size`` bytes from ``stream`` in one PUT, hashing them with SHA-256 on the way.

        Without ``md5_hex`` the SHA-256 goes as an aws-chunked trailer, which the server checks. With
        ``md5_hex`` (the MD5 the source recorded for these bytes: its plain ETag) the body goes as it is
        (``UNSIGNED-PAYLOAD``), and the server's answer proves the write: its ETag is its own MD5 of
        what it stored, which must be ``md5_hex`` (else ``OtherBytesStored``). That costs the server
        nothing it does not do anyway; a trailer makes it hash every byte with SHA-256 as well, and
        ``Content-MD5`` makes SeaweedFS compute the MD5 a second time (bench/put_cost.py).

        Returns (etag, sha256 hex of what was sent, True when the server proved it stored exactly
        those bytes: it echoed the SHA-256 trailer, or its ETag is ``md5_hex``). Before the body
        starts a failure is a miss (nothing was read from ``stream``); afterwards ``StreamBroken``,
        ``SourceFailed`` (the stream's own error), ``ShortStream`` or ``OtherBytesStored``.
        """
        path = self.path(bucket, name)
        if md5_hex:
            headers = self._put_headers(path, 'UNSIGNED-PAYLOAD', {})
            request = self._request_bytes('PUT', path, headers, size)
        else:
            headers = self._put_headers(path, 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', {
                'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': str(size),
                'x-amz-trailer': 'x-amz-checksum-sha256'})
            request = self._request_bytes('PUT', path, headers, chunked_length(size, STREAM_CHUNK))
        try:
            conn, _kept_alive = self._take(max_idle=STREAM_REUSE_IDLE)
            conn.send(request)
        except Exception as exc:
            raise FastPathMiss('PUT stream: %s: %s' % (type(exc).__name__, exc))
        digest = lent_digest(stream)
        own = digest is None
        if own:
            digest = hashlib.sha256()
        source = _splice_source(stream, conn)
        if source is not None and own:
            source.observers.append(digest.update)
        sent = 0
        b64 = None
        try:
            while sent < size:
                # Each chunk's size goes first (aws-chunked); its bytes follow as the stream gives them
                # (no copy to assemble it). A stream that ends early leaves the body truncated: the
                # server stores nothing.
                wanted = min(STREAM_CHUNK, size - sent)
                if not md5_hex:
                    conn.send(b'%x\r\n' % wanted)
                end = sent + wanted
                if source is not None:
                    sent += source.move_to(conn.sock, wanted)  # what it could not move is read below
                while sent < end:
                    data = _read_some(stream, end - sent)
                    if not data:
                        raise ShortStream(sent, size)
                    if own:
                        digest.update(data)
                    conn.send(data)
                    sent += len(data)
                if not md5_hex:
                    conn.send(b'\r\n')
            if not md5_hex:
                b64 = b64_digest(digest)
                conn.send(b'0\r\nx-amz-checksum-sha256:' + b64.encode('ascii') + b'\r\n\r\n')
            status, answer = conn.read_head()
            body = conn.read_body(status, answer, 'PUT')
        except (SourceFailed, ShortStream):
            conn.close()  # the server sees a truncated body and stores nothing
            raise
        except Exception as exc:
            conn.close()
            raise StreamBroken('PUT stream: %s: %s' % (type(exc).__name__, exc))
        finally:
            if source is not None:
                source.close()
        self._give_back(conn)
        if status != 200:
            raise StreamBroken('PUT stream answered %d: %s' % (status, _error_code(body)))
        etag = (answer.get('etag') or '').strip('"') or None
        if md5_hex:
            if plain_md5(etag) != md5_hex.lower():
                raise OtherBytesStored(etag, answer.get('x-amz-version-id'))
            return etag, digest.hexdigest(), True
        return etag, digest.hexdigest(), answer.get('x-amz-checksum-sha256') == b64

    def list_page(self, bucket, prefix, token=None, page_size=1000):
        """One ListObjectsV2 page: ([(key, size, etag)], next continuation token or None)."""
        params = [('encoding-type', 'url'), ('list-type', '2'), ('max-keys', str(page_size)), ('prefix', prefix)]
        if token:
            params.append(('continuation-token', token))
        query = '&'.join('%s=%s' % (quote(k, safe='-_.~'), quote(v, safe='-_.~')) for k, v in sorted(params))
        target = '/%s' % quote(bucket, safe='')
        headers = self._headers('GET', target, EMPTY_SHA256, query=query)
        status, _answer, body = self._simple('GET', target + '?' + query, headers)
        if status != 200:
            raise FastPathMiss('ListObjectsV2 answered %d' % status)
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            raise FastPathMiss('ListObjectsV2: unreadable answer: %s' % exc)
        ns = S3_NS if root.tag.startswith(S3_NS) else ''
        encoded = (root.findtext(ns + 'EncodingType') or '').lower() == 'url'
        items = []
        for node in root.iter(ns + 'Contents'):
            key = node.findtext(ns + 'Key') or ''
            size = node.findtext(ns + 'Size')
            items.append((unquote_plus(key) if encoded else key, int(size) if size is not None else None,
                          (node.findtext(ns + 'ETag') or '').strip('"') or None))
        truncated = (root.findtext(ns + 'IsTruncated') or '').lower() == 'true'
        following = root.findtext(ns + 'NextContinuationToken') if truncated else None
        if truncated and not following:
            raise FastPathMiss('ListObjectsV2: truncated page without a continuation token')
        return items, following

    def _discard(self, conn, status, answer, method):
        try:
            conn.read_body(status, answer, method)
        except Exception:  # an error answer we do not use: the connection just goes
            conn.close()
            return
        self._give_back(conn)

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class FastBody(object):
    """``read(n)`` / ``close()`` over the body of a GET; the connection is kept when the body was read to
    its end, and closed otherwise."""

    def __init__(self, client, conn, length, etag=None):
        self._client = client
        self._conn = conn
        self.length = length
        self.etag = etag
        self._left = length

    def read(self, size=-1):
        if self._conn is None or self._left <= 0:
            self.close()
            return b''
        if size is None or size < 0:
            data = self._conn.read_exact(self._left)
        else:
            data = self._conn.read_some(min(size, self._left))
        self._left -= len(data)
        if self._left <= 0:
            self.close()
        return data

    def splice_source(self, map_error=None):
        """A SpliceSource for the rest of this body when it comes over a plain TCP socket and this kernel
        splices (else None); ``map_error`` turns the source's errors into the caller's."""
        conn = self._conn
        if not SPLICE or conn is None or self._left <= 0 or not _plain_socket(conn.sock):
            return None
        return SpliceSource(self, map_error)

    def close(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._left <= 0:
                self._client._give_back(conn)
            else:
                conn.close()  # unread body: the socket cannot be reused


class SpliceSource(object):
    """The rest of a GET's body, moved to another socket by the kernel.

    Each piece is peeked (``MSG_PEEK``: copied once, for ``observers``, the digests), then spliced from the
    socket into a pipe, and the pipe into the destination's socket, 1 MiB at a time: the bytes do not pass
    through Python a second time to be sent. What has been moved has been observed, in order, and nothing
    else, so on a kernel that cannot splice these sockets the caller reads the rest where it stopped.
    """

    def __init__(self, body, map_error=None):
        self._body = body
        self._map_error = map_error
        self.observers = []
        self._pipe = None
        self._capacity = 0
        self._in_pipe = 0
        self._moved = 0
        self._view = None

    def _source_failed(self, exc):
        return SourceFailed(self._map_error(exc) if self._map_error is not None else exc)

    def _observe(self, data):
        for observer in self.observers:
            observer(data)
        self._moved += len(data)

    def move_to(self, sink, count):
        """Move up to ``count`` bytes of the body to the socket ``sink``; returns how many were moved (fewer
        at the body's end or when the kernel refused to splice, none once it has). The source's failures
        raise SourceFailed, the sink's their own error."""
        global SPLICE  # pylint: disable=global-statement
        body = self._body
        conn = body._conn
        count = min(count, body._left) if conn is not None and SPLICE else 0
        start = self._moved
        try:
            if count and conn.buffer:  # body bytes that came with the answer's head
                data = bytes(conn.buffer[:count])
                del conn.buffer[:len(data)]
                self._observe(data)
                sink.sendall(data)
            if self._moved - start < count:
                self._splice(conn.sock, sink, count - (self._moved - start))
            self._drain(sink)
        except _SpliceRefused:
            SPLICE = False
            self._copy_out(sink)
        finally:
            body._left -= self._moved - start
            if body._left <= 0:
                body.close()
        return self._moved - start

    def _open_pipe(self):
        pipe_r, pipe_w = os.pipe()
        self._pipe = (pipe_r, pipe_w)
        try:
            fcntl.fcntl(pipe_w, F_SETPIPE_SZ, SPLICE_PIPE)
        except OSError:  # over the user's quota of pipe memory: the size it has
            pass
        self._capacity = fcntl.fcntl(pipe_w, F_GETPIPE_SZ)
        self._view = memoryview(bytearray(min(SPLICE_PEEK, self._capacity)))

    def _splice(self, source, sink, count):
        """Peek, observe and splice ``count`` bytes from ``source`` into the pipe, draining it into ``sink``."""
        if self._pipe is None:
            self._open_pipe()
        pipe_w, source_fd, view = self._pipe[1], source.fileno(), self._view
        while count:
            if self._in_pipe >= self._capacity:
                self._drain(sink)
            piece = min(count, len(view), self._capacity - self._in_pipe)
            try:
                got = source.recv_into(view, piece, socket.MSG_PEEK)
            except Exception as exc:
                raise self._source_failed(exc)
            if not got:
                raise self._source_failed(ConnectionError('connection closed by the server'))
            done = 0
            while done < got:
                try:
                    spliced = os.splice(source_fd, pipe_w, got - done, flags=os.SPLICE_F_NONBLOCK)
                except BlockingIOError:  # the pipe is full (a slot per piece of a packet): empty it first
                    if not self._in_pipe:
                        raise self._source_failed(ConnectionError('peeked bytes could not be moved'))
                    self._drain(sink)
                    continue
                except OSError as exc:
                    if exc.errno in SPLICE_UNSUPPORTED:
                        raise _SpliceRefused()
                    raise self._source_failed(exc)
                if not spliced:
                    raise self._source_failed(ConnectionError('connection closed by the server'))
                self._observe(view[done:done + spliced])
                done += spliced
                self._in_pipe += spliced
            count -= got

    def _drain(self, sink):
        """Splice what is in the pipe into ``sink``, waiting (its timeout) while its send buffer is full."""
        while self._in_pipe:
            try:
                spliced = os.splice(self._pipe[0], sink.fileno(), self._in_pipe)
            except BlockingIOError:
                if not _wait_writable(sink):
                    raise socket.timeout('timed out sending to the server')
                continue
            except OSError as exc:
                if exc.errno in SPLICE_UNSUPPORTED:
                    raise _SpliceRefused()
                raise
            if not spliced:
                raise ConnectionError('the pipe ran dry')
            self._in_pipe -= spliced

    def _copy_out(self, sink):
        """Send what is in the pipe through Python (the kernel refused to splice it)."""
        while self._in_pipe:
            data = os.read(self._pipe[0], self._in_pipe)
            if not data:
                raise ConnectionError('the pipe ran dry')
            sink.sendall(data)
            self._in_pipe -= len(data)

    def close(self):
        pipe, self._pipe = self._pipe, None
        for end in pipe or ():
            os.close(end)


class _SpliceRefused(Exception):
    """The kernel cannot splice these sockets (what was moved before is in the pipe)."""


def _wait_writable(sock):
    timeout = sock.gettimeout()
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


def _plain_socket(sock):
    """True for a TCP socket whose bytes on the wire are the HTTP ones (not TLS)."""
    return isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket)


def _splice_source(stream, conn):
    """The stream's SpliceSource when both ends are plain TCP sockets and this kernel splices, else None."""
    if not SPLICE or not _plain_socket(conn.sock):
        return None
    opener = getattr(stream, 'splice_source', None)
    return opener() if opener is not None else None


def _read_some(stream, size):
    """Up to ``size`` bytes of ``stream`` (b'' at its end); the stream's own failure is SourceFailed."""
    try:
        return stream.read(size)
    except Exception as exc:  # the source's own failure
        raise SourceFailed(exc)


def _error_code(body):
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return 'no error document'
    ns = S3_NS if root.tag.startswith(S3_NS) else ''
    return root.findtext(ns + 'Code') or root.findtext('Code') or 'no error code'


def _default_ca_bundle():
    try:
        from botocore.httpsession import get_cert_path
        return get_cert_path(True)
    except Exception:  # pragma: no cover - botocore always has it
        return None
