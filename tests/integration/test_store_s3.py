# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The s3 driver against the real SeaweedFS of the test stack (no mocks)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import hashlib
import io
import json
import os
import time
import uuid

import pytest

boto3 = pytest.importorskip('boto3')
from botocore.config import Config  # noqa: E402  (after importorskip)
import botocore.exceptions  # noqa: E402

from ansible_collections.storeshift.objstore.plugins.module_utils import errors, specs  # noqa: E402
from ansible_collections.storeshift.objstore.plugins.module_utils import store as store_mod  # noqa: E402

from helpers import run_isolated_roundtrip  # noqa: E402
from ports import free_port  # noqa: E402


MIB = 1024 * 1024
BIG = 200 * MIB
RSS_LIMIT_MIB = 150


def _store(data):
    return store_mod.open_store(specs.StoreSpec.from_dict(data))


def _with(spec, **changes):
    data = copy.deepcopy(spec)
    data['storage_driver']['config'].update(changes)
    for name, value in list(changes.items()):
        if value is None:
            data['storage_driver']['config'].pop(name)
    return data


def _raw_client(spec):
    cfg = spec['storage_driver']['config']
    return boto3.client('s3', endpoint_url=cfg['url'].rstrip('/'), aws_access_key_id=cfg['access_key'],
                        aws_secret_access_key=cfg['secret_key'], region_name=cfg.get('region') or 'us-east-1',
                        config=Config(s3={'addressing_style': 'path'}, retries={'total_max_attempts': 1}))


def _drop_bucket(raw, bucket):
    """Best effort: remove every version and the bucket (tests' own buckets; fixtures drop theirs)."""
    try:
        for page in raw.get_paginator('list_object_versions').paginate(Bucket=bucket):
            for item in page.get('Versions', []) + page.get('DeleteMarkers', []):
                raw.delete_object(Bucket=bucket, Key=item['Key'], VersionId=item['VersionId'],
                                  BypassGovernanceRetention=True)
        raw.delete_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        pass


@pytest.fixture
def s3(s3_spec):
    st = _store(s3_spec)
    st.check_access(create_bucket=True)
    yield st
    st.close()


@pytest.mark.parametrize('fast_path', ['1', '0'])
def test_s3_200mib_streamed_in_bounded_memory(s3_spec, fast_path):
    _store(s3_spec).check_access(create_bucket=True)
    out = run_isolated_roundtrip(s3_spec, BIG, 'big/200mib-%s.bin' % fast_path, known=True,
                                 env={'STORESHIFT_S3_FAST_PATH': fast_path})
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result['written_size'] == result['read_size'] == result['stat_size'] == BIG
    assert result['written'] == result['read']
    # The server checked the SHA-256 of what it stored against the one sent, and confirmed it.
    assert result['confirmed'] == result['written']
    if fast_path == '1':
        # One streamed PUT (aws-chunked, SHA-256 trailer) through the fast path: no boto3 call at all.
        assert result['calls'] == {}
    else:
        # boto3 only: a multipart upload of 8 MiB parts, each with its SHA-256, no single PutObject.
        assert result['calls'].get('CreateMultipartUpload') == 1
        assert result['calls'].get('UploadPart') == BIG // (8 * MIB)
        assert result['calls'].get('CompleteMultipartUpload') == 1
        assert 'PutObject' not in result['calls']
    assert result['maxrss_mib'] < RSS_LIMIT_MIB, result
    assert result['vmhwm_mib'] is None or result['vmhwm_mib'] < RSS_LIMIT_MIB, result


def test_s3_unknown_size_multipart_and_small(s3):
    data = os.urandom(19 * MIB + 5)
    s3.put('u/big', io.BytesIO(data), size=None)
    assert s3.stat('u/big').size == len(data)
    assert s3.open('u/big').read() == data
    s3.put('u/small', io.BytesIO(b'abc'), size=None)
    assert s3.open('u/small').read() == b'abc'


