# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``rustfs`` driver: the RustFS HTTP API of the StellaOps runbook (requests).

API (all under ``<endpoint>/api/v1``)::

    PUT  /buckets/<bucket>                       create the bucket
    HEAD /buckets/<bucket>                       does it exist
    PUT|GET|HEAD|DELETE /buckets/<bucket>/objects/<key>
    GET  /buckets/<bucket>/objects?prefix=&limit=&continuation_token=

Writes carry ``X-RustFS-Immutable: true`` / ``X-RustFS-Retain-Seconds: N``
when asked; GET and HEAD answers carry ``X-RustFS-Sha256``; errors are JSON
``{"error": "..."}`` with 401 (API key missing), 403 (API key invalid), 404
(bucket or object not found) and 409 (object immutable).

requests sessions are not guaranteed thread safe, so each worker thread gets
its own session (``threading.local``); bodies stream both ways.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket
import ssl
import threading

from ansible_collections.storeshift.objstore.plugins.module_utils import errors
from ansible_collections.storeshift.objstore.plugins.module_utils.store import ObjectInfo, ObjectStore

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover - Python 2 only
    from urllib import quote

try:
    import requests
    import requests.adapters
    import requests.exceptions
    HAS_REQUESTS = True
except ImportError:  # pragma: no cover - bare targets only
    requests = None
    HAS_REQUESTS = False

PAGE_SIZE = 1000
UPLOAD_CHUNK = 1024 * 1024
POOL_SIZE = 16


class _SourceError(Exception):
    """Carries an exception raised by the caller's stream through requests, to re-raise it unmapped.

    Not an OSError, so neither urllib3 nor requests wraps it into a connection error.
    """

    def __init__(self, error):
        super(_SourceError, self).__init__(str(error))
        self.error = error


def _read_source(stream, size):
    try:
        return stream.read(size)
    except errors.ObjstoreError:
        raise
    except Exception as exc:  # the source's own failure, not the server's
        raise _SourceError(exc)


class _SizedReader(object):
    """A file-like giving requests a Content-Length and exactly ``size`` bytes of ``stream``."""

    def __init__(self, stream, size):
        self._stream = stream
        self._left = size
        self.len = size

    def __len__(self):
        return self.len

    def read(self, size=-1):
        if self._left <= 0:
            return b''
        if size is None or size < 0 or size > self._left:
            size = self._left
        data = _read_source(self._stream, size)
        if not data:
            raise errors.IntegrityError('the source stream ended %d bytes short of its announced size' % self._left,
                                        step='put')
        self._left -= len(data)
        return data


def _chunks(stream):
    while True:
        data = _read_source(stream, UPLOAD_CHUNK)
        if not data:
            return
        yield data


