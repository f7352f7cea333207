# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The db and db2 drivers against a real PostgreSQL (no mocks).

Database: the ``anchore_db`` fixture of tests/integration/conftest.py (a
fresh database on the stack's server with tests/stack/anchore_schema.sql).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import inspect
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

psycopg2 = pytest.importorskip('psycopg2')
from psycopg2 import extensions as pg_ext  # noqa: E402

from ansible_collections.storeshift.objstore.plugins.module_utils import errors, specs, store_db  # noqa: E402
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MIB = 1024 * 1024


# -- database fixture ---------------------------------------------------------

@pytest.fixture
def dsn(anchore_db):
    """DSN of a fresh database holding Anchore's tables (conftest: tests/stack/anchore_schema.sql loaded)."""
    return anchore_db


def _spec(driver):
    return specs.StoreSpec.from_dict({'storage_driver': {'name': driver, 'config': {}}})


@pytest.fixture(params=['db2', 'db'])
def store(request, dsn):
    st = open_store(_spec(request.param), db_connect=dsn)
    st.check_access()
    yield st
    st.close()


def _sql(dsn, query, args=None, fetch=True):
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            rows = cur.fetchall() if fetch else None
        conn.commit()
        return rows
    finally:
        conn.close()


def _read(stream, chunk=256 * 1024):
    parts = []
    try:
        while True:
            data = stream.read(chunk)
            if not data:
                return b''.join(parts)
            parts.append(data)
    finally:
        stream.close()


# -- round trips --------------------------------------------------------------

@pytest.mark.parametrize('size', [0, 1, MIB], ids=['0B', '1B', '1MiB'])
def test_round_trip(store, size):
    data = os.urandom(size)
    key = 'admin/manifest_data/sha256:%d' % size
    store.put(key, io.BytesIO(data), size=size)
    assert store.stat(key).size == size
    assert _read(store.open(key)) == data
    assert [i.key for i in store.list('admin/')] == [key]


def test_db_non_utf8_is_base64_as_anchore_writes_it(dsn):
    st = open_store(_spec('db'), db_connect=dsn)
    data = b'\xff\xfe\x00binary' + os.urandom(1000)
    st.put('admin/analysis_archive/sha256:abc.tar.gz', io.BytesIO(data))
    rows = _sql(dsn, 'SELECT jsondata, b64_encoded, "documentName", record_state_key FROM archive_document')
    assert len(rows) == 1
    jsondata, b64, name, state = rows[0]
    assert b64 is True
    assert name == 'sha256:abc.tar.gz.json' and state == 'active'
    # exactly LegacyDbDriver._encode: base64.encodebytes (newline every 76 characters)
    assert jsondata == base64.encodebytes(data).decode('ascii')
    assert base64.decodebytes(jsondata.encode()) == data
    assert _read(st.open('admin/analysis_archive/sha256:abc.tar.gz')) == data
    assert st.stat('admin/analysis_archive/sha256:abc.tar.gz').size == len(data)
    st.close()


def test_db_utf8_json_is_plain_text(dsn):
    st = open_store(_spec('db'), db_connect=dsn)
    doc = json.dumps({'document': {'name': u'caf\u00e9 \u6f22\u5b57', 'n': 1}}, ensure_ascii=False).encode('utf-8')
    st.put('admin/policy_bundles/2c53a13c', io.BytesIO(doc), size=len(doc))
    rows = _sql(dsn, 'SELECT jsondata, b64_encoded FROM archive_document')
    assert rows == [(doc.decode('utf-8'), False)]
    assert _read(st.open('admin/policy_bundles/2c53a13c')) == doc
    assert st.stat('admin/policy_bundles/2c53a13c').size == len(doc)
    # Rows Anchore wrote itself (b64_encoded NULL in very old rows) read back too.
    _sql(dsn, 'INSERT INTO archive_document (bucket, "archiveId", "userId", "documentName", jsondata, b64_encoded) '
              "VALUES ('b', 'old', 'admin', 'old.json', '{\"document\": 1}', NULL)", fetch=False)
    assert _read(st.open('admin/b/old')) == b'{"document": 1}'
    st.close()


def test_db2_row_shape_and_upsert(dsn):
    st = open_store(_spec('db2'), db_connect=dsn)
    st.put('admin/image_content_data/sha256:1', io.BytesIO(b'first'))
    st.put('admin/image_content_data/sha256:1', io.BytesIO(b'second'), metadata={'a': 1})
    rows = _sql(dsn, 'SELECT "userId", bucket, key, version, content, object_metadata, created_at > 0, '
                     'last_updated >= created_at FROM object_storage')
    assert len(rows) == 1
    user, bucket, key, version, content, meta, created, updated = rows[0]
    assert (user, bucket, key, version, bytes(content)) == ('admin', 'image_content_data', 'sha256:1', '', b'second')
    assert json.loads(meta) == {'a': 1} and created and updated
    st.close()


def test_key_without_two_slashes(store):
    with pytest.raises(errors.ConfigError) as info:
        store.put('admin/nobucket', io.BytesIO(b'x'))
    assert 'admin/nobucket' in str(info.value)
    with pytest.raises(errors.ConfigError):
        store.stat('plain')
    # an archiveId may itself contain slashes
    store.put('admin/b/a/b/c', io.BytesIO(b'x'))
    assert store.stat('admin/b/a/b/c').size == 1


def test_missing_and_delete(store):
    with pytest.raises(errors.ObjectMissingError) as info:
        store.open('admin/b/none')
    assert info.value.key == 'admin/b/none'
    assert store.stat('admin/b/none') is None
    store.delete('admin/b/none')
    store.put('admin/b/k', io.BytesIO(b'v'))
    store.delete('admin/b/k')
    assert not store.exists('admin/b/k')


def test_size_mismatch_is_integrity_error(store):
    with pytest.raises(errors.IntegrityError):
        store.put('admin/b/short', io.BytesIO(b'abc'), size=10)
    assert store.stat('admin/b/short') is None


def test_prefix_listing(store):
    keys = ['admin/a_b/1', 'admin/a_b/2', 'admin/aXb/3', 'admin/a%/4', 'admin2/a_b/5', 'other/x/y/z']
    for key in keys:
        store.put(key, io.BytesIO(key.encode()))
    assert [i.key for i in store.list('admin/a_b/')] == ['admin/a_b/1', 'admin/a_b/2']
    # "_" and "%" are not wildcards
    assert [i.key for i in store.list('admin/a_')] == ['admin/a_b/1', 'admin/a_b/2']
    assert [i.key for i in store.list('admin/a%')] == ['admin/a%/4']
    assert sorted(i.key for i in store.list('admin')) == sorted(keys[:5])
    assert [i.key for i in store.list('other/x/y')] == ['other/x/y/z']
    assert sorted(i.key for i in store.list('')) == sorted(keys)
    assert dict((i.key, i.size) for i in store.list('')) == dict((k, len(k)) for k in keys)


def test_list_with_content_brings_small_objects_only(store, monkeypatch):
    """Objects up to the limit come with the listing (exact stored bytes); larger ones, and plain list(), without."""
    blobs = {'admin/b/small': b'x' * 100, 'admin/b/binary': bytes(range(256)) * 3, 'admin/b/edge': b'e' * 1000,
             'admin/b/big': os.urandom(5000), 'admin/b/empty': b''}
    for key, data in blobs.items():
        store.put(key, io.BytesIO(data))
    monkeypatch.setattr(store_db, 'INLINE_PAGE_BYTES', 2000)  # 2 rows per page at limit 1000: paging with content
    listed = list(store.list_with_content('admin/b/', 1000))
    assert [i.key for i in listed] == sorted(blobs)
    for info in listed:
        assert info.size == len(blobs[info.key])
        if info.key == 'admin/b/big':
            assert info.content is None  # above the limit: the engine opens it
        elif info.content is not None:
            assert info.content == blobs[info.key]
    assert {i.key for i in listed if i.content is not None} >= {'admin/b/small', 'admin/b/edge'}
    assert all(i.content is None for i in store.list('admin/b/'))


# -- scale and memory --------------------------------------------------------------

def test_list_10000_rows_lazily(dsn, monkeypatch):
    _sql(dsn, 'INSERT INTO object_storage ("userId", bucket, key, version, content) '
              "SELECT 'admin', 'analysis_data', 'sha256:' || lpad(i::text, 6, '0'), '', "
              "convert_to(repeat('x', i % 7), 'UTF8') FROM generate_series(1, 10000) AS i", fetch=False)
    st = open_store(_spec('db2'), db_connect=dsn)
    queries = []
    real = store_db.PgPool.transaction

    def counting(self, step):
        queries.append(step)
        return real(self, step)

    monkeypatch.setattr(store_db.PgPool, 'transaction', counting)
    listing = st.list('admin/analysis_data/')
    assert inspect.isgenerator(listing)
    first = next(listing)
    assert first.key == 'admin/analysis_data/sha256:000001' and first.size == 1
    assert queries == ['list']  # one page fetched so far
    rest = list(listing)
    assert len(rest) == 9999
    keys = [first.key] + [i.key for i in rest]
    assert keys == sorted(keys) and len(set(keys)) == 10000
    assert queries.count('list') == 11  # 10 full pages + the empty one that ends the listing
    st.close()


def test_stream_50mib_row_in_bounded_memory(dsn):
    """A 50 MiB bytea row is read in 1 MiB slices: the reader's peak RSS stays well under 2 copies."""
    _sql(dsn, 'INSERT INTO object_storage ("userId", bucket, key, version, content) '
              "SELECT 'admin', 'big', 'row', '', string_agg(sha256(int4send(i)), ''::bytea ORDER BY i) "
              'FROM generate_series(1, 50 * 1024 * 1024 / 32) AS i', fetch=False)
    expected = _sql(dsn, "SELECT encode(sha256(content), 'hex'), octet_length(content) FROM object_storage")[0]
    assert expected[1] == 50 * MIB
    script = textwrap.dedent('''
        import hashlib, json, sys
        def peak_kib():
            # VmHWM is this process's own peak; ru_maxrss would carry the parent's across exec.
            with open('/proc/self/status') as status:
                return int([l for l in status if l.startswith('VmHWM')][0].split()[1])
        from ansible_collections.storeshift.objstore.plugins.module_utils import specs
        from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store
        spec = specs.StoreSpec.from_dict({'storage_driver': {'name': 'db2', 'config': {}}})
        store = open_store(spec, db_connect=sys.argv[1])
        before = peak_kib()
        digest = hashlib.sha256()
        size = 0
        stream = store.open('admin/big/row')
        while True:
            chunk = stream.read(256 * 1024)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
        stream.close()
        store.close()
        print(json.dumps({'sha': digest.hexdigest(), 'size': size, 'before_kib': before,
                          'peak_kib': peak_kib()}))
    ''')
    env = dict(os.environ)
    env.setdefault('PYTHONPATH', os.path.join(ROOT, '.build', 'collections'))
    started = time.time()
    out = subprocess.check_output([sys.executable, '-c', script, dsn], env=env)
    elapsed = time.time() - started
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert (result['sha'], result['size']) == expected
    peak_mib = result['peak_kib'] / 1024.0
    print('50 MiB db2 row streamed in %.1fs, peak RSS %.1f MiB (%.1f MiB before opening)'
          % (elapsed, peak_mib, result['before_kib'] / 1024.0))
    assert peak_mib < 120, 'peak RSS %.1f MiB (baseline %.1f MiB)' % (peak_mib, result['before_kib'] / 1024.0)


def test_concurrent_threads_share_the_pool(dsn):
    st = open_store(_spec('db2'), db_connect=dsn)
    st.pool._max = 4  # fewer connections than threads: callers must wait, not fail
    failures = []

    def work(n):
        try:
            key = 'u%d/b/k' % n
            data = os.urandom(1000 + n)
            st.put(key, io.BytesIO(data))
            stream = st.open(key)
            assert _read(stream, 100) == data
            st.delete(key)
        except Exception as exc:  # pylint: disable=broad-except
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert st.pool._count <= 4
    st.close()


def test_stream_survives_other_work_on_the_same_thread(dsn):
    """A half-read stream keeps its own connection: puts meanwhile do not end its snapshot."""
    st = open_store(_spec('db2'), db_connect=dsn)
    data = os.urandom(3 * MIB + 5)
    st.put('a/b/src', io.BytesIO(data))
    stream = st.open('a/b/src')
    first = stream.read(MIB)
    st.put('a/b/src', io.BytesIO(b'replaced'))
    st.put('a/b/other', io.BytesIO(b'x'))
    rest = _read(stream)
    assert first + rest == data  # the snapshot of the row as it was when opened
    assert _read(st.open('a/b/src')) == b'replaced'
    st.close()


# -- errors ---------------------------------------------------------------------

def _with(dsn, **changes):
    return pg_ext.make_dsn(dsn, **changes)


def test_wrong_password_is_auth_error_without_the_password(dsn):
    params = pg_ext.parse_dsn(dsn)
    if not params.get('password') or (params.get('host') or '/').startswith('/'):
        pytest.skip('the test database is reached without a password')
    bad = 'Wr0ng-%s' % uuid.uuid4().hex
    dsn = _with(dsn, password=bad)
    st = open_store(_spec('db2'), db_connect=dsn)
    try:
        st.check_access()
    except errors.AuthError as exc:
        message = str(exc)
        assert 'PostgreSQL rejected the password for user %s' % params['user'] in message
        assert bad not in message and params['password'] not in message
        assert exc.cause == 'bad credentials'
    else:
        pytest.skip('the server accepted a wrong password (trust authentication)')
    finally:
        st.close()
    # a URL form with the password inside is scrubbed too
    url = 'postgresql+pg8000://%s:%s@%s:%s/%s' % (params['user'], bad, params['host'], params.get('port', 5432),
                                                  params['dbname'])
    st = open_store(_spec('db'), db_connect=url)
    with pytest.raises(errors.AuthError) as info:
        st.check_access()
    assert bad not in str(info.value) and bad not in repr(info.value.to_dict())
    st.close()


def test_missing_table_is_bucket_missing(dsn):
    _sql(dsn, 'CREATE SCHEMA IF NOT EXISTS empty_schema', fetch=False)
    dsn = _with(dsn, options='-c search_path=empty_schema')
    for driver, table in (('db2', 'object_storage'), ('db', 'archive_document')):
        st = open_store(_spec(driver), db_connect=dsn)
        with pytest.raises(errors.BucketMissingError) as info:
            st.check_access(create_bucket=True)  # never creates application tables
        dbname = pg_ext.parse_dsn(dsn)['dbname']
        assert str(info.value) == ("table %s does not exist in database %s: is this the application's database? "
                                   "(storeshift does not create application tables)" % (table, dbname))
        with pytest.raises(errors.BucketMissingError):
            st.stat('a/b/c')
        st.close()


def test_connection_refused_and_unknown_database(dsn):
    import socket
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    st = open_store(_spec('db2'), db_connect=_with(dsn, host='127.0.0.1', port=str(port)))
    with pytest.raises(errors.ConnectError) as info:
        st.check_access()
    assert 'refused' in str(info.value) and str(port) in str(info.value)
    st.close()
    st = open_store(_spec('db2'), db_connect=_with(dsn, dbname='no_such_db_here'))
    with pytest.raises(errors.ConnectError) as info:
        st.check_access()
    assert 'database no_such_db_here does not exist' in str(info.value)
    st.close()
    st = open_store(_spec('db2'), db_connect=_with(dsn, host='no-such-host.invalid', connect_timeout='3'))
    with pytest.raises(errors.ConnectError):
        st.check_access()
    st.close()


def test_map_pg_error_scrubs_password():
    dsn = 'postgresql://anchore:S3cretPw@db.example:5432/anchore'

    class Fake(Exception):
        pgcode = None
        pgerror = 'FATAL:  some text echoing postgresql://anchore:S3cretPw@db.example:5432/anchore'

    err = store_db.map_pg_error(Fake(), dsn, 'read')
    assert 'S3cretPw' not in str(err)
    assert isinstance(err, errors.ObjstoreError)


def test_normalize_dsn():
    assert store_db.normalize_dsn('postgresql+pg8000://u:p@h:5432/d') == 'postgresql://u:p@h:5432/d'
    assert store_db.normalize_dsn('postgresql+psycopg2://u@h/d') == 'postgresql://u@h/d'
    assert store_db.normalize_dsn('host=h dbname=d') == 'host=h dbname=d'
    with pytest.raises(errors.ConfigError):
        store_db.normalize_dsn('')


def test_anchore_text_codec_matches_anchore():
    for data in (b'', b'{"a": 1}', u'\u00e9'.encode('utf-8'), b'\xff' * 100, b'a\x00b'):
        text, is_b64 = store_db.anchore_text_encode(data)
        assert store_db.anchore_text_decode(text, is_b64) == data
    assert store_db.anchore_text_encode(b'\xff' * 100)[0] == base64.encodebytes(b'\xff' * 100).decode()
    assert hashlib.md5(store_db.anchore_text_decode('{"x": 2}', False)).hexdigest() == hashlib.md5(b'{"x": 2}').hexdigest()