@pytest.mark.parametrize('fast_path', ['1', '0'])
def test_s3_writes_declare_octet_stream(s3_spec, monkeypatch, fast_path):
    # Every form of write declares its body application/octet-stream (the fast path signs the header, which
    # the server must accept); unit tests check the header is sent, as SeaweedFS stores that type anyway.
    monkeypatch.setenv('STORESHIFT_S3_FAST_PATH', fast_path)
    st = _store(s3_spec)
    st.check_access(create_bucket=True)
    small = os.urandom(4096)
    large = os.urandom(9 * MIB + 3)
    large_md5 = hashlib.md5(large).hexdigest()
    try:  # the fixture drops the bucket with what is in it
        st.put('ct/memory', io.BytesIO(small), size=len(small))
        st.put('ct/stream', io.BytesIO(large), size=len(large))
        st.put('ct/stream-md5', io.BytesIO(large), size=len(large), source_md5=large_md5)
        st.put('ct/multipart', io.BytesIO(large), size=None)
        raw = _raw_client(s3_spec)
        bucket = s3_spec['storage_driver']['config']['bucket']
        prefix = s3_spec['storage_driver']['config'].get('prefix') or ''
        for name in ('memory', 'stream', 'stream-md5', 'multipart'):
            head = raw.head_object(Bucket=bucket, Key=prefix + 'ct/' + name)
            assert head['ContentType'] == 'application/octet-stream', (name, head['ContentType'])
        assert st.open('ct/stream-md5').read() == large
    finally:
        st.close()


def test_s3_multipart_aborted_on_failure(s3, s3_spec):
    class Failing(object):
        def __init__(self):
            self.sent = 0

        def read(self, n=-1):
            if self.sent >= 10 * MIB:
                raise IOError('source disk failed')
            n = min(n if n and n > 0 else MIB, 10 * MIB - self.sent)
            self.sent += n
            return b'\0' * n

    with pytest.raises(Exception) as info:
        s3.put('fail/obj', Failing(), size=30 * MIB)
    assert 'source disk failed' in str(info.value)
    raw = _raw_client(s3_spec)
    bucket = s3_spec['storage_driver']['config']['bucket']
    assert not raw.list_multipart_uploads(Bucket=bucket).get('Uploads')
    assert s3.stat('fail/obj') is None


def test_s3_short_stream_is_an_error(s3):
    with pytest.raises(errors.IntegrityError):
        s3.put('short', io.BytesIO(b'12345'), size=10)
    assert s3.stat('short') is None


def test_s3_prefix_concatenation(s3_spec):
    prefix = 'anchore-%s-' % uuid.uuid4().hex[:6]
    st = _store(_with(s3_spec, prefix=prefix))
    plain = _store(s3_spec)
    try:
        st.check_access(create_bucket=True)
        st.put('objects/a/b.json', io.BytesIO(b'{}'), size=2)
        plain.put('outside/x', io.BytesIO(b'x'), size=1)
        raw = _raw_client(s3_spec)
        bucket = s3_spec['storage_driver']['config']['bucket']
        names = [o['Key'] for o in raw.list_objects_v2(Bucket=bucket).get('Contents', [])]
        assert prefix + 'objects/a/b.json' in names   # plain concatenation, no '/' added
        assert [i.key for i in st.list()] == ['objects/a/b.json']
        assert [i.key for i in st.list('objects/')] == ['objects/a/b.json']
        assert plain.stat(prefix + 'objects/a/b.json').size == 2
        assert st.open('objects/a/b.json').read() == b'{}'
        st.delete('objects/a/b.json')
        assert plain.stat(prefix + 'objects/a/b.json') is None
    finally:
        st.close()
        plain.close()


def test_s3_url_trailing_slash_and_defaults(s3_spec):
    url = s3_spec['storage_driver']['config']['url'].rstrip('/')
    st = _store(_with(s3_spec, url=url + '/'))
    try:
        assert st.url == url
        assert st.region == 'us-east-1'
        assert st.client.meta.config.s3['addressing_style'] == 'path'
        assert st.client.meta.config.max_pool_connections == 64
        st.check_access()
    finally:
        st.close()


def test_s3_wrong_secret_is_auth_error(s3_spec):
    secret = 'wrong-secret-%s' % uuid.uuid4().hex
    st = _store(_with(s3_spec, secret_key=secret))
    access = s3_spec['storage_driver']['config']['access_key']
    for call in (st.check_access, lambda: st.put('k', io.BytesIO(b'x'), size=1), lambda: st.open('k'),
                 lambda: list(st.list())):
        with pytest.raises(errors.AuthError) as info:
            call()
        message = str(info.value)
        assert 'S3 rejected the credentials' in message
        assert secret not in message and secret not in repr(info.value.to_dict())
        assert access not in message


def test_s3_connection_refused(s3_spec):
    st = _store(_with(s3_spec, url='http://127.0.0.1:%d' % free_port()))
    with pytest.raises(errors.ConnectError) as info:
        st.check_access()
    assert 'connection refused' in str(info.value)
    with pytest.raises(errors.ConnectError):
        st.put('k', io.BytesIO(b'x'), size=1)
    with pytest.raises(errors.ConnectError):
        list(st.list())


