# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""anchore.py without a database: locations, URL matching, Anchore's
compression rule, digest checks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import io
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.storeshift.objstore.plugins.module_utils import anchore, errors, specs
from ansible_collections.storeshift.objstore.plugins.module_utils.store import ObjectInfo, ObjectStore


def spec(driver, compression=False, min_kb=100, **config):
    return specs.StoreSpec.from_dict({'storage_driver': {'name': driver, 'config': config},
                                      'compression': {'enabled': compression, 'min_size_kbytes': min_kb}})


S3 = dict(bucket='anchorearchive', access_key='AK', secret_key='SK', url='http://minio:9000')
RUSTFS = dict(endpoint='http://rustfs:8080', bucket='scanner-artifacts')


def md5(text):
    return hashlib.md5(text.encode('utf-8')).hexdigest()


# -- locations ------------------------------------------------------------------

def test_locations_per_driver():
    u, b, a = 'admin', 'manifest_data', 'sha256:0873c9'
    assert anchore.anchore_location(spec('db'), u, b, a) == (
        'admin/manifest_data/sha256:0873c9', 'db://admin/manifest_data/sha256:0873c9')
    assert anchore.anchore_location(spec('db2'), u, b, a) == (
        'admin/manifest_data/sha256:0873c9', 'db2://admin/manifest_data/sha256:0873c9')
    assert anchore.anchore_location(spec('s3', **S3), u, b, a) == (
        'admin/manifest_data/sha256:0873c9', 's3://anchorearchive/admin/manifest_data/sha256:0873c9')
    # S3ObjectStorageDriver._key_format = "{prefix}{userid}/{bucket}/{key}": no separator added
    assert anchore.anchore_location(spec('s3', prefix='internaltest', **S3), u, b, a) == (
        'admin/manifest_data/sha256:0873c9', 's3://anchorearchive/internaltestadmin/manifest_data/sha256:0873c9')
    assert anchore.anchore_location(spec('rustfs', prefix='p/', **RUSTFS), u, b, a) == (
        'admin/manifest_data/sha256:0873c9', 'rustfs://scanner-artifacts/p/admin/manifest_data/sha256:0873c9')
    key, url = anchore.anchore_location(spec('localfs', archive_data_dir='/var/lib/anchore/archive'), u, b, a)
    h = md5(a)
    # FilesystemObjectStorageDriver._get_archive_filepath
    assert key == '%s/manifest_data/%s/%s.json' % (md5(u), h[:2], h)
    assert url == 'file:///var/lib/anchore/archive/' + key
    key2, url2 = anchore.anchore_location(spec('localfs', archive_data_dir='/var/lib/anchore/archive/'), u, b, a)
    assert (key2, url2) == (key, url)


@pytest.mark.parametrize('driver,config', [
    ('db', {}), ('db2', {}), ('s3', S3), ('s3', dict(S3, prefix='pre/')), ('s3', dict(S3, prefix='x')),
    ('rustfs', RUSTFS), ('localfs', {'archive_data_dir': '/data/anchore'}),
])
def test_url_round_trip(driver, config):
    sp = spec(driver, **config)
    key, url = anchore.anchore_location(sp, 'admin', 'analysis_data', 'sha256:ff')
    assert anchore.url_matches_store(url, sp)
    assert anchore.key_from_url(sp, url) == key
    assert url.startswith(anchore.url_prefix(sp))


def test_url_matching_is_precise():
    db, db2 = spec('db'), spec('db2')
    assert anchore.url_matches_store('db://a/b/c', db) and not anchore.url_matches_store('db://a/b/c', db2)
    assert anchore.url_matches_store('db2://a/b/c', db2) and not anchore.url_matches_store('db2://a/b/c', db)
    s3 = spec('s3', **S3)
    assert anchore.url_matches_store('s3://anchorearchive/a/b/c', s3)
    assert not anchore.url_matches_store('s3://anchorearchive2/a/b/c', s3)
    assert not anchore.url_matches_store('s3://other/a/b/c', s3)
    s3p = spec('s3', prefix='pre/', **S3)
    assert anchore.url_matches_store('s3://anchorearchive/pre/a/b/c', s3p)
    assert not anchore.url_matches_store('s3://anchorearchive/a/b/c', s3p)
    fs = spec('localfs', archive_data_dir='/data/anchore')
    assert anchore.url_matches_store('file:///data/anchore/x/y', fs)
    assert anchore.url_matches_store('file:///data/anchore//x/y', fs)  # Anchore joins a config ending in '/'
    assert not anchore.url_matches_store('file:///data/anchore2/x/y', fs)
    assert not anchore.url_matches_store('file:///data/anchore', fs)
    assert not anchore.url_matches_store('file:///data/anchore/../etc/passwd', fs)
    assert not anchore.url_matches_store(None, fs)
    assert not anchore.url_matches_store('rustfs://scanner-artifacts/a/b/c', s3)


# -- compression rule --------------------------------------------------------------

