# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The driver contract: one suite, run against every driver on the real test stack.

Fixtures (tests/integration/conftest.py): ``<driver>_spec`` gives an
Anchore-shape spec dict with a fresh bucket / directory / table namespace;
``anchore_db`` the PostgreSQL database the db drivers use. Keys all have the
``userId/bucket/archiveId`` shape so that the db drivers accept them too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import hashlib
import inspect
import io
import os
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils import codec, errors, specs
from ansible_collections.storeshift.objstore.plugins.module_utils import store as store_mod

MU = 'ansible_collections.storeshift.objstore.plugins.module_utils.'
DRIVERS = ['s3', 'rustfs', 'localfs', 'db2', 'db']
MODULES = {'s3': 'store_s3', 'rustfs': 'store_rustfs', 'localfs': 'store_localfs',
           'db2': 'store_db', 'db': 'store_db'}
MIB = 1024 * 1024


def _dsn(value):
    """The libpq DSN out of whatever the ``anchore_db`` fixture gives."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for name in ('dsn', 'db_connect', 'url'):
            if value.get(name):
                return value[name]
    for name in ('dsn', 'db_connect', 'url'):
        if getattr(value, name, None):
            return getattr(value, name)
    raise AssertionError('cannot find a DSN in the anchore_db fixture: %r' % (value,))


def _open(request, driver, compression=None):
    pytest.importorskip(MU + MODULES[driver])
    data = copy.deepcopy(request.getfixturevalue('%s_spec' % driver))
    if compression is not None:
        data['compression'] = compression
    db_connect = _dsn(request.getfixturevalue('anchore_db')) if driver in ('db', 'db2') else None
    store = store_mod.open_store(specs.StoreSpec.from_dict(data), db_connect=db_connect)
    store.check_access(create_bucket=True)
    return store


@pytest.fixture(params=DRIVERS)
def driver(request):
    return request.param


@pytest.fixture
def store(request, driver):
    st = _open(request, driver)
    yield st
    st.close()


@pytest.fixture
def base():
    """A fresh ``userId/bucket/`` key prefix."""
    return 'u%s/contract/' % uuid.uuid4().hex[:10]


def _put_bytes(store, key, data):
    store.put(key, io.BytesIO(data), size=len(data))


def _read_all(store, key):
    stream = store.open(key)
    try:
        parts = []
        while True:
            chunk = stream.read(256 * 1024)
            if not chunk:
                return b''.join(parts)
            parts.append(chunk)
    finally:
        stream.close()


# -- round trips --------------------------------------------------------------

@pytest.mark.parametrize('size', [0, 1, MIB], ids=['0B', '1B', '1MiB'])
def test_round_trip_sizes(store, base, size):
    data = os.urandom(size)
    key = base + 'size-%d' % size
    writer = codec.HashingReader(io.BytesIO(data))
    store.put(key, writer, size=size)
    assert writer.size == size
    info = store.stat(key)
    assert info is not None and info.key == key and info.size == size
    reader = codec.HashingReader(store.open(key)).drain()
    reader.close()
    assert reader.size == size
    assert reader.hexdigest() == writer.hexdigest() == hashlib.sha256(data).hexdigest()


def test_round_trip_unknown_size(store, base):
    data = os.urandom(300 * 1024)
    store.put(base + 'unknown', io.BytesIO(data), size=None)
    assert _read_all(store, base + 'unknown') == data
    assert store.stat(base + 'unknown').size == len(data)


@pytest.mark.parametrize('name', [
    'with spaces/and more spaces.json',
    u'\u00e9/\u00fc \u6f22\u5b57',
    '/'.join('level%02d' % i for i in range(20)) + '/leaf',
], ids=['spaces', 'unicode', 'deep20'])
def test_key_shapes(store, base, name):
    key = base + name
    data = (u'content of %s' % key).encode('utf-8')
    _put_bytes(store, key, data)
    assert store.exists(key)
    assert _read_all(store, key) == data
    listed = [info.key for info in store.list(base)]
    assert listed == [key]
    store.delete(key)
    assert not store.exists(key)


def test_overwrite_replaces(store, base):
    _put_bytes(store, base + 'k', b'first version')
    _put_bytes(store, base + 'k', b'second')
    assert _read_all(store, base + 'k') == b'second'
    assert store.stat(base + 'k').size == 6


def test_stat_exists_delete(store, base):
    key = base + 'doc.json'
    assert store.stat(key) is None
    assert not store.exists(key)
    _put_bytes(store, key, b'{"a": 1}')
    info = store.stat(key)
    assert isinstance(info, store_mod.ObjectInfo)
    assert info.size == 8
    assert store.exists(key)
    store.delete(key)
    assert store.stat(key) is None
    store.delete(key)  # deleting a missing key is not an error
    store.delete(base + 'never-existed')


def test_open_missing_key(store, base):
    with pytest.raises(errors.ObjectMissingError) as info:
        store.open(base + 'missing/object')
    assert info.value.step


def test_list_with_prefix(store, base):
    keys = [base + 'a/1', base + 'a/2', base + 'a/sub/3', base + 'ab/4', base + 'b/5']
    for key in keys:
        _put_bytes(store, key, key.encode())
    listing = store.list(base + 'a/')
    assert iter(listing) is listing
    found = sorted(info.key for info in listing)
    assert found == [base + 'a/1', base + 'a/2', base + 'a/sub/3']
    assert sorted(info.key for info in store.list(base + 'a')) == keys[:4]
    everything = dict((info.key, info.size) for info in store.list(base))
    assert everything == dict((key, len(key.encode())) for key in keys)
    assert list(store.list(base + 'nothing-here/')) == []


def test_list_10000_keys_pages(request, driver, base):
    """10,000 keys come back page by page: a lazy iterator whose first item arrives early."""
    store = _open(request, driver)
    try:
        count = 10000
        keys = ['%sbulk/%05d' % (base, i) for i in range(count)]
        with ThreadPoolExecutor(max_workers=32) as pool:
            for dummy in pool.map(lambda k: store.put(k, io.BytesIO(b'x'), size=1), keys):
                pass
        started = time.time()
        listing = store.list(base + 'bulk/')
        assert inspect.isgenerator(listing) or iter(listing) is listing
        first = next(listing)
        first_after = time.time() - started
        seen = set([first.key])
        total = 1
        for info in listing:
            total += 1
            seen.add(info.key)
        elapsed = time.time() - started
        assert total == count and seen == set(keys)
        # A driver that fetched everything before yielding would give the first item only at the end.
        assert first_after < elapsed / 2, (first_after, elapsed)
        if driver == 'rustfs':
            # The RustFS API has no bulk delete: delete in parallel rather than in the fixture's serial teardown.
            with ThreadPoolExecutor(max_workers=32) as pool:
                for dummy in pool.map(store.delete, keys):
                    pass
    finally:
        store.close()


# -- compression --------------------------------------------------------------

def _compressible(size):
    line = b'{"digest": "sha256:0123456789abcdef", "layer": "usr/lib/libfoo.so", "n": %d}\n'
    out = []
    total = 0
    i = 0
    while total < size:
        piece = line % i
        out.append(piece)
        total += len(piece)
        i += 1
    return b''.join(out)[:size]


@pytest.mark.parametrize('enabled', [True, False], ids=['zstd', 'plain'])
def test_compression(request, driver, base, enabled):
    store = _open(request, driver, compression={'enabled': enabled, 'min_size_kbytes': 1})
    try:
        data = _compressible(512 * 1024)
        logical = codec.HashingReader(io.BytesIO(data))
        stream, stored_size, used = codec.encode_stream(logical, len(data), store.spec.compression_enabled,
                                                        store.spec.min_size_kbytes)
        store.put(base + 'c', stream, size=stored_size)
        info = store.stat(base + 'c')
        if enabled:
            assert used == 'zstd'
            assert info.size < len(data) // 4
            head = store.open(base + 'c')
            assert codec.looks_zstd(head.read(4))
            head.close()
        else:
            assert used == 'none'
            assert info.size == len(data)
        back = codec.HashingReader(codec.decode_stream(store.open(base + 'c'), store.spec.compression_enabled))
        back.drain()
        back.close()
        assert back.size == len(data)
        assert back.hexdigest() == logical.hexdigest() == hashlib.sha256(data).hexdigest()
        # A small object stays plain even with compression on.
        small = b'tiny'
        stream, stored_size, used = codec.encode_stream(io.BytesIO(small), len(small), store.spec.compression_enabled,
                                                        store.spec.min_size_kbytes)
        assert used == 'none'
        store.put(base + 'small', stream, size=stored_size)
        assert _read_all(store, base + 'small') == small
    finally:
        store.close()


def test_reads_anchore_zlib(store, base):
    data = _compressible(200 * 1024)
    blob = zlib.compress(data, 3)
    _put_bytes(store, base + 'anchore.zlib', blob)
    assert store.stat(base + 'anchore.zlib').size == len(blob)
    decoded = codec.decode_stream(store.open(base + 'anchore.zlib'), compression_enabled=True)
    try:
        assert decoded.read() == data
    finally:
        decoded.close()