def test_s3_missing_bucket(s3_spec):
    bucket = 'missing-%s' % uuid.uuid4().hex[:12]
    st = _store(_with(s3_spec, bucket=bucket))
    with pytest.raises(errors.BucketMissingError) as info:
        st.check_access()
    assert bucket in str(info.value) and 'create_bucket: true' in str(info.value)
    with pytest.raises(errors.BucketMissingError):
        st.open('anything')
    with pytest.raises(errors.BucketMissingError):
        list(st.list())
    raw = _raw_client(s3_spec)
    try:
        st.check_access(create_bucket=True)
        st.check_access()
        st.put('k', io.BytesIO(b'x'), size=1)
        assert st.exists('k')
        # create_bucket in the spec's config does the same.
        other = _store(_with(s3_spec, bucket=bucket + '-cfg', create_bucket=True))
        other.check_access()
        raw.head_bucket(Bucket=bucket + '-cfg')
        # The fast path looked for the bucket and made it: no boto3 client (its start-up) was needed.
        assert other._client is None
    finally:
        _drop_bucket(raw, bucket)
        _drop_bucket(raw, bucket + '-cfg')


def test_s3_no_object_lock_means_no_retention(s3, s3_spec):
    assert s3.supports_retention is False
    with pytest.raises(errors.RetentionError) as info:
        s3.put('locked', io.BytesIO(b'x'), size=1, immutable=True, retain_seconds=60)
    bucket = s3_spec['storage_driver']['config']['bucket']
    assert bucket in str(info.value) and s3.url in str(info.value)
    assert s3.stat('locked') is None


def test_s3_object_lock(s3_spec):
    """SeaweedFS supports Object Lock: buckets created with it report Enabled and keep versions."""
    bucket = 'lock-%s' % uuid.uuid4().hex[:12]
    raw = _raw_client(s3_spec)
    raw.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    started = time.time()
    st = _store(_with(s3_spec, bucket=bucket))
    try:
        st.check_access()
        assert st.supports_retention is True
        st.put('compliance', io.BytesIO(b'keep me'), size=7, immutable=True, retain_seconds=2)
        st.put('governance', io.BytesIO(b'keep me too'), size=11, retain_seconds=2)
        st.put('held', io.BytesIO(b'held'), size=4, immutable=True)
        big = os.urandom(9 * MIB)
        st.put('compliance-multipart', io.BytesIO(big), size=len(big), immutable=True, retain_seconds=2)
        now = datetime.datetime.now(datetime.timezone.utc)
        head = raw.head_object(Bucket=bucket, Key='compliance')
        assert head['ObjectLockMode'] == 'COMPLIANCE'
        assert now < head['ObjectLockRetainUntilDate'] <= now + datetime.timedelta(seconds=5)
        assert raw.head_object(Bucket=bucket, Key='governance')['ObjectLockMode'] == 'GOVERNANCE'
        assert raw.head_object(Bucket=bucket, Key='held')['ObjectLockLegalHoldStatus'] == 'ON'
        assert raw.head_object(Bucket=bucket, Key='compliance-multipart')['ObjectLockMode'] == 'COMPLIANCE'
        assert st.open('compliance-multipart').read() == big
        # The locked version cannot be removed while retained.
        version = raw.head_object(Bucket=bucket, Key='compliance')['VersionId']
        with pytest.raises(botocore.exceptions.ClientError):
            raw.delete_object(Bucket=bucket, Key='compliance', VersionId=version)
    finally:
        st.close()
        try:
            raw.put_object_legal_hold(Bucket=bucket, Key='held', LegalHold={'Status': 'OFF'})
        except botocore.exceptions.ClientError:
            pass
        time.sleep(max(0.0, started + 2.5 - time.time()))  # let the 2 s retention run out, then clean up
        _drop_bucket(raw, bucket)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_s3_tls_ca_bundle(s3_https_spec):
    st = _store(s3_https_spec)
    st.check_access()
    st.put('tls/k', io.BytesIO(b'over tls'), size=8)
    assert st.open('tls/k').read() == b'over tls'
    st.close()
    untrusted = _store(_with(s3_https_spec, ca_bundle=None))
    with pytest.raises(errors.ConnectError) as info:
        untrusted.check_access()
    assert info.value.cause == 'TLS certificate verification failed'
    unverified = _store(_with(s3_https_spec, ca_bundle=None, validate_certs=False))
    unverified.check_access()
