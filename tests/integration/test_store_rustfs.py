# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rustfs driver against the RustFS reference server of the test stack (no mocks)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import io
import json
import threading
import time
import uuid

import pytest

requests = pytest.importorskip('requests')

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
    config = data['storage_driver']['config']
    for name, value in changes.items():
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value
    return data


@pytest.fixture
def rustfs(rustfs_spec):
    st = _store(rustfs_spec)
    st.check_access(create_bucket=True)
    yield st
    st.close()


@pytest.mark.parametrize('mode', ['known', 'unknown'])
def test_rustfs_200mib_streamed_in_bounded_memory(rustfs_spec, mode):
    _store(rustfs_spec).check_access(create_bucket=True)
    out = run_isolated_roundtrip(rustfs_spec, BIG, 'big/200 mib.bin', known=(mode == 'known'))
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result['written_size'] == result['read_size'] == result['stat_size'] == BIG
    assert result['written'] == result['read'] == result['stat_sha256']
    assert result['maxrss_mib'] < RSS_LIMIT_MIB, result
    assert result['vmhwm_mib'] is None or result['vmhwm_mib'] < RSS_LIMIT_MIB, result


def test_rustfs_sha256_and_listing_fields(rustfs):
    rustfs.put('a/one', io.BytesIO(b'one'), size=3)
    info = rustfs.stat('a/one')
    assert info.size == 3
    assert info.sha256 == '7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed'
    listed = list(rustfs.list('a/'))
    assert [(i.key, i.size, i.sha256) for i in listed] == [('a/one', 3, info.sha256)]


def test_rustfs_missing_api_key(rustfs_spec):
    st = _store(_with(rustfs_spec, api_key=None, api_key_header=None))
    for call in (st.check_access, lambda: st.put('k', io.BytesIO(b'x'), size=1), lambda: st.stat('k'),
                 lambda: list(st.list())):
        with pytest.raises(errors.AuthError) as info:
            call()
        assert 'API key missing' in str(info.value) and 'api_key' in str(info.value)


def test_rustfs_wrong_api_key(rustfs_spec):
    good = rustfs_spec['storage_driver']['config']['api_key']
    wrong = 'wrong-key-%s' % uuid.uuid4().hex
    st = _store(_with(rustfs_spec, api_key=wrong))
    for call in (st.check_access, lambda: st.put('k', io.BytesIO(b'x'), size=1), lambda: st.open('k'),
                 lambda: st.delete('k'), lambda: list(st.list())):
        with pytest.raises(errors.AuthError) as info:
            call()
        message = str(info.value) + repr(info.value.to_dict())
        assert 'rejected the API key' in message
        assert wrong not in message and good not in message


def test_rustfs_immutable_and_retention(rustfs):
    rustfs.put('locked/doc', io.BytesIO(b'v1'), size=2, immutable=True, retain_seconds=2)
    with pytest.raises(errors.RetentionError) as info:
        rustfs.put('locked/doc', io.BytesIO(b'v2'), size=2)
    assert 'locked/doc' in str(info.value)
    with pytest.raises(errors.RetentionError):
        rustfs.put('locked/doc', io.BytesIO(b'v2-unknown-size'), size=None)
    with pytest.raises(errors.RetentionError):
        rustfs.delete('locked/doc')
    assert rustfs.open('locked/doc').read() == b'v1'
    time.sleep(2.2)
    rustfs.put('locked/doc', io.BytesIO(b'v3'), size=2)
    assert rustfs.open('locked/doc').read() == b'v3'
    # Immutable without a retention period: forever.
    rustfs.put('forever', io.BytesIO(b'f'), size=1, immutable=True)
    with pytest.raises(errors.RetentionError):
        rustfs.delete('forever')
    assert rustfs.supports_retention is True


def test_rustfs_missing_bucket(rustfs_spec):
    bucket = 'missing-%s' % uuid.uuid4().hex[:12]
    st = _store(_with(rustfs_spec, bucket=bucket))
    with pytest.raises(errors.BucketMissingError) as info:
        st.check_access()
    assert bucket in str(info.value) and 'create_bucket: true' in str(info.value)
    for call in (lambda: st.put('k', io.BytesIO(b'x'), size=1), lambda: st.open('k'), lambda: list(st.list()),
                 lambda: st.delete('k')):
        with pytest.raises(errors.BucketMissingError):
            call()
    st.check_access(create_bucket=True)
    st.check_access()
    st.put('k', io.BytesIO(b'x'), size=1)
    assert st.exists('k')


def test_rustfs_connection_refused(rustfs_spec):
    st = _store(_with(rustfs_spec, endpoint='http://127.0.0.1:%d' % free_port()))
    for call in (st.check_access, lambda: st.put('k', io.BytesIO(b'x'), size=1), lambda: st.open('k'),
                 lambda: list(st.list())):
        with pytest.raises(errors.ConnectError) as info:
            call()
        assert 'connection refused' in str(info.value)


def test_rustfs_source_error_not_mapped(rustfs):
    class Failing(object):
        def read(self, n=-1):
            raise ValueError('source broke')

    with pytest.raises(ValueError):
        rustfs.put('src', Failing(), size=10)
    with pytest.raises(ValueError):
        rustfs.put('src', Failing(), size=None)
    assert rustfs.stat('src') is None


def test_rustfs_session_per_thread(rustfs):
    sessions = []

    def work(i):
        rustfs.put('t/%d' % i, io.BytesIO(b'x' * i), size=i)
        sessions.append(rustfs._session())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(id(s) for s in sessions)) == 8
    assert sorted(i.size for i in rustfs.list('t/')) == list(range(1, 9))


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_rustfs_tls_ca_bundle(rustfs_https_spec):
    st = _store(rustfs_https_spec)
    st.check_access()
    st.put('tls/k', io.BytesIO(b'over tls'), size=8)
    assert st.open('tls/k').read() == b'over tls'
    st.close()
    untrusted = _store(_with(rustfs_https_spec, ca_bundle=None))
    with pytest.raises(errors.ConnectError) as info:
        untrusted.check_access()
    assert info.value.cause == 'TLS certificate verification failed'
    unverified = _store(_with(rustfs_https_spec, ca_bundle=None, validate_certs=False))
    unverified.check_access()
