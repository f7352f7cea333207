# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""anchore.py against a real PostgreSQL holding Anchore's tables.

Rows are seeded the way anchore-engine's ObjectStorageManager.put writes
them (zlib level 3 when enabled and larger than min_size_kbytes, MD5 and
size of the stored bytes, documentName = archiveId + '.json'), with plain
SQL and plain file writes so the code under test is not its own oracle.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import io
import os
import threading
import uuid
import zlib

import pytest

psycopg2 = pytest.importorskip('psycopg2')
from psycopg2 import extensions as pg_ext  # noqa: E402

from ansible_collections.storeshift.objstore.plugins.module_utils import anchore, errors, specs  # noqa: E402
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store  # noqa: E402
from helpers import sql  # noqa: E402


# -- database fixture -------------------------------------------------------------------

@pytest.fixture
def dsn(anchore_db):
    """DSN of a fresh database holding Anchore's tables (conftest: tests/stack/anchore_schema.sql loaded)."""
    return anchore_db


def _spec(driver, compression=False, min_kb=100, **config):
    return specs.StoreSpec.from_dict({'storage_driver': {'name': driver, 'config': config},
                                      'compression': {'enabled': compression, 'min_size_kbytes': min_kb}})


# -- seeding the way anchore-engine writes ---------------------------------------------

def anchore_put(dsn, driver, user, bucket, archive_id, data, compress_enabled=False, min_kb=100, data_dir=None):
    """ObjectStorageManager.put + the driver's put, re-implemented from the Anchore sources."""
    supports = driver != 'db'
    if compress_enabled and supports and len(data) > min_kb * 1024:
        payload, is_compressed = zlib.compress(data, 3), True
    else:
        payload, is_compressed = data, False
    digest = hashlib.md5(payload).hexdigest()
    if driver == 'db2':
        url = 'db2://%s/%s/%s' % (user, bucket, archive_id)
        sql(dsn, 'INSERT INTO object_storage ("userId", bucket, key, content) VALUES (%s, %s, %s, %s)',
            (user, bucket, archive_id, psycopg2.Binary(payload)), fetch=False)
    elif driver == 'localfs':
        filehash = hashlib.md5(archive_id.encode('utf8')).hexdigest()
        directory = os.path.join(data_dir, hashlib.md5(user.encode('utf8')).hexdigest(), bucket, filehash[0:2])
        if not os.path.exists(directory):
            os.makedirs(directory)
        path = os.path.join(directory, filehash + '.json')
        with open(path, 'wb') as handle:
            handle.write(payload)
        url = 'file://' + path
    elif driver == 's3':  # metadata only: the object itself is not needed by these tests
        url = 's3://anchorearchive/%s/%s/%s' % (user, bucket, archive_id)
    else:
        raise AssertionError(driver)
    sql(dsn, 'INSERT INTO archive_metadata ("userId", bucket, "archiveId", "documentName", content_url, '
             'is_compressed, digest, size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)',
        (user, bucket, archive_id, archive_id + '.json', url, is_compressed, digest, len(payload)), fetch=False)
    return url, is_compressed, digest, len(payload)


