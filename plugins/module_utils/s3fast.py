# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lean S3 client for the copy hot path of the ``s3`` driver.

Only three requests, on one object each: GET (streamed), PUT (one request,
body in memory: objects up to the multipart threshold) and HEAD. They are
signed with AWS Signature Version 4 by hand and sent over one urllib3
connection pool shared by every worker thread (urllib3 is what botocore
itself sends with, so no new dependency).

Why: botocore spends about 0.7 ms of CPU (events, parameter validation,
endpoint rules, signing, response parsing) around each request of a few
hundred microseconds of real HTTP work; with the GIL, a copy that needs
three requests per object is CPU-bound long before the servers are (see
docs/performance.md). This client costs about a fifth of that.

It only answers plain success (and 404 for HEAD). Anything else -- an HTTP
error, a connection failure, a redirect -- raises ``FastPathMiss`` and the
driver redoes the same request through boto3, so every error a user can
meet is still produced and mapped by the one code path that always did.
It is used for static credentials on an explicit endpoint with path-style
addressing; AWS credential chains (``iamauto``), virtual-hosted addressing
and everything else stay on boto3.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import hmac
import time

try:
    from urllib.parse import quote, urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    from urllib import quote  # noqa
    from urlparse import urlsplit  # noqa

try:
    import urllib3
    HAS_URLLIB3 = True
except ImportError:  # pragma: no cover - bare targets only
    urllib3 = None
    HAS_URLLIB3 = False

EMPTY_SHA256 = hashlib.sha256(b'').hexdigest()
ALGORITHM = 'AWS4-HMAC-SHA256'


class FastPathMiss(Exception):
    """The request did not plainly succeed: redo it through boto3 (which maps the error)."""


def usable_key(name):
    """Keys whose path urllib3 or a server might rewrite (dot segments, empty segments) go through boto3."""
    if not name or '//' in name:
        return False
    segments = name.split('/')
    return not any(segment in ('.', '..') for segment in segments)