@pytest.mark.parametrize('driver,enabled,size,expected', [
    ('db2', True, 100 * 1024 + 1, True),
    ('db2', True, 100 * 1024, False),      # strictly greater than min_size_kbytes * 1024
    ('db2', False, 10 * 1024 * 1024, False),
    ('db', True, 10 * 1024 * 1024, False),  # LegacyDbDriver.__supports_compressed_data__ = False
    ('localfs', True, 200 * 1024, True),
    ('rustfs', True, 200 * 1024, True),
])
def test_will_compress(driver, enabled, size, expected):
    config = {'db': {}, 'db2': {}, 'localfs': {'archive_data_dir': '/x'}, 'rustfs': RUSTFS}[driver]
    sp = spec(driver, compression=enabled, **config)
    assert anchore.will_compress(sp, size) is expected
    data = b'a' * size
    for known in (size, None):
        stream, compressed = anchore.encode_for_anchore(sp, io.BytesIO(data), known)
        stored = stream.read()
        assert compressed is expected
        assert stream.md5_hexdigest() == hashlib.md5(stored).hexdigest() and stream.size == len(stored)
        if expected:
            assert stored == zlib.compress(data, 3)  # byte-identical to ObjectStorageManager._do_compress
        else:
            assert stored == data


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=2))
def test_encode_then_open_round_trip(data, min_kb):
    sp = spec('db2', compression=True, min_kb=min_kb)
    stream, compressed = anchore.encode_for_anchore(sp, io.BytesIO(data), None)
    stored = stream.read()
    assert compressed == (len(data) > min_kb * 1024)
    mem = MemStore(sp)
    key, url = anchore.anchore_location(sp, 'u', 'b', 'a')
    mem.objects[key] = stored
    doc = anchore.AnchoreDocument('u', 'b', 'a', None, url, compressed, stream.md5_hexdigest(), stream.size)
    assert doc.document_name == 'a.json'
    assert anchore.open_for_anchore(mem, doc).read() == data


# -- reading with digest checks ------------------------------------------------------

class MemStore(ObjectStore):
    driver = 'db2'

    def __init__(self, spec_):
        super(MemStore, self).__init__(spec_)
        self.objects = {}

    def open(self, key):
        return io.BytesIO(self.objects[key])

    def stat(self, key):
        return ObjectInfo(key, len(self.objects[key])) if key in self.objects else None


def _doc(sp, stored, compressed, digest=None, size=None):
    key, url = anchore.anchore_location(sp, 'admin', 'analysis_data', 'sha256:1')
    return key, anchore.AnchoreDocument('admin', 'analysis_data', 'sha256:1', 'sha256:1.json', url, compressed,
                                        digest if digest is not None else hashlib.md5(stored).hexdigest(),
                                        size if size is not None else len(stored))


def _drain(stream, chunk=1000):
    out = []
    while True:
        data = stream.read(chunk)
        if not data:
            return b''.join(out)
        out.append(data)


def test_open_checks_digest_at_end_of_stream():
    sp = spec('db2')
    mem = MemStore(sp)
    data = os.urandom(5000)
    key, doc = _doc(sp, data, False)
    mem.objects[key] = data
    assert _drain(anchore.open_for_anchore(mem, doc)) == data
    mem.objects[key] = data[:-1] + b'!'
    stream = anchore.open_for_anchore(mem, doc)
    with pytest.raises(errors.IntegrityError) as info:
        _drain(stream)
    assert 'digest mismatch for admin/analysis_data/sha256:1' in str(info.value)
    with pytest.raises(errors.IntegrityError):  # stays failed
        stream.read(10)
    with pytest.raises(errors.IntegrityError):
        anchore.open_for_anchore(mem, doc).read()  # read() of everything checks too


def test_open_decompresses_and_prefers_digest_errors():
    sp = spec('db2', compression=True)
    mem = MemStore(sp)
    data = b'{"document": "%s"}' % (b'x' * 300000)
    stored = zlib.compress(data, 3)
    key, doc = _doc(sp, stored, True)
    mem.objects[key] = stored
    assert _drain(anchore.open_for_anchore(mem, doc)) == data
    # valid zlib of other data: the digest catches it
    mem.objects[key] = zlib.compress(b'other', 3)
    with pytest.raises(errors.IntegrityError) as info:
        _drain(anchore.open_for_anchore(mem, doc))
    assert 'digest mismatch' in str(info.value)
    # corrupt zlib: reported as the digest mismatch it is, not as a zlib error
    mem.objects[key] = stored[:100] + b'\x00' * 50 + stored[150:]
    with pytest.raises(errors.IntegrityError) as info:
        _drain(anchore.open_for_anchore(mem, doc))
    assert 'digest mismatch' in str(info.value)
    # no digest recorded (old rows): corrupt zlib still fails, as a zlib error
    key, nodigest = _doc(sp, stored, True, digest='', size=None)
    nodigest.size = None
    with pytest.raises(errors.IntegrityError) as info:
        _drain(anchore.open_for_anchore(mem, nodigest))
    assert 'zlib' in str(info.value)


def test_size_mismatch_without_digest():
    sp = spec('db2')
    mem = MemStore(sp)
    key, doc = _doc(sp, b'abc', False, digest='', size=5)
    mem.objects[key] = b'abc'
    with pytest.raises(errors.IntegrityError) as info:
        _drain(anchore.open_for_anchore(mem, doc))
    assert 'size mismatch' in str(info.value)


def test_open_for_anchore_refuses_a_url_of_another_store():
    sp = spec('db2')
    doc = anchore.AnchoreDocument('a', 'b', 'c', None, 's3://bucket/a/b/c', False, None, None)
    with pytest.raises(errors.ConfigError) as info:
        anchore.open_for_anchore(MemStore(sp), doc)
    assert 's3://bucket/a/b/c' in str(info.value)
