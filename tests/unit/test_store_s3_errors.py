# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Error mapping of the s3 and rustfs drivers, without servers.

The exceptions are the SDKs' own classes built the way botocore and requests
build them; nothing is sent anywhere.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import ssl

import pytest

botocore = pytest.importorskip('botocore')
import botocore.exceptions  # noqa: E402

from ansible_collections.storeshift.objstore.plugins.module_utils import errors, specs  # noqa: E402
from ansible_collections.storeshift.objstore.plugins.module_utils.store_s3 import S3Store  # noqa: E402

ACCESS = 'AKIAUNITTESTACCESS01'
SECRET = 'unit-test-secret-value-0123456789'
URL = 'http://s3.example.test:9000'


@pytest.fixture
def s3():
    spec = specs.StoreSpec.from_dict({'storage_driver': {'name': 's3', 'config': {
        'url': URL + '/', 'bucket': 'artefacts', 'prefix': 'p/', 'access_key': ACCESS, 'secret_key': SECRET}}})
    return S3Store(spec)


def client_error(code, status, message='server says no', op='GetObject'):
    return botocore.exceptions.ClientError(
        {'Error': {'Code': code, 'Message': message}, 'ResponseMetadata': {'HTTPStatusCode': status}}, op)


def assert_clean(err):
    text = str(err) + repr(err.to_dict())
    assert SECRET not in text
    assert ACCESS not in text


@pytest.mark.parametrize('code,status,cls', [
    ('InvalidAccessKeyId', 403, errors.AuthError),
    ('SignatureDoesNotMatch', 403, errors.AuthError),
    ('InvalidToken', 400, errors.AuthError),
    ('AccessDenied', 403, errors.AccessDeniedError),
    ('403', 403, errors.AccessDeniedError),
    ('NoSuchBucket', 404, errors.BucketMissingError),
    ('NoSuchKey', 404, errors.ObjectMissingError),
    ('404', 404, errors.ObjectMissingError),
    ('SlowDown', 503, errors.TransientError),
    ('ServiceUnavailable', 503, errors.TransientError),
    ('InternalError', 500, errors.TransientError),
    ('RequestTimeout', 400, errors.TransientError),
    ('WeirdCode', 502, errors.TransientError),
    ('ObjectLocked', 400, errors.RetentionError),
    ('InvalidArgument', 400, errors.ObjstoreError),
])
def test_client_errors(s3, code, status, cls):
    err = s3._map_error(client_error(code, status), 'open', 'k')
    assert err.__class__ is cls
    assert err.step == 'open'
    assert_clean(err)


def test_auth_message(s3):
    err = s3._map_error(client_error('SignatureDoesNotMatch', 403, 'bad signature for %s' % SECRET), 'put', 'k')
    assert str(err) == 'S3 rejected the credentials (access key or secret key wrong) for %s' % URL
    assert_clean(err)


def test_server_echo_is_scrubbed(s3):
    err = s3._map_error(client_error('InvalidArgument', 400, 'key %s secret %s' % (ACCESS, SECRET)), 'put', 'k')
    assert '********' in str(err)
    assert_clean(err)


def test_missing_bucket_and_key_messages(s3):
    err = s3._map_error(client_error('NoSuchBucket', 404), 'list')
    assert str(err) == 'bucket artefacts does not exist on %s (set create_bucket: true to create it)' % URL
    err = s3._map_error(client_error('NoSuchKey', 404), 'open', 'a/b')
    assert 'p/a/b' in str(err) and err.key == 'a/b'


def test_connection_refused(s3):
    inner = ConnectionRefusedError(111, 'Connection refused')
    exc = botocore.exceptions.EndpointConnectionError(endpoint_url=URL + '/artefacts', error=inner)
    err = s3._map_error(exc, 'check_access')
    assert err.__class__ is errors.ConnectError
    assert str(err) == 'cannot connect to %s: connection refused' % URL


def test_dns_failure(s3):
    inner = socket.gaierror(-2, 'Name or service not known')
    exc = botocore.exceptions.EndpointConnectionError(endpoint_url=URL, error=inner)
    err = s3._map_error(exc, 'check_access')
    assert err.__class__ is errors.ConnectError
    assert str(err).startswith('cannot resolve host')


def test_tls_failure(s3):
    inner = ssl.SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed')
    exc = botocore.exceptions.SSLError(endpoint_url=URL, error=inner)
    err = s3._map_error(exc, 'check_access')
    assert err.__class__ is errors.ConnectError
    assert err.cause == 'TLS certificate verification failed'
    assert 'ca_bundle' in str(err)