def _doc_json(n, size):
    body = ('{"document": {"n": %d, "packages": [' % n) + ','.join('"pkg-%d-%d"' % (n, i) for i in range(size // 12))
    return (body + ']}}').encode('utf-8')


def _read(stream):
    parts = []
    try:
        while True:
            data = stream.read(64 * 1024)
            if not data:
                return b''.join(parts)
            parts.append(data)
    finally:
        stream.close()


@pytest.fixture
def catalog(dsn):
    cat = anchore.AnchoreCatalog(dsn)
    cat.check_access()
    yield cat
    cat.close()


# -- selection ---------------------------------------------------------------------------

def test_iter_documents_pagination_and_filters(dsn, catalog, tmp_path):
    expected = set()
    for n in range(25):
        bucket = ('manifest_data', 'analysis_data', 'policy_bundles')[n % 3]
        anchore_put(dsn, 'db2', 'admin' if n % 2 else 'acct_2', bucket, 'sha256:%04d' % n, _doc_json(n, 200))
        expected.add(('admin' if n % 2 else 'acct_2', bucket, 'sha256:%04d' % n))
    for n in range(4):
        anchore_put(dsn, 's3', 'admin', 'analysis_archive', 'sha256:s3-%d' % n, b'x')
    for n in range(3):
        anchore_put(dsn, 'localfs', 'admin', 'manifest_data', 'fs-%d' % n, b'y', data_dir=str(tmp_path))
    sql(dsn, 'INSERT INTO archive_metadata ("userId", bucket, "archiveId", "documentName", content_url) '
             "VALUES ('admin', 'b', 'nourl', 'nourl.json', NULL)", fetch=False)
    db2 = _spec('db2')
    assert catalog.count_documents(db2) == 25
    docs = list(catalog.iter_documents(db2, batch=4))
    assert len(docs) == 25
    assert set((d.user_id, d.bucket, d.archive_id) for d in docs) == expected
    order = [(d.bucket, d.archive_id, d.user_id, d.document_name) for d in docs]
    assert order == sorted(order)  # primary-key order, stable across pages
    for doc in docs:
        assert doc.content_url == 'db2://%s' % doc.ident and doc.document_name == doc.archive_id + '.json'
        assert doc.is_compressed is False and len(doc.digest) == 32 and doc.size > 0
    picked = list(catalog.iter_documents(db2, buckets=['policy_bundles', 'analysis_data'], batch=3))
    assert len(picked) == catalog.count_documents(db2, buckets=['policy_bundles', 'analysis_data']) == 16
    assert set(d.bucket for d in picked) == set(['policy_bundles', 'analysis_data'])
    assert catalog.count_documents(_spec('db')) == 0
    s3 = _spec('s3', bucket='anchorearchive', access_key='a', secret_key='b')
    assert [d.archive_id for d in catalog.iter_documents(s3)] == ['sha256:s3-%d' % n for n in range(4)]
    assert catalog.count_documents(_spec('s3', bucket='anchorearchive', prefix='other/', access_key='a',
                                         secret_key='b')) == 0
    assert catalog.count_documents(_spec('s3', bucket='anchorearchiv', access_key='a', secret_key='b')) == 0
    fs = _spec('localfs', archive_data_dir=str(tmp_path))
    assert catalog.count_documents(fs) == 3
    assert all(anchore.url_matches_store(d.content_url, fs) for d in catalog.iter_documents(fs))
    assert catalog.count_documents(_spec('localfs', archive_data_dir=str(tmp_path) + '/')) == 3
    assert catalog.count_documents(_spec('localfs', archive_data_dir=str(tmp_path)[:-1])) == 0


def test_iter_documents_survives_repoints_during_iteration(dsn, catalog):
    for n in range(30):
        anchore_put(dsn, 'db2', 'admin', 'manifest_data', 'sha256:%03d' % n, b'{"n": %d}' % n)
    seen = []
    for doc in catalog.iter_documents(_spec('db2'), batch=7):
        seen.append(doc.archive_id)
        assert catalog.repoint(doc, 's3://new/%s' % doc.ident, False, doc.digest, doc.size)
    assert seen == ['sha256:%03d' % n for n in range(30)]
    assert catalog.count_documents(_spec('db2')) == 0


# -- reading ------------------------------------------------------------------------------

def test_open_for_anchore_db2_compressed_and_plain(dsn, catalog):
    big = _doc_json(1, 300 * 1024)
    small = _doc_json(2, 100)
    anchore_put(dsn, 'db2', 'admin', 'analysis_data', 'big', big, compress_enabled=True)
    anchore_put(dsn, 'db2', 'admin', 'analysis_data', 'small', small, compress_enabled=True)
    store = open_store(_spec('db2', compression=True), db_connect=dsn)
    docs = dict((d.archive_id, d) for d in catalog.iter_documents(store.spec))
    assert docs['big'].is_compressed is True and docs['big'].size < len(big) // 3
    assert docs['small'].is_compressed is False
    assert _read(anchore.open_for_anchore(store, docs['big'])) == big
    assert _read(anchore.open_for_anchore(store, docs['small'])) == small
    assert catalog.get_document('admin', 'analysis_data', 'big') == docs['big']
    assert catalog.get_document('admin', 'analysis_data', 'nope') is None
    store.close()


def test_open_for_anchore_localfs(dsn, catalog, tmp_path):
    data = _doc_json(3, 150 * 1024)
    anchore_put(dsn, 'localfs', 'admin', 'image_content_data', 'sha256:abc', data, compress_enabled=True,
                data_dir=str(tmp_path))
    store = open_store(_spec('localfs', compression=True, archive_data_dir=str(tmp_path)))
    (doc,) = list(catalog.iter_documents(store.spec))
    assert doc.is_compressed
    assert _read(anchore.open_for_anchore(store, doc)) == data
    key, url = anchore.anchore_location(store.spec, 'admin', 'image_content_data', 'sha256:abc')
    assert url == doc.content_url and store.exists(key)


def test_digest_mismatch_is_integrity_error(dsn, catalog):
    anchore_put(dsn, 'db2', 'admin', 'policy_evaluations', 'e1', b'{"final_action": "go"}')
    anchore_put(dsn, 'db2', 'admin', 'policy_evaluations', 'e2', _doc_json(9, 200 * 1024), compress_enabled=True)
    sql(dsn, "UPDATE object_storage SET content = convert_to('{\"final_action\": \"stop\"}', 'UTF8') "
             "WHERE key = 'e1'", fetch=False)
    sql(dsn, "UPDATE object_storage SET content = overlay(content PLACING '\\x00000000'::bytea FROM 200) "
             "WHERE key = 'e2'", fetch=False)
    store = open_store(_spec('db2'), db_connect=dsn)
    for name in ('e1', 'e2'):
        doc = catalog.get_document('admin', 'policy_evaluations', name)
        with pytest.raises(errors.IntegrityError) as info:
            _read(anchore.open_for_anchore(store, doc))
        assert 'digest mismatch for admin/policy_evaluations/%s' % name in str(info.value)
    store.close()


# -- writing and repointing ---------------------------------------------------------------

def _migrate(catalog, source, dest, doc):
    """What the engine does for one document (anchore layout)."""
    dest_key, dest_url = anchore.anchore_location(dest.spec, doc.user_id, doc.bucket, doc.archive_id)
    logical = anchore.open_for_anchore(source, doc)
    stream, compressed = anchore.encode_for_anchore(dest.spec, logical, None)
    dest.put(dest_key, stream)
    return catalog.repoint(doc, dest_url, compressed, stream.md5_hexdigest(), stream.size)


@pytest.mark.parametrize('dest_driver', ['localfs', 'db'])
def test_migrated_rows_are_what_anchore_would_write(dsn, catalog, tmp_path, dest_driver):
    big = _doc_json(5, 400 * 1024)
    binary = os.urandom(2000)
    anchore_put(dsn, 'db2', 'admin', 'analysis_data', 'big', big, compress_enabled=True)
    anchore_put(dsn, 'db2', 'admin', 'analysis_archive', 'bin.tar.gz', binary, compress_enabled=True)
    source = open_store(_spec('db2', compression=True), db_connect=dsn)
    if dest_driver == 'localfs':
        dest = open_store(_spec('localfs', compression=True, min_kb=100, archive_data_dir=str(tmp_path)))
    else:
        dest = open_store(_spec(dest_driver, compression=True), db_connect=dsn)
    dest.check_access(create_bucket=True)
    docs = list(catalog.iter_documents(source.spec))
    assert len(docs) == 2
    for doc in docs:
        assert _migrate(catalog, source, dest, doc)
        assert not catalog.repoint(doc, 'db2://stale', False, None, 0)  # guard: the old URL no longer matches
    rows = sql(dsn, 'SELECT "archiveId", content_url, is_compressed, digest, size FROM archive_metadata '
                    'ORDER BY "archiveId"')
    for archive_id, url, is_compressed, digest, size in rows:
        logical = big if archive_id == 'big' else binary
        if dest_driver == 'localfs':
            path = url[len('file://'):]
            assert path.startswith(str(tmp_path) + '/')
            with open(path, 'rb') as handle:
                stored = handle.read()
        else:
            assert url == 'db://admin/%s/%s' % ('analysis_data' if archive_id == 'big' else 'analysis_archive',
                                                archive_id)
            (jsondata, b64), = sql(dsn, 'SELECT jsondata, b64_encoded FROM archive_document '
                                        'WHERE "archiveId" = %s', (archive_id,))
            stored = base64.decodebytes(jsondata.encode()) if b64 else jsondata.encode('utf-8')
            assert b64 is (archive_id != 'big')
        # Anchore's reader: MD5 of stored bytes, then zlib if flagged
        assert hashlib.md5(stored).hexdigest() == digest and len(stored) == size
        assert (zlib.decompress(stored) if is_compressed else stored) == logical
        # Anchore's writer would have compressed exactly when: enabled, driver supports it, > 100 KiB
        assert is_compressed is (dest_driver != 'db' and len(logical) > 100 * 1024)
    source.close()
    dest.close()


def test_repoint_guard_and_concurrency(dsn, catalog):
    for n in range(40):
        anchore_put(dsn, 'db2', 'admin', 'manifest_data', 'm%02d' % n, b'{}')
    docs = list(catalog.iter_documents(_spec('db2')))
    results = []

    def repoint(doc):
        results.append(catalog.repoint(doc, 'file:///new/%s' % doc.archive_id, True, 'f' * 32, 7))

    threads = [threading.Thread(target=repoint, args=(d,)) for d in docs + docs]  # every row twice
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 40 + [True] * 40
    row = sql(dsn, 'SELECT content_url, is_compressed, digest, size, last_updated > 0 FROM archive_metadata '
                   'WHERE "archiveId" = %s', ('m07',))[0]
    assert row == ('file:///new/m07', True, 'f' * 32, 7, True)
    sql(dsn, "DELETE FROM archive_metadata WHERE \"archiveId\" = 'm00'", fetch=False)
    assert catalog.repoint(docs[0], 'x://y', False, None, None) is False


def test_missing_archive_metadata_table(dsn):
    sql(dsn, 'CREATE SCHEMA IF NOT EXISTS empty_schema', fetch=False)
    cat = anchore.AnchoreCatalog(pg_ext.make_dsn(dsn, options='-c search_path=empty_schema'))
    with pytest.raises(errors.BucketMissingError) as info:
        cat.check_access()
    assert 'table archive_metadata does not exist in database %s' % pg_ext.parse_dsn(dsn)['dbname'] \
        in str(info.value)
    with pytest.raises(errors.BucketMissingError) as info:
        list(cat.iter_documents(_spec('db2')))
    assert 'archive_metadata' in str(info.value)
    cat.close()


def test_wrong_password_catalog(dsn):
    params = pg_ext.parse_dsn(dsn)
    if not params.get('password'):
        pytest.skip('the test database is reached without a password')
    bad = 'Nope-%s' % uuid.uuid4().hex
    cat = anchore.AnchoreCatalog(pg_ext.make_dsn(dsn, password=bad))
    try:
        cat.check_access()
    except errors.AuthError as exc:
        assert bad not in str(exc) and 'PostgreSQL rejected the password' in str(exc)
    else:
        pytest.skip('the server accepted a wrong password (trust authentication)')
    finally:
        cat.close()


def test_db_source_with_legacy_rows(dsn, catalog):
    """Rows written by Anchore's legacy db driver (never compressed) read back through the db store."""
    doc = b'{"document": {"policy": "default"}}'
    sql(dsn, 'INSERT INTO archive_document (bucket, "archiveId", "userId", "documentName", jsondata, b64_encoded) '
             "VALUES ('policy_bundles', 'p1', 'admin', 'p1.json', %s, false)", (doc.decode(),), fetch=False)
    sql(dsn, 'INSERT INTO archive_metadata ("userId", bucket, "archiveId", "documentName", content_url, '
             "is_compressed, digest, size) VALUES ('admin', 'policy_bundles', 'p1', 'p1.json', "
             "'db://admin/policy_bundles/p1', false, %s, %s)", (hashlib.md5(doc).hexdigest(), len(doc)),
        fetch=False)
    store = open_store(_spec('db'), db_connect=dsn)
    (row,) = list(catalog.iter_documents(store.spec))
    assert _read(anchore.open_for_anchore(store, row)) == doc
    stream, compressed = anchore.encode_for_anchore(_spec('db', compression=True, min_kb=0), io.BytesIO(doc), len(doc))
    assert compressed is False and stream.read() == doc
    store.close()
