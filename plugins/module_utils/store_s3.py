# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``s3`` driver (boto3): AWS S3 and S3-compatible servers.

One boto3 client per store instance, shared by every worker thread (boto3
clients are thread safe); botocore's own retries are off because the
engine retries and counts. Uploads stream: objects up to
``multipart_threshold_mb`` go in one PutObject, larger or unknown-size
objects in a multipart upload read one part at a time, so memory stays
bounded by the part size. Every SDK error goes through ``_map_error``.

Hot path: with static credentials on an explicit endpoint (path-style),
single-object GET, HEAD and PUT (in memory up to ``multipart_threshold_mb``,
streamed above it), listings and HEAD bucket go through ``s3fast``
(hand-signed SigV4 over keep-alive sockets, a fraction of botocore's CPU per
request), and the boto3 client is only made when a request needs it;
whatever does not plainly succeed there is redone through boto3, so errors
are produced and mapped exactly as before. Every PUT carries a digest of its
bytes for the server to check: their SHA-256 (``x-amz-checksum-sha256``), or
for a streamed PUT, when the engine has the source's MD5, nothing more: the
ETag of what the server stored must be that MD5; else an aws-chunked SHA-256
trailer. The environment
variable ``STORESHIFT_S3_FAST_PATH=0`` turns the fast path off; an endpoint
that the environment sends through an HTTP proxy (``https_proxy`` and
``no_proxy``, as boto3 reads them) is left to boto3.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import importlib.util
import os
import socket
import ssl
import threading
import uuid

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    from urlparse import urlsplit  # noqa

from ansible_collections.storeshift.objstore.plugins.module_utils import errors
from ansible_collections.storeshift.objstore.plugins.module_utils import s3fast
from ansible_collections.storeshift.objstore.plugins.module_utils.store import ObjectInfo, ObjectStore

try:
    # boto3 itself (about 0.3 s of CPU to import with botocore.utils) is imported when the first
    # client is made: on the fast path a run may never need it.
    import botocore.exceptions
    HAS_BOTO3 = importlib.util.find_spec('boto3') is not None
except ImportError:  # pragma: no cover - bare targets only
    HAS_BOTO3 = False

MIB = 1024 * 1024
MIN_PART = 5 * MIB            # S3's minimum part size (all parts but the last)
MAX_PARTS = 10000             # S3's maximum number of parts
MAX_SINGLE_PUT = 5 * 1024 * MIB  # S3's largest single PutObject
PAGE_SIZE = 1000

_AUTH_CODES = frozenset(('InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken',
                         'InvalidSecurity', 'AuthorizationHeaderMalformed', 'TokenRefreshRequired',
                         'InvalidClientTokenId'))
_TRANSIENT_CODES = frozenset(('SlowDown', 'ServiceUnavailable', 'InternalError', 'RequestTimeout',
                              'Throttling', 'ThrottlingException',
                              'OperationAborted', 'BadGateway', 'GatewayTimeout', '500', '502', '503', '504'))
_DIGEST_CODES = s3fast.DIGEST_ERROR_CODES
_CHECKSUM_MISMATCH = 'checksum mismatch in transit'
_RETENTION_CODES = frozenset(('ObjectLocked', 'InvalidRetentionPeriod', 'ObjectLockConfigurationNotFoundError'))


def _valid_endpoint(url):
    """The URL shape botocore accepts for endpoint_url: a scheme and a host name (or bracketed IPv6)."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # pylint: disable=pointless-statement  # raises ValueError on a bad port
    except ValueError:
        return False
    if not parts.scheme or not hostname or any(c.isspace() for c in url):
        return False
    return all(c.isalnum() or c in '.-_:' for c in hostname)


class _SourceError(Exception):
    """Carries an exception raised by the caller's stream, so it is re-raised unmapped."""

    def __init__(self, error):
        super(_SourceError, self).__init__(str(error))
        self.error = error