class _RustfsReader(object):
    """The body of a GET (stored bytes, no content decoding), with errors mapped."""

    def __init__(self, store, response, key):
        self._store = store
        self._response = response
        self._key = key

    def read(self, size=-1):
        try:
            if size is None or size < 0:
                return self._response.raw.read(decode_content=False)
            return self._response.raw.read(size, decode_content=False)
        except errors.ObjstoreError:
            raise
        except Exception as exc:  # urllib3 / socket errors while streaming
            raise self._store._map_error(exc, 'read', self._key)

    def close(self):
        self._response.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class RustfsStore(ObjectStore):
    """RustFS (StellaOps artifact store) over its HTTP API."""

    driver = 'rustfs'
    supports_retention = True

    def __init__(self, spec):
        super(RustfsStore, self).__init__(spec)
        if not HAS_REQUESTS:
            raise errors.MissingLibraryError('requests')
        cfg = spec.config
        self.endpoint = cfg['endpoint'].rstrip('/')
        self.bucket = cfg['bucket']
        self.prefix = cfg.get('prefix') or ''
        self.api_key = cfg.get('api_key') or None
        self.api_key_header = cfg.get('api_key_header') or 'X-API-Key'
        self.timeout = int(cfg.get('timeout_seconds') or 30)
        if not cfg.get('validate_certs', True):
            self.verify = False
        elif cfg.get('ca_bundle'):
            self.verify = cfg['ca_bundle']
        else:
            self.verify = True
        self._secrets = spec.secrets()
        self._local = threading.local()
        self._sessions = []
        self._lock = threading.Lock()
        self._bucket_url = '%s/api/v1/buckets/%s' % (self.endpoint, quote(self.bucket, safe=''))

    # -- plumbing -------------------------------------------------------------
    def _session(self):
        session = getattr(self._local, 'session', None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
            session.mount('http://', adapter)
            session.mount('https://', adapter)
            session.verify = self.verify
            session.trust_env = False
            if self.api_key:
                session.headers[self.api_key_header] = self.api_key
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _object_url(self, key):
        return '%s/objects/%s' % (self._bucket_url, quote(self.prefix + key, safe='/'))

    def _what(self, key):
        if key is None:
            return 'bucket %s on %s' % (self.bucket, self.endpoint)
        return 'object %s in bucket %s on %s' % (self.prefix + key, self.bucket, self.endpoint)

    def _request(self, method, url, step, key=None, ok=(200, 201, 204), **kwargs):
        try:
            response = self._session().request(method, url, timeout=(self.timeout, self.timeout), **kwargs)
        except errors.ObjstoreError:
            raise
        except _SourceError as exc:
            raise exc.error
        except Exception as exc:
            raise self._map_error(exc, step, key)
        if response.status_code not in ok and response.status_code >= 300:
            try:
                raise self._map_status(response, step, key)
            finally:
                response.close()
        return response

    @staticmethod
    def _server_text(response):
        if response.request is not None and response.request.method == 'HEAD':
            return ''
        try:
            text = response.text[:500]
        except Exception:  # a broken error body is not worth a second error
            return ''
        try:
            doc = json.loads(text)
            if isinstance(doc, dict) and doc.get('error'):
                return str(doc['error'])
        except ValueError:
            pass
        return text.strip()

    def _map_status(self, response, step, key=None):
        status = response.status_code
        text = errors.scrub(self._server_text(response), self._secrets)
        detail = (': %s' % text) if text else ''
        what = self._what(key)
        if status == 401:
            return errors.AuthError('RustFS API key missing: set api_key (and api_key_header if the server expects '
                                    'another header than %s) for %s%s' % (self.api_key_header, self.endpoint, detail),
                                    step=step, cause='missing API key', key=key)
        if status == 403:
            return errors.AuthError('RustFS rejected the API key (header %s) for %s%s'
                                    % (self.api_key_header, self.endpoint, detail),
                                    step=step, cause='bad credentials', key=key)
        if status == 404:
            lowered = text.lower()
            if key is None or ('bucket' in lowered and 'object' not in lowered):
                return errors.BucketMissingError(
                    'bucket %s does not exist on %s (set create_bucket: true to create it)' % (self.bucket,
                                                                                               self.endpoint),
                    step=step, cause='missing bucket', key=key)
            return errors.ObjectMissingError('%s does not exist' % what, step=step, cause='object not found', key=key)
        if status == 409:
            return errors.RetentionError('%s is immutable or retained; the server refused to change it%s'
                                         % (what, detail), step=step, cause='object retained', key=key)
        if status in (413, 507):
            return errors.SpaceError('RustFS has no room for %s (HTTP %d)%s' % (what, status, detail),
                                     step=step, cause='no space left', key=key)
        if status >= 500 or status in (408, 429):
            return errors.TransientError('RustFS server error HTTP %d during %s on %s%s' % (status, step, what, detail),
                                         step=step, cause='transient server error (HTTP %d)' % status, key=key)
        return errors.ObjstoreError('RustFS answered HTTP %d to %s on %s%s' % (status, step, what, detail),
                                    step=step, cause='RustFS error (HTTP %d)' % status, key=key)

    def _map_error(self, exc, step, key=None):
        """The collection error for a requests/urllib3/socket exception raised during ``step``."""
        if isinstance(exc, errors.ObjstoreError):
            return exc
        text = errors.scrub(exc, self._secrets)
        chain = errors.exception_chain(exc)
        url = self.endpoint
        if any(isinstance(e, ssl.SSLError) for e in chain) or (
                HAS_REQUESTS and isinstance(exc, requests.exceptions.SSLError)):
            verify = 'CERTIFICATE_VERIFY_FAILED' in text or 'certificate verify failed' in text
            cause = 'TLS certificate verification failed' if verify else 'TLS handshake failed'
            hint = ' (set ca_bundle to the CA file, or validate_certs: false for testing)' if verify else ''
            return errors.ConnectError('%s for %s%s: %s' % (cause, url, hint, text), step=step, cause=cause, key=key)
        if HAS_REQUESTS and isinstance(exc, requests.exceptions.ConnectTimeout):
            return errors.ConnectError('cannot connect to %s: connection timed out after %ds' % (url, self.timeout),
                                       step=step, cause='connection timed out', key=key)
        if HAS_REQUESTS and isinstance(exc, requests.exceptions.ConnectionError) and \
                not isinstance(exc, requests.exceptions.ReadTimeout):
            if any(isinstance(e, socket.gaierror) for e in chain) or any(m in text for m in errors.DNS_MARKERS):
                return errors.ConnectError('cannot resolve host of %s (DNS lookup failed)' % url,
                                           step=step, cause='DNS lookup failed', key=key)
            if any(isinstance(e, ConnectionRefusedError) for e in chain) or 'Connection refused' in text:
                return errors.ConnectError('cannot connect to %s: connection refused' % url,
                                           step=step, cause='connection refused', key=key)
            if any(type(e).__name__ == 'NewConnectionError' for e in chain):
                return errors.ConnectError('cannot connect to %s: %s' % (url, text),
                                           step=step, cause='connection failed', key=key)
        transient = isinstance(exc, (socket.timeout, ConnectionError)) or any(
            type(e).__name__ in ('ReadTimeoutError', 'ProtocolError', 'IncompleteRead', 'RemoteDisconnected',
                                 'ConnectionResetError', 'BrokenPipeError') for e in chain)
        if HAS_REQUESTS and isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                                             requests.exceptions.ChunkedEncodingError)):
            transient = True
        if transient:
            return errors.TransientError('connection to %s failed during %s: %s' % (url, step, text),
                                         step=step, cause='transient network error (%s)' % type(exc).__name__,
                                         key=key)
        return errors.ObjstoreError('RustFS %s failed on %s: %s: %s' % (step, self._what(key), type(exc).__name__,
                                                                        text),
                                    step=step, cause='RustFS error (%s)' % type(exc).__name__, key=key)

    # -- lifecycle ----------------------------------------------------------
    def check_access(self, create_bucket=False):
        response = self._request('HEAD', self._bucket_url, 'check_access', ok=(200, 204, 404))
        response.close()
        if response.status_code != 404:
            return
        if not create_bucket:
            raise errors.BucketMissingError(
                'bucket %s does not exist on %s (set create_bucket: true to create it)' % (self.bucket, self.endpoint),
                step='check_access', cause='missing bucket')
        self._request('PUT', self._bucket_url, 'create_bucket', ok=(200, 201, 204, 409)).close()

    def close(self):
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    # -- objects --------------------------------------------------------------
    def list(self, prefix=''):
        token = None
        full = self.prefix + (prefix or '')
        cut = len(self.prefix)
        while True:
            params = {'prefix': full, 'limit': PAGE_SIZE}
            if token:
                params['continuation_token'] = token
            response = self._request('GET', '%s/objects' % self._bucket_url, 'list', params=params)
            try:
                page = response.json()
            except ValueError:
                raise errors.TransientError('RustFS sent a listing of bucket %s on %s that is not JSON'
                                            % (self.bucket, self.endpoint), step='list', cause='bad listing')
            finally:
                response.close()
            for item in page.get('objects') or ():
                name = item.get('key') or ''
                if not name.startswith(self.prefix):
                    continue
                yield ObjectInfo(name[cut:], size=item.get('size'), etag=item.get('sha256'),
                                 sha256=item.get('sha256'))
            token = page.get('next_continuation_token')
            if not page.get('is_truncated') or not token:
                return

    def stat(self, key):
        response = self._request('HEAD', self._object_url(key), 'stat', key, ok=(200, 404))
        response.close()
        if response.status_code == 404:
            return None
        length = response.headers.get('Content-Length')
        sha = response.headers.get('X-RustFS-Sha256')
        return ObjectInfo(key, size=int(length) if length is not None else None,
                          etag=(response.headers.get('ETag') or '').strip('"') or sha, sha256=sha)

    def open(self, key):
        response = self._request('GET', self._object_url(key), 'open', key, stream=True)
        return _RustfsReader(self, response, key)

    def put(self, key, stream, size=None, immutable=False, retain_seconds=None, metadata=None, source_md5=None):
        headers = {'Content-Type': 'application/octet-stream'}
        if immutable:
            headers['X-RustFS-Immutable'] = 'true'
        if retain_seconds:
            headers['X-RustFS-Retain-Seconds'] = str(int(retain_seconds))
        if size == 0:
            body = b''
        elif size is not None:
            body = _SizedReader(stream, size)
        else:
            body = _chunks(stream)
        self._request('PUT', self._object_url(key), 'put', key, data=body, headers=headers).close()

    def delete(self, key):
        try:
            self._request('DELETE', self._object_url(key), 'delete', key).close()
        except errors.ObjectMissingError:
            return