@pytest.mark.parametrize('exc', [
    botocore.exceptions.ConnectionClosedError(endpoint_url=URL),
    botocore.exceptions.ReadTimeoutError(endpoint_url=URL),
    botocore.exceptions.ResponseStreamingError(error=ConnectionResetError(104, 'reset')),
    botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2),
    ConnectionResetError(104, 'Connection reset by peer'),
    socket.timeout('timed out'),
], ids=['closed', 'read-timeout', 'streaming', 'incomplete', 'reset', 'timeout'])
def test_transient(s3, exc):
    err = s3._map_error(exc, 'read', 'k')
    assert err.__class__ is errors.TransientError
    assert_clean(err)


def test_no_credentials(s3):
    err = s3._map_error(botocore.exceptions.NoCredentialsError(), 'check_access')
    assert err.__class__ is errors.AuthError


def test_unknown_exception(s3):
    err = s3._map_error(RuntimeError('odd %s' % SECRET), 'put', 'k')
    assert err.__class__ is errors.ObjstoreError
    assert_clean(err)


def test_collection_errors_pass_through(s3):
    original = errors.IntegrityError('short')
    assert s3._map_error(original, 'put') is original


def test_config_defaults(s3):
    assert s3.url == URL
    assert s3.region == 'us-east-1'
    assert s3.prefix == 'p/'
    assert s3.threshold == 8 * 1024 * 1024
    config = s3.client.meta.config
    assert config.s3['addressing_style'] == 'path'
    assert config.retries['total_max_attempts'] == 1
    assert config.max_pool_connections == 64


def test_rustfs_status_mapping():
    requests = pytest.importorskip('requests')
    from ansible_collections.storeshift.objstore.plugins.module_utils.store_rustfs import RustfsStore

    key = 'rustfs-unit-api-key-0123456789'
    store = RustfsStore(specs.StoreSpec.from_dict({'storage_driver': {'name': 'rustfs', 'config': {
        'endpoint': 'http://rustfs.test:8080', 'bucket': 'b', 'api_key': key}}}))

    def response(status, body):
        resp = requests.models.Response()
        resp.status_code = status
        resp._content = body.encode()
        resp.request = requests.Request('GET', 'http://rustfs.test:8080/x').prepare()
        return resp

    cases = [(401, '{"error": "missing API key"}', errors.AuthError),
             (403, '{"error": "invalid API key %s"}' % key, errors.AuthError),
             (404, '{"error": "bucket not found"}', errors.BucketMissingError),
             (404, '{"error": "object not found"}', errors.ObjectMissingError),
             (409, '{"error": "object is immutable until 2030-01-01T00:00:00Z"}', errors.RetentionError),
             (503, 'busy', errors.TransientError),
             (400, '{"error": "bad key"}', errors.ObjstoreError)]
    for status, body, cls in cases:
        err = store._map_status(response(status, body), 'open', 'k')
        assert err.__class__ is cls, (status, body, err)
        assert key not in str(err)
    refused = requests.exceptions.ConnectionError(ConnectionRefusedError(111, 'Connection refused'))
    assert store._map_error(refused, 'put').__class__ is errors.ConnectError
    assert store._map_error(requests.exceptions.ReadTimeout('read timed out'), 'put').__class__ is errors.TransientError
    assert store._map_error(requests.exceptions.ChunkedEncodingError('broken'), 'read').__class__ is errors.TransientError


def test_streamed_write_with_another_md5_is_deleted_and_a_failed_delete_is_named(s3, monkeypatch):
    """A streamed PUT whose ETag is not the source's MD5: that version is deleted; when the delete fails too,
    the error says the write is still there (without the secret the server's message carried)."""
    from ansible_collections.storeshift.objstore.plugins.module_utils import s3fast

    def stored_other_bytes(*_args, **_kwargs):
        raise s3fast.OtherBytesStored('0' * 32, 'v3')
    monkeypatch.setattr(s3._fast, 'put_stream', stored_other_bytes)
    deleted = []

    class Client(object):
        fail = False

        def delete_object(self, **kwargs):
            deleted.append(kwargs)
            if self.fail:
                raise client_error('AccessDenied', 403, 'no delete for ' + SECRET, op='DeleteObject')
    s3.client = Client()
    with pytest.raises(errors.IntegrityError) as caught:
        s3._put_streamed('k', 'p/k', None, 10, 'a' * 32)
    assert deleted == [{'Bucket': 'artefacts', 'Key': 'p/k', 'VersionId': 'v3'}]
    assert 'another MD5' in str(caught.value) and 'could not be deleted' not in str(caught.value)
    s3.client.fail = True
    with pytest.raises(errors.IntegrityError) as caught:
        s3._put_streamed('k', 'p/k', None, 10, 'a' * 32)
    assert 'could not be deleted' in str(caught.value) and 'p/k' in str(caught.value)
    assert_clean(caught.value)