def _read_exactly(stream, size):
    """Read ``size`` bytes from ``stream`` (fewer only at end of stream)."""
    parts = []
    got = 0
    while got < size:
        try:
            chunk = stream.read(size - got)
        except Exception as exc:  # the source's own failure: re-raised as is by put()
            raise _SourceError(exc)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    if len(parts) == 1:
        return parts[0]
    return b''.join(parts)


class _S3Reader(object):
    """The body of a GetObject, with read errors mapped to collection errors."""

    def __init__(self, store, body, key, etag=None):
        self._store = store
        self._body = body
        self._key = key
        # The MD5 the source recorded for these bytes, when its ETag is one (single-part, not SSE-KMS/C).
        self.content_md5 = s3fast.plain_md5(etag)

    def read(self, size=-1):
        try:
            if size is None or size < 0:
                return self._body.read()
            return self._body.read(size)
        except errors.ObjstoreError:
            raise
        except Exception as exc:  # botocore / urllib3 / socket errors while streaming
            raise self._store._map_error(exc, 'read', self._key)

    def splice_source(self):
        """The fast path body's splice source (s3fast.SpliceSource), its errors mapped as read()'s, or None."""
        opener = getattr(self._body, 'splice_source', None)
        if opener is None:
            return None
        return opener(map_error=lambda exc: self._store._map_error(exc, 'read', self._key))

    def close(self):
        try:
            self._body.close()
        except Exception:  # closing a broken connection must not mask the real error
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class S3Store(ObjectStore):
    """AWS S3 / S3-compatible object store."""

    driver = 's3'

    def __init__(self, spec):
        super(S3Store, self).__init__(spec)
        if not HAS_BOTO3:
            raise errors.MissingLibraryError('boto3')
        cfg = spec.config
        self.url = (cfg.get('url') or '').rstrip('/') or None
        self.bucket = cfg['bucket']
        self.prefix = cfg.get('prefix') or ''
        self.region = cfg.get('region') or ('us-east-1' if self.url else None)
        self.where = self.url or ('AWS S3 region %s' % (self.region or 'default'))
        self.create_bucket_default = bool(cfg.get('create_bucket', False))
        self.threshold = int(cfg.get('multipart_threshold_mb') or 8) * MIB
        self.chunk_size = max(int(cfg.get('multipart_chunksize_mb') or 8) * MIB, MIN_PART)
        self._secrets = spec.secrets() + [v for v in (cfg.get('access_key'),) if v]
        self._retention = None
        self._checksums_enforced = None

        if not cfg.get('validate_certs', True):
            verify = False
        elif cfg.get('ca_bundle'):
            verify = cfg['ca_bundle']
        else:
            verify = None
        addressing = cfg.get('addressing_style') or ('path' if self.url else 'auto')
        options = {
            'retries': {'total_max_attempts': 1},
            'max_pool_connections': int(cfg.get('max_pool_connections') or 64),
            's3': {'addressing_style': addressing},
            'signature_version': 's3v4',
        }
        if cfg.get('connect_timeout'):
            options['connect_timeout'] = int(cfg['connect_timeout'])
        if cfg.get('read_timeout'):
            options['read_timeout'] = int(cfg['read_timeout'])
        if self.region:
            options['region_name'] = self.region
        if cfg.get('iamauto') or not cfg.get('access_key'):
            # boto3's default credential chain (env, profile, instance/role metadata).
            credentials = {}
        else:
            credentials = {'aws_access_key_id': cfg['access_key'], 'aws_secret_access_key': cfg['secret_key'],
                           'aws_session_token': cfg.get('session_token')}
        kwargs = {}
        if self.url:
            if not _valid_endpoint(self.url):
                raise errors.ConfigError('cannot set up the S3 client for %s: Invalid endpoint: %s'
                                         % (self.where, self.url), step='config')
            kwargs['endpoint_url'] = self.url
        if verify is not None:
            kwargs['verify'] = verify
        # The boto3 client is made on first use: on the fast path a run may never need it (about 0.15 s
        # of CPU saved per store, which counts for short module runs).
        self._client = None
        self._client_args = (credentials, options, kwargs)
        self._client_lock = threading.Lock()
        self._fast = None
        if self.url and addressing == 'path' and cfg.get('access_key') and cfg.get('secret_key') \
                and not cfg.get('iamauto') and os.environ.get('STORESHIFT_S3_FAST_PATH', '1') != '0' \
                and not s3fast.proxied(self.url):
            try:
                self._fast = s3fast.FastS3(self.url, self.region, cfg['access_key'], cfg['secret_key'],
                                           session_token=cfg.get('session_token'), verify=verify,
                                           ca_bundle=cfg.get('ca_bundle'),
                                           connect_timeout=int(cfg.get('connect_timeout') or 60),
                                           read_timeout=int(cfg.get('read_timeout') or 60),
                                           maxsize=options['max_pool_connections'])
            except (s3fast.FastPathMiss, OSError, ssl.SSLError):
                self._fast = None  # an endpoint shape (or CA file) the fast path does not handle: boto3 only
        if self._fast is None:
            self._make_client()

    @property
    def client(self):
        if self._client is None:
            self._make_client()
        return self._client

    @client.setter
    def client(self, value):
        self._client = value

    def _make_client(self):
        with self._client_lock:
            if self._client is not None:
                return
            import boto3
            from botocore.config import Config  # about 0.14 s of CPU to import: only with the client
            credentials, options, kwargs = self._client_args
            try:
                session = boto3.session.Session(region_name=self.region, **credentials)
                self._client = session.client('s3', config=Config(**options), **kwargs)
            except Exception as exc:  # invalid endpoint URL, unknown region...
                raise errors.ConfigError('cannot set up the S3 client for %s: %s'
                                         % (self.where, errors.scrub(exc, self._secrets)), step='config')

    def stream_memory(self, size):
        """Bytes one upload of ``size`` bytes holds: a streamed PUT a chunk or two, a multipart upload a
        few parts (the part being sent, the next one being read, its read buffer); an object up to the
        multipart threshold is sent from memory, whole."""
        if size is not None and size <= self.threshold:
            return size
        if self._fast is not None and size is not None and size <= MAX_SINGLE_PUT:
            return 3 * s3fast.STREAM_CHUNK
        return 3 * self._part_size(size)

    # -- error mapping ------------------------------------------------------
    def _object_name(self, key):
        return self.prefix + key

    def _map_error(self, exc, step, key=None):
        """The collection error for ``exc`` (a botocore/urllib3/socket error) raised during ``step``."""
        if isinstance(exc, errors.ObjstoreError):
            return exc
        url = self.where
        secrets = self._secrets
        text = errors.scrub(exc, secrets)
        what = ('object %s in bucket %s on %s' % (self._object_name(key), self.bucket, url)) if key is not None \
            else ('bucket %s on %s' % (self.bucket, url))
        chain = errors.exception_chain(exc)
        names = set(type(e).__name__ for e in chain)

        if HAS_BOTO3 and isinstance(exc, botocore.exceptions.ClientError):
            response = getattr(exc, 'response', None) or {}
            error = response.get('Error') or {}
            code = str(error.get('Code') or '')
            status = (response.get('ResponseMetadata') or {}).get('HTTPStatusCode')
            message = errors.scrub(error.get('Message') or '', secrets)
            if code in _AUTH_CODES:
                return errors.AuthError('S3 rejected the credentials (access key or secret key wrong) for %s'
                                        % url, step=step, cause='bad credentials (%s)' % code, key=key)
            if code in _RETENTION_CODES or (code == 'AccessDenied' and any(
                    w in message.lower() for w in ('lock', 'retention', 'worm', 'legal hold'))):
                return errors.RetentionError('%s is protected by Object Lock: %s (%s)' % (what, message, code),
                                             step=step, cause='object retained', key=key)
            if code == '403' or (status == 403 and not code):
                # HEAD answers carry no error code: cannot tell bad credentials from a missing permission.
                return errors.AccessDeniedError(
                    'S3 answered 403 Forbidden to %s on %s (access denied, or credentials rejected)' % (step, what),
                    step=step, cause='permission denied', key=key)
            if code in ('AccessDenied', 'AllAccessDisabled', 'AccountProblem') or status == 403:
                return errors.AccessDeniedError(
                    'S3 denied %s on %s (%s; the credentials are valid for the server but lack permission)'
                    % (step, what, code or status), step=step, cause='permission denied', key=key)
            if code in ('NoSuchBucket',):
                return errors.BucketMissingError(
                    'bucket %s does not exist on %s (set create_bucket: true to create it)' % (self.bucket, url),
                    step=step, cause='missing bucket', key=key)
            if code in ('NoSuchKey', 'NotFound', '404') or status == 404:
                return errors.ObjectMissingError('%s does not exist' % what, step=step,
                                                 cause='object not found', key=key)
            if code in _DIGEST_CODES:
                # The server hashed what it received and found another digest than the one sent:
                # bytes changed on the way. Nothing was stored; the engine sends the object again.
                return errors.TransientError('S3 refused %s: the checksum of the bytes it received does not match '
                                             'the one sent (%s): %s' % (what, code, message), step=step,
                                             cause=_CHECKSUM_MISMATCH, key=key)
            if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
                return errors.TransientError('S3 server error %s during %s on %s: %s' % (code or status, step, what,
                                                                                         message),
                                             step=step, cause='transient server error (%s)' % (code or status),
                                             key=key)
            return errors.ObjstoreError('S3 error %s during %s on %s: %s' % (code or status, step, what, message),
                                        step=step, cause='S3 error %s' % (code or status), key=key)

        if HAS_BOTO3 and isinstance(exc, (botocore.exceptions.NoCredentialsError,
                                          botocore.exceptions.PartialCredentialsError,
                                          botocore.exceptions.CredentialRetrievalError)):
            return errors.AuthError('no usable S3 credentials for %s (set access_key and secret_key, or iamauto: true '
                                    'with a working credential chain): %s' % (url, text),
                                    step=step, cause='missing credentials', key=key)
        if HAS_BOTO3 and isinstance(exc, botocore.exceptions.SSLError) or any(
                isinstance(e, ssl.SSLError) for e in chain):
            verify = 'CERTIFICATE_VERIFY_FAILED' in text or 'certificate verify failed' in text
            cause = 'TLS certificate verification failed' if verify else 'TLS handshake failed'
            hint = ' (set ca_bundle to the CA file, or validate_certs: false for testing)' if verify else ''
            return errors.ConnectError('%s for %s%s: %s' % (cause, url, hint, text), step=step, cause=cause, key=key)
        # Streaming / mid-request failures: worth retrying.
        transient_names = ('ConnectionClosedError', 'ReadTimeoutError', 'ResponseStreamingError',
                           'IncompleteReadError', 'ProtocolError', 'IncompleteRead', 'ChunkedEncodingError',
                           'ConnectionResetError', 'BrokenPipeError', 'timeout', 'TimeoutError')
        if HAS_BOTO3 and isinstance(exc, (botocore.exceptions.ConnectionClosedError,
                                          botocore.exceptions.ReadTimeoutError,
                                          botocore.exceptions.ResponseStreamingError,
                                          botocore.exceptions.IncompleteReadError)) \
                or type(exc).__name__ in transient_names:
            return errors.TransientError('connection to %s failed during %s: %s' % (url, step, text),
                                         step=step, cause='transient network error (%s)' % type(exc).__name__,
                                         key=key)
        if any(isinstance(e, socket.gaierror) for e in chain) or any(m in text for m in errors.DNS_MARKERS):
            host = self.url or url
            return errors.ConnectError('cannot resolve host of %s (DNS lookup failed)' % host,
                                       step=step, cause='DNS lookup failed', key=key)
        if any(isinstance(e, ConnectionRefusedError) for e in chain) or 'Connection refused' in text:
            return errors.ConnectError('cannot connect to %s: connection refused' % url,
                                       step=step, cause='connection refused', key=key)
        if HAS_BOTO3 and isinstance(exc, botocore.exceptions.ConnectTimeoutError):
            return errors.ConnectError('cannot connect to %s: connection timed out' % url,
                                       step=step, cause='connection timed out', key=key)
        if HAS_BOTO3 and isinstance(exc, botocore.exceptions.EndpointConnectionError):
            return errors.ConnectError('cannot connect to %s: %s' % (url, text), step=step,
                                       cause='connection failed', key=key)
        if names & set(transient_names) or isinstance(exc, (socket.timeout, ConnectionError)):
            return errors.TransientError('connection to %s failed during %s: %s' % (url, step, text),
                                         step=step, cause='transient network error (%s)' % type(exc).__name__,
                                         key=key)
        if HAS_BOTO3 and isinstance(exc, botocore.exceptions.ParamValidationError):
            return errors.ConfigError('invalid S3 request during %s on %s: %s' % (step, what, text),
                                      step=step, key=key)
        return errors.ObjstoreError('S3 %s failed on %s: %s: %s' % (step, what, type(exc).__name__, text),
                                    step=step, cause='S3 error (%s)' % type(exc).__name__, key=key)

    # -- lifecycle ----------------------------------------------------------
    def check_access(self, create_bucket=False):
        if self._fast is not None:
            try:
                if self._fast.head_bucket(self.bucket):
                    return
                if (create_bucket or self.create_bucket_default) and self._fast.create_bucket(
                        self.bucket, self._location_constraint()):
                    return
            except s3fast.FastPathMiss:
                pass  # boto3 asks again and names the cause
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            mapped = self._map_error(exc, 'check_access')
        if isinstance(mapped, errors.AccessDeniedError):
            # HEAD answers carry no body: a bare 403 may be bad credentials. Ask again with a
            # request whose error has a code (ListObjectsV2 answers SignatureDoesNotMatch etc.).
            try:
                self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
                return
            except Exception as exc:
                mapped = self._map_error(exc, 'check_access')
        if isinstance(mapped, (errors.ObjectMissingError, errors.BucketMissingError)):
            if not (create_bucket or self.create_bucket_default):
                raise errors.BucketMissingError(
                    'bucket %s does not exist on %s (set create_bucket: true to create it)' % (self.bucket, self.where),
                    step='check_access', cause='missing bucket')
            self._create_bucket()
            return
        raise mapped

    def _location_constraint(self):
        # us-east-1 is the one region that takes no LocationConstraint (S3 refuses it there).
        return self.region if self.region and self.region != 'us-east-1' else None

    def _create_bucket(self):
        kwargs = {'Bucket': self.bucket}
        location = self._location_constraint()
        if location:
            kwargs['CreateBucketConfiguration'] = {'LocationConstraint': location}
        try:
            self.client.create_bucket(**kwargs)
        except Exception as exc:
            if HAS_BOTO3 and isinstance(exc, botocore.exceptions.ClientError) and \
                    (exc.response.get('Error') or {}).get('Code') in ('BucketAlreadyOwnedByYou',):
                return
            raise self._map_error(exc, 'create_bucket')

    def close(self):
        fast, self._fast = getattr(self, '_fast', None), None
        if fast is not None:
            fast.close()
        client, self._client = getattr(self, '_client', None), None
        if client is not None and hasattr(client, 'close'):
            client.close()

    def enforces_checksums(self):
        """True when the server refuses a PUT whose ``x-amz-checksum-sha256`` does not match its bytes.

        Probed once per store with a deliberately wrong digest: a server that checks answers BadDigest
        and stores nothing; one that ignores checksums stores the probe, which is deleted again.
        """
        if self._checksums_enforced is None:
            name = self.prefix + '.storeshift-checksum-probe-%s' % uuid.uuid4().hex
            body = b'storeshift checksum probe'
            wrong = s3fast.b64_digest(hashlib.sha256(b'not the probe'))
            fast = self._fast_for(name)
            refused = None
            if fast is not None:
                try:
                    refused = fast.refuses_wrong_checksum(self.bucket, name, body, wrong)
                except s3fast.FastPathMiss:
                    pass  # boto3 asks again
            if refused is None:
                try:
                    self.client.put_object(Bucket=self.bucket, Key=name, Body=body, ChecksumSHA256=wrong)
                    refused = False
                except Exception as exc:
                    refused = self._map_error(exc, 'checksum probe').cause == _CHECKSUM_MISMATCH
                    if not refused:
                        self._checksums_enforced = False
                        return False  # the probe failed for another reason: nothing stored, read back instead
            self._checksums_enforced = refused
            if refused:
                return True
            try:
                self.client.delete_object(Bucket=self.bucket, Key=name)
            except Exception:  # a probe left behind is harmless; the run reads every object back instead
                pass
        return self._checksums_enforced

    def _fast_for(self, name):
        fast = getattr(self, '_fast', None)
        if fast is not None and s3fast.usable_key(name):
            return fast
        return None

    # -- retention ------------------------------------------------------------
    @property
    def supports_retention(self):
        if self._retention is None:
            try:
                answer = self.client.get_object_lock_configuration(Bucket=self.bucket)
                config = answer.get('ObjectLockConfiguration') or {}
                self._retention = config.get('ObjectLockEnabled') == 'Enabled'
            except Exception as exc:
                mapped = self._map_error(exc, 'retention')
                if isinstance(mapped, (errors.ConnectError, errors.AuthError, errors.TransientError,
                                       errors.BucketMissingError)):
                    raise mapped
                # ObjectLockConfigurationNotFoundError, NotImplemented, AccessDenied: not usable.
                self._retention = False
        return self._retention

    def _retention_args(self, immutable, retain_seconds):
        if not immutable and not retain_seconds:
            return {}
        if not self.supports_retention:
            raise errors.RetentionError(
                'bucket %s on %s does not have S3 Object Lock enabled: cannot keep objects immutable/retained '
                '(create the bucket with Object Lock enabled, or drop immutable/retain_seconds)'
                % (self.bucket, self.where), step='put', cause='retention not supported')
        args = {}
        if retain_seconds:
            until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=int(retain_seconds))
            args['ObjectLockMode'] = 'COMPLIANCE' if immutable else 'GOVERNANCE'
            args['ObjectLockRetainUntilDate'] = until
        else:
            # Immutable without a period: a legal hold keeps the version until it is lifted.
            args['ObjectLockLegalHoldStatus'] = 'ON'
        return args

    # -- objects --------------------------------------------------------------
    def list(self, prefix=''):
        full = self.prefix + (prefix or '')
        cut = len(self.prefix)
        token = None
        try:
            while True:
                items, token = self._list_page(full, token)
                for name, size, etag in items:
                    if name.startswith(self.prefix):
                        yield ObjectInfo(name[cut:], size=size, etag=etag)
                if not token:
                    return
        except errors.ObjstoreError:
            raise
        except Exception as exc:
            raise self._map_error(exc, 'list')

    def _list_page(self, full, token):
        """One ListObjectsV2 page, ([(name, size, etag)], next token): the fast path, else boto3."""
        if self._fast is not None:
            try:
                return self._fast.list_page(self.bucket, full, token, PAGE_SIZE)
            except s3fast.FastPathMiss:
                pass  # boto3 asks for the same page (same token) and maps whatever went wrong
        kwargs = {'Bucket': self.bucket, 'Prefix': full, 'MaxKeys': PAGE_SIZE}
        if token:
            kwargs['ContinuationToken'] = token
        page = self.client.list_objects_v2(**kwargs)
        items = [(item['Key'], item.get('Size'), (item.get('ETag') or '').strip('"') or None)
                 for item in page.get('Contents') or ()]
        return items, (page.get('NextContinuationToken') if page.get('IsTruncated') else None)

    def stat(self, key):
        fast = self._fast_for(self._object_name(key))
        if fast is not None:
            try:
                found = fast.head(self.bucket, self._object_name(key))
                if found is None:
                    return None
                return ObjectInfo(key, size=found[0], etag=found[1], metadata=found[2], sha256=found[3])
            except s3fast.FastPathMiss:
                pass  # boto3 redoes it and maps whatever went wrong
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self._object_name(key))
        except Exception as exc:
            mapped = self._map_error(exc, 'stat', key)
            if isinstance(mapped, errors.ObjectMissingError):
                return None
            raise mapped
        return ObjectInfo(key, size=answer.get('ContentLength'), etag=(answer.get('ETag') or '').strip('"') or None,
                          metadata=answer.get('Metadata') or {})

    def open(self, key):
        fast = self._fast_for(self._object_name(key))
        if fast is not None:
            try:
                body = fast.get(self.bucket, self._object_name(key))
                return _S3Reader(self, body, key, body.etag)
            except s3fast.FastPathMiss:
                pass  # boto3 redoes it and maps whatever went wrong
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._object_name(key))
        except Exception as exc:
            raise self._map_error(exc, 'open', key)
        return _S3Reader(self, answer['Body'], key, answer.get('ETag'))

    def delete(self, key):
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._object_name(key))
        except Exception as exc:
            mapped = self._map_error(exc, 'delete', key)
            if isinstance(mapped, errors.ObjectMissingError):
                return
            raise mapped

    def put(self, key, stream, size=None, immutable=False, retain_seconds=None, metadata=None, source_md5=None):
        """Store the stream; returns the SHA-256 (hex) of the stored bytes when the server checked it.

        Every request carries a digest of its bytes for the server to check. Up to the multipart
        threshold and in multipart uploads that is their SHA-256 (``x-amz-checksum-sha256``, a header,
        one per part); a server that implements S3 checksums refuses a mismatch and echoes the value.
        A streamed PUT with ``source_md5`` (the source's plain ETag) is checked by the server's answer:
        its ETag (its MD5 of what it stored) must be that MD5, else the write is removed again and an
        IntegrityError raised (the engine copies the object again, with a SHA-256 trailer); without
        it, the SHA-256 goes as an aws-chunked trailer. Only a checked write returns the digest, and
        the engine may then count it as verified without reading it back.
        """
        extra = self._retention_args(immutable, retain_seconds)
        if metadata:
            extra['Metadata'] = dict((str(k), str(v)) for k, v in metadata.items())
        name = self._object_name(key)
        try:
            if size is not None and size <= self.threshold:
                lent = s3fast.lent_digest(stream)
                data = _read_exactly(stream, size)
                if len(data) != size:
                    raise errors.IntegrityError('stream for %s ended after %d of %d bytes' % (key, len(data), size),
                                                step='put', key=key)
                return self._put_object(key, name, data, extra, lent.hexdigest() if lent is not None else None)
            if size is not None and size <= MAX_SINGLE_PUT and not extra and self._fast_for(name) is not None:
                try:
                    return self._put_streamed(key, name, stream, size, source_md5)
                except s3fast.FastPathMiss:
                    pass  # nothing was read from the stream yet: a multipart upload through boto3 instead
            first = _read_exactly(stream, self.threshold if size is None else self._part_size(size))
            if size is None and len(first) < self.threshold:
                # Unknown size, but the whole stream fits below the threshold.
                return self._put_object(key, name, first, extra)
        except errors.ObjstoreError:
            raise
        except _SourceError as exc:
            raise exc.error
        except Exception as exc:
            raise self._map_error(exc, 'put', key)
        return self._multipart(key, name, stream, size, first, extra)

    def _put_object(self, key, name, data, extra, sha256_hex=None):
        """One PutObject of ``data``; ``sha256_hex``, when given, is its SHA-256 (computed while it was read)."""
        fast = None if extra else self._fast_for(name)
        if fast is not None:
            try:
                _etag, sha, echoed = fast.put(self.bucket, name, data, sha256_hex)
                return sha if echoed else None
            except s3fast.FastPathMiss:
                pass  # boto3 redoes it and maps whatever went wrong
        digest = hashlib.sha256(data)
        b64 = s3fast.b64_digest(digest)
        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=name, Body=data, ChecksumSHA256=b64,
                                            ContentType=s3fast.CONTENT_TYPE, **extra)
        except Exception as exc:
            raise self._map_error(exc, 'put', key)
        return digest.hexdigest() if answer.get('ChecksumSHA256') == b64 else None

    def _put_streamed(self, key, name, stream, size, source_md5=None):
        try:
            _etag, sha, proven = self._fast.put_stream(self.bucket, name, stream, size, source_md5)
        except s3fast.OtherBytesStored as exc:
            # The bytes changed on the way, or the source's (or this server's) ETags are not content MD5s:
            # what was stored goes, and the engine copies the object again, with a SHA-256 trailer.
            left = self._remove_unproven(key, name, exc.version_id)
            raise errors.IntegrityError('%s stored %s with another MD5 than the source\'s (ETag %s)%s'
                                        % (self.where, key, exc.etag, left), step='verify', cause=_CHECKSUM_MISMATCH,
                                        key=key)
        except s3fast.SourceFailed as exc:
            raise _SourceError(exc.error)
        except s3fast.ShortStream as exc:
            raise errors.IntegrityError('stream for %s ended after %d of %d bytes' % (key, exc.got, exc.size),
                                        step='put', key=key)
        except s3fast.StreamBroken as exc:
            # The stream is spent: the engine copies the object again from a fresh read.
            raise errors.TransientError('upload of %s to %s broke off: %s' % (key, self.where, exc), step='put',
                                        cause='transient upload failure', key=key)
        return sha if proven else None

    def _remove_unproven(self, key, name, version_id):
        """Delete a write whose ETag disproved it (that version only, in a bucket that keeps versions).

        Returns '' when it is gone, else what the error message adds: the next attempt overwrites it, but
        an object that fails for good leaves it there, which the operator must know (and delete)."""
        args = {'VersionId': version_id} if version_id else {}
        try:
            self.client.delete_object(Bucket=self.bucket, Key=name, **args)
        except Exception as exc:  # the IntegrityError that follows is what the caller must see
            return '; the write could not be deleted (%s): delete it if the object is not copied again' % (
                self._map_error(exc, 'delete', key))
        return ''

    def _part_size(self, size):
        part = self.chunk_size
        if size is not None and size > part * MAX_PARTS:
            part = -(-size // MAX_PARTS)
        return part

    def _multipart(self, key, name, stream, size, first, extra):
        try:
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=name, ChecksumAlgorithm='SHA256',
                                                         ContentType=s3fast.CONTENT_TYPE, **extra)
        except Exception as exc:
            raise self._map_error(exc, 'put', key)
        upload_id = upload['UploadId']
        parts = []
        total = 0
        whole = hashlib.sha256()
        echoed = True
        try:
            data = first
            if size is None and len(data) < self.chunk_size:
                data += _read_exactly(stream, self.chunk_size - len(data))
            number = 1
            while True:
                if not data and number > 1:
                    break
                whole.update(data)
                b64 = s3fast.b64_digest(hashlib.sha256(data))
                answer = self.client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                 PartNumber=number, Body=data, ChecksumSHA256=b64)
                echoed = echoed and answer.get('ChecksumSHA256') == b64
                parts.append({'PartNumber': number, 'ETag': answer['ETag'], 'ChecksumSHA256': b64})
                total += len(data)
                if size is not None and total >= size:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise errors.ObjstoreError('object %s needs more than %d parts; raise multipart_chunksize_mb'
                                               % (key, MAX_PARTS), step='put', key=key)
                part_size = self._part_size(size)
                if size is None and number > MAX_PARTS // 2:
                    # Unknown size: grow parts so that very large streams still fit in 10,000 parts.
                    part_size *= 1 + (number - MAX_PARTS // 2) // 500
                data = _read_exactly(stream, part_size)
            if size is not None and total != size:
                raise errors.IntegrityError('stream for %s ended after %d of %d bytes' % (key, total, size),
                                            step='put', key=key)
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                  MultipartUpload={'Parts': parts})
        except BaseException as exc:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            except Exception:  # the original failure is what matters; the server expires stale uploads
                pass
            if isinstance(exc, _SourceError):
                raise exc.error
            if isinstance(exc, errors.ObjstoreError) or not isinstance(exc, Exception):
                raise
            raise self._map_error(exc, 'put', key)
        # Every part's SHA-256 was checked by the server, so the object is exactly the bytes hashed here.
        return whole.hexdigest() if echoed else None