class FastS3(object):
    """GET / PUT / HEAD of single objects on one S3 endpoint (path-style)."""

    def __init__(self, url, region, access_key, secret_key, session_token=None, verify=None, ca_bundle=None,
                 connect_timeout=60, read_timeout=60, maxsize=64):
        if not HAS_URLLIB3:
            raise FastPathMiss('urllib3 is missing')
        parts = urlsplit(url)
        if parts.scheme not in ('http', 'https') or not parts.hostname or parts.path not in ('', '/') \
                or parts.query or parts.username:
            raise FastPathMiss('endpoint not supported by the fast path')
        self.host_header = parts.netloc
        self.region = region or 'us-east-1'
        self._access_key = access_key
        self._secret = ('AWS4' + secret_key).encode('utf-8')
        self._token = session_token
        self._keys = {}
        timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        common = dict(maxsize=maxsize, block=False, retries=False, timeout=timeout)
        if parts.scheme == 'https':
            if verify is False:
                tls = dict(cert_reqs='CERT_NONE')
            else:
                tls = dict(cert_reqs='CERT_REQUIRED', ca_certs=ca_bundle or _default_ca_bundle())
            self.pool = urllib3.HTTPSConnectionPool(parts.hostname, parts.port or 443, **dict(common, **tls))
        else:
            self.pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port or 80, **common)

    # -- signing ------------------------------------------------------------
    def _signing_key(self, date):
        key = self._keys.get(date)
        if key is None:
            key = self._secret
            for part in (date, self.region, 's3', 'aws4_request'):
                key = hmac.new(key, part.encode('utf-8'), hashlib.sha256).digest()
            self._keys = {date: key}
        return key

    def _headers(self, method, path, payload_hash, extra=None):
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
        canonical = '%s\n%s\n\n%s\n%s\n%s' % (method, path, canonical_headers, signed, payload_hash)
        scope = '%s/%s/s3/aws4_request' % (date, self.region)
        to_sign = '%s\n%s\n%s\n%s' % (ALGORITHM, amz_date, scope,
                                      hashlib.sha256(canonical.encode('utf-8')).hexdigest())
        signature = hmac.new(self._signing_key(date), to_sign.encode('utf-8'), hashlib.sha256).hexdigest()
        headers['Authorization'] = '%s Credential=%s/%s, SignedHeaders=%s, Signature=%s' % (
            ALGORITHM, self._access_key, scope, signed, signature)
        return headers

    @staticmethod
    def path(bucket, name):
        return '/%s/%s' % (quote(bucket, safe=''), quote(name, safe='/~'))

    def _send(self, method, path, headers, body=None, preload=True):
        try:
            return self.pool.request(method, path, body=body, headers=headers, retries=False, redirect=False,
                                     preload_content=preload, decode_content=False, assert_same_host=False)
        except Exception as exc:  # urllib3 / socket errors: boto3 redoes the request and maps what it meets
            raise FastPathMiss('%s %s: %s' % (method, type(exc).__name__, exc))

    # -- requests -------------------------------------------------------------
    def get(self, bucket, name):
        """A streaming urllib3 response of the object's bytes (status 200)."""
        path = self.path(bucket, name)
        response = self._send('GET', path, self._headers('GET', path, EMPTY_SHA256), preload=False)
        if response.status != 200:
            _discard(response)
            raise FastPathMiss('GET answered %d' % response.status)
        return FastBody(response)

    def head(self, bucket, name):
        """(size, etag, metadata) or None when the object does not exist (404)."""
        path = self.path(bucket, name)
        response = self._send('HEAD', path, self._headers('HEAD', path, EMPTY_SHA256))
        if response.status == 404:
            return None
        if response.status != 200:
            raise FastPathMiss('HEAD answered %d' % response.status)
        headers = response.headers
        length = headers.get('Content-Length')
        metadata = dict((k[len('x-amz-meta-'):], v) for k, v in headers.items()
                        if k.lower().startswith('x-amz-meta-'))
        return (int(length) if length is not None else None, (headers.get('ETag') or '').strip('"') or None,
                metadata)

    def put(self, bucket, name, data):
        """Store ``data`` (bytes) in one request; returns the ETag the server answered."""
        path = self.path(bucket, name)
        headers = self._headers('PUT', path, hashlib.sha256(data).hexdigest())
        headers['Content-Length'] = str(len(data))
        response = self._send('PUT', path, headers, body=data)
        if response.status != 200:
            raise FastPathMiss('PUT answered %d' % response.status)
        return (response.headers.get('ETag') or '').strip('"') or None

    def close(self):
        try:
            self.pool.close()
        except Exception:  # closing idle sockets must not mask anything
            pass


class FastBody(object):
    """``read(n)`` / ``close()`` over a streaming urllib3 response; the connection goes back to the pool
    when the body was read to its end, and is closed otherwise."""

    def __init__(self, response):
        self._response = response
        self._eof = False
        length = response.headers.get('Content-Length')
        self.length = int(length) if length is not None else None

    def read(self, size=-1):
        if self._eof:
            return b''
        if size is None or size < 0:
            data = self._response.read()
            self._eof = True
            return data
        data = self._response.read(size)
        if not data:
            self._eof = True
        return data

    def close(self):
        response, self._response = self._response, None
        if response is None:
            return
        if not self._eof:
            try:
                response.close()  # unread body: the socket cannot be reused
            except Exception:
                pass
        try:
            response.release_conn()
        except Exception:
            pass


def _discard(response):
    try:
        response.drain_conn()
    except Exception:
        try:
            response.close()
        except Exception:
            pass
    try:
        response.release_conn()
    except Exception:
        pass


def _default_ca_bundle():
    try:
        from botocore.httpsession import get_cert_path
        return get_cert_path(True)
    except Exception:  # pragma: no cover - botocore always has it
        return None
