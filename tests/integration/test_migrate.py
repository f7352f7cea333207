"""objstore_migrate's engine against the real stack: every driver pair, Anchore pointers, resume, deletion."""
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib

import psycopg2
import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils import anchore
from ansible_collections.storeshift.objstore.plugins.module_utils.engine import MigrationOptions, Migrator
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import RetentionError
from ansible_collections.storeshift.objstore.plugins.module_utils.ledger import Ledger
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import load_spec_from_config

from helpers import logical_digests, seed, spec_of, sql, store_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def migrate(source, dest, ledger, db_connect=None, **options):
    migration_id = options.pop('migration_id', None)
    return Migrator(spec_of(source) if isinstance(source, dict) else source,
                    spec_of(dest) if isinstance(dest, dict) else dest,
                    MigrationOptions(**options), ledger_location=ledger, db_connect=db_connect,
                    migration_id=migration_id).run()


# -- Anchore seeding, the way anchore-engine's ObjectStorageManager writes -------------------

def seed_anchore(dsn, driver, count, compress=False, min_kb=1, buckets=('analysis_data', 'analysis_archive')):
    """Rows in archive_metadata plus the db/db2 content; returns {(user, bucket, id): content}."""
    documents = {}
    for index in range(count):
        bucket = buckets[index % len(buckets)]
        archive_id = 'sha256:%064x' % index
        if bucket == 'analysis_archive':
            archive_id += '.tar.gz'
        body = json.dumps({'n': index, 'packages': ['pkg-%d' % i for i in range(40 + index * 30)]}).encode()
        if index % 5 == 4:
            body = os.urandom(300) + body  # not UTF-8: the db driver base64-encodes it
        payload, is_compressed = body, False
        if compress and driver != 'db' and len(body) > min_kb * 1024:
            payload, is_compressed = zlib.compress(body, 3), True
        if driver == 'db2':
            sql(dsn, 'INSERT INTO object_storage ("userId", bucket, key, content) VALUES (%s, %s, %s, %s)',
                ('admin', bucket, archive_id, psycopg2.Binary(payload)), fetch=False)
        else:
            try:
                text, b64 = payload.decode('utf-8'), False
            except UnicodeDecodeError:
                import base64
                text, b64 = base64.b64encode(payload).decode('ascii'), True
            sql(dsn, 'INSERT INTO archive_document ("userId", bucket, "archiveId", "documentName", jsondata, '
                     'b64_encoded) VALUES (%s, %s, %s, %s, %s, %s)',
                ('admin', bucket, archive_id, archive_id + '.json', text, b64), fetch=False)
        sql(dsn, 'INSERT INTO archive_metadata ("userId", bucket, "archiveId", "documentName", content_url, '
                 'is_compressed, digest, size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)',
            ('admin', bucket, archive_id, archive_id + '.json', '%s://admin/%s/%s' % (driver, bucket, archive_id),
             is_compressed, hashlib.md5(payload).hexdigest(), len(payload)), fetch=False)
        documents[('admin', bucket, archive_id)] = body
    return documents


def assert_anchore_rows_point_at(dsn, documents, dest_dict, buckets=None):
    dest_spec = spec_of(dest_dict)
    store = store_of(dest_dict, dsn)
    catalog = anchore.AnchoreCatalog(dsn)
    try:
        for (user, bucket, archive_id), body in documents.items():
            if buckets and bucket not in buckets:
                continue
            doc = catalog.get_document(user, bucket, archive_id)
            assert anchore.url_matches_store(doc.content_url, dest_spec), doc.content_url
            expected_url = anchore.anchore_location(dest_spec, user, bucket, archive_id)[1]
            assert doc.content_url == expected_url
            # is_compressed, digest (MD5 of stored bytes) and size as Anchore's manager checks them on read.
            stream = anchore.open_for_anchore(store, doc)
            try:
                assert stream.read() == body
            finally:
                stream.close()
    finally:
        catalog.close()
        store.close()


@pytest.mark.parametrize('source_driver', ['db2', 'db'])
def test_anchore_db_to_s3_rows_repointed(anchore_db, s3_spec, source_driver, tmp_path):
    documents = seed_anchore(anchore_db, source_driver, 25, compress=True)
    dest = dict(s3_spec, compression={'enabled': True, 'min_size_kbytes': 1})
    source = {'storage_driver': {'name': source_driver, 'config': {}}}
    result = migrate(source, dest, str(tmp_path / 'l.sqlite'), anchore_db, layout='anchore', workers=4)
    assert result['run_state'] == 'complete', result['failures']
    assert result['objects_copied'] == 25
    assert_anchore_rows_point_at(anchore_db, documents, dest)
    compressed = sql(anchore_db, 'SELECT count(*) FROM archive_metadata WHERE is_compressed')[0][0]
    assert compressed > 0
    again = migrate(source, dest, str(tmp_path / 'l.sqlite'), anchore_db, layout='anchore')
    assert again['copied_this_run'] == 0 and again['objects_total'] == 0


def test_anchore_db2_to_localfs_with_bucket_filter_and_delete(anchore_db, localfs_spec, tmp_path):
    documents = seed_anchore(anchore_db, 'db2', 12)
    result = migrate({'storage_driver': {'name': 'db2'}}, localfs_spec, str(tmp_path / 'l.sqlite'), anchore_db,
                     layout='anchore', buckets=['analysis_archive'], delete_source=True)
    assert result['run_state'] == 'complete' and result['objects_deleted'] == 6
    assert_anchore_rows_point_at(anchore_db, documents, localfs_spec, buckets=['analysis_archive'])
    remaining = sql(anchore_db, 'SELECT bucket, count(*) FROM object_storage GROUP BY bucket')
    assert remaining == [('analysis_data', 6)]


def _anchore_config(path, object_store, archive=None):
    import yaml
    catalog = {'enabled': True, 'object_store': object_store}
    if archive is not None:
        catalog['analysis_archive'] = archive
    with open(path, 'w') as handle:
        yaml.safe_dump({'services': {'catalog': catalog}}, handle)
    return str(path)


def test_reference_doc_analysis_archive_flows(anchore_db, s3_spec, s3b_spec, tmp_path):
    """Single db backend -> db + s3 archive; then db + s3 archive -> a single s3 backend."""
    documents = seed_anchore(anchore_db, 'db', 10)
    db_store = {'compression': {'enabled': False, 'min_size_kbytes': 100},
                'storage_driver': {'name': 'db', 'config': {}}}
    archive_s3 = dict(s3_spec, enabled=True)
    source_cfg = _anchore_config(tmp_path / 'source-config.yaml', db_store)
    split_cfg = _anchore_config(tmp_path / 'dest-config.yaml', db_store, archive_s3)
    ledger = str(tmp_path / 'l.sqlite')
    # anchore-manager objectstorage migrate --to-analysis-archive --bucket analysis_archive
    result = migrate(load_spec_from_config(source_cfg), load_spec_from_config(split_cfg, 'analysis_archive'),
                     ledger, anchore_db, layout='anchore', buckets=['analysis_archive'])
    assert result['run_state'] == 'complete' and result['objects_copied'] == 5
    assert_anchore_rows_point_at(anchore_db, documents, s3_spec, buckets=['analysis_archive'])
    # Dual backend -> single s3 backend in another bucket: object store first, then --from-analysis-archive.
    single_cfg = _anchore_config(tmp_path / 'single-config.yaml', s3b_spec)
    first = migrate(load_spec_from_config(split_cfg), load_spec_from_config(single_cfg), ledger, anchore_db,
                    layout='anchore')
    assert first['objects_copied'] == 5  # only the db:// rows
    second = migrate(load_spec_from_config(split_cfg, 'analysis_archive'), load_spec_from_config(single_cfg),
                     ledger, anchore_db, layout='anchore')
    assert second['objects_copied'] == 5
    assert_anchore_rows_point_at(anchore_db, documents, s3b_spec)


def test_s3_to_rustfs_then_nothing_to_do(s3_spec, rustfs_spec, tmp_path):
    expected = seed(s3_spec, 300)
    ledger = str(tmp_path / 'l.sqlite')
    result = migrate(s3_spec, rustfs_spec, ledger, prefixes=['scanner/'], workers=8)
    assert result['run_state'] == 'complete' and result['copied_this_run'] == 300
    assert logical_digests(rustfs_spec) == expected
    again = migrate(s3_spec, rustfs_spec, ledger, prefixes=['scanner/'])
    assert again['copied_this_run'] == 0 and again['objects_skipped'] == 300


def test_s3_to_second_s3_server_compressed(s3_spec, s3b_spec, tmp_path):
    expected = seed(s3_spec, 200, size=4096)
    dest = dict(s3b_spec, compression={'enabled': True, 'min_size_kbytes': 1})
    result = migrate(s3_spec, dest, str(tmp_path / 'l.sqlite'))
    assert result['run_state'] == 'complete'
    assert logical_digests(dest) == expected
    # Stored bytes are zstd, smaller than the random-but-JSON-sized originals would be? Random data
    # does not compress, but every object carries the zstd frame magic.
    store = store_of(dest)
    raw = store.open(next(iter(expected)))
    assert raw.read(4) == b'\x28\xb5\x2f\xfd'
    raw.close()


def test_db2_objects_layout_to_localfs_and_back(anchore_db, localfs_spec, tmp_path):
    db2 = {'storage_driver': {'name': 'db2', 'config': {}}}
    expected = seed(db2, 50, prefix='admin/analysis_data/', db_connect=anchore_db)
    ledger = str(tmp_path / 'l.sqlite')
    assert migrate(db2, localfs_spec, ledger, anchore_db)['objects_copied'] == 50
    assert logical_digests(localfs_spec) == expected
    # The reverse migration is the documented rollback.
    sql(anchore_db, 'DELETE FROM object_storage', fetch=False)
    assert migrate(localfs_spec, db2, ledger, anchore_db)['objects_copied'] == 50
    assert logical_digests(db2, anchore_db) == expected


@pytest.mark.parametrize('driver', ['db2', 'db'])
def test_db_small_objects_come_with_the_listing(anchore_db, localfs_spec, tmp_path, monkeypatch, driver):
    """A database source sends objects up to INLINE_LIMIT with the listing: no per-object query for them.

    Larger objects are still opened one by one, and a sharded run (whose listing holds other shards'
    objects) never fetches content with the listing.
    """
    from ansible_collections.storeshift.objstore.plugins.module_utils import engine, store_db
    source = {'storage_driver': {'name': driver, 'config': {}}}
    expected = seed(source, 120, size=2048, prefix='admin/analysis_data/', db_connect=anchore_db)
    expected.update(seed(source, 3, size=engine.INLINE_LIMIT + 10, prefix='admin/big/', db_connect=anchore_db))
    opened = []
    store_class = store_db.Db2Store if driver == 'db2' else store_db.DbStore
    real_open = store_class.open

    def counting_open(self, key):
        opened.append(key)
        return real_open(self, key)

    monkeypatch.setattr(store_class, 'open', counting_open)
    result = migrate(source, localfs_spec, str(tmp_path / 'l.sqlite'), anchore_db, workers=8)
    assert result['objects_copied'] == 123 and result['run_state'] == 'complete'
    assert sorted(opened) == sorted(k for k in expected if k.startswith('admin/big/'))
    assert logical_digests(localfs_spec) == expected

    del opened[:]
    sharded_dir = tmp_path / 'sharded'
    sharded_dir.mkdir()
    sharded = dict(localfs_spec, storage_driver={'name': 'localfs', 'config': {'archive_data_dir': str(sharded_dir)}})
    ledger = str(tmp_path / 'shards.sqlite')
    for index in (0, 1):
        migrate(source, sharded, ledger, anchore_db, workers=4, shard_index=index, shard_count=2,
                migration_id='inline-shards')
    assert sorted(opened) == sorted(expected)  # every object opened once, by its own shard
    assert logical_digests(sharded) == expected


def test_immutable_retained_on_rustfs(s3_spec, rustfs_spec, tmp_path):
    seed(s3_spec, 5)
    result = migrate(s3_spec, rustfs_spec, str(tmp_path / 'l.sqlite'), immutable=True, retain_days=1)
    assert result['objects_copied'] == 5
    store = store_of(rustfs_spec)
    key = next(store.list('')).key
    with pytest.raises(RetentionError):
        store.put(key, io.BytesIO(b'overwrite'), size=9)
    with pytest.raises(RetentionError):
        store.delete(key)


def test_delete_source_only_after_verified_copy(s3_spec, rustfs_spec, tmp_path):
    expected = seed(s3_spec, 20)
    blocked = sorted(expected)[:3]
    dest = store_of(rustfs_spec)
    for key in blocked:  # immutable objects in the way: these copies fail
        dest.put(key, io.BytesIO(b'old'), size=3, immutable=True, retain_seconds=3600)
    result = migrate(s3_spec, rustfs_spec, str(tmp_path / 'l.sqlite'), delete_source=True)
    assert result['run_state'] == 'failed'
    assert result['objects_failed'] == 3 and result['objects_deleted'] == 17
    left = sorted(info.key for info in store_of(s3_spec).list(''))
    assert left == blocked


def test_dry_run_writes_nothing(s3_spec, s3b_spec, tmp_path):
    seed(s3_spec, 30)
    ledger = tmp_path / 'l.sqlite'
    plan = Migrator(spec_of(s3_spec), spec_of(s3b_spec), MigrationOptions(), ledger_location=str(ledger)).dry_run()
    assert plan['objects_total'] == 30 and plan['objects_to_copy'] == 30 and plan['eta_s'] is not None
    assert list(store_of(s3b_spec).list('')) == []
    assert not ledger.exists()


def test_shards_share_a_postgres_ledger(s3_spec, s3b_spec, fresh_db):
    expected = seed(s3_spec, 120)
    script = textwrap.dedent('''
        import json, sys
        from ansible_collections.storeshift.objstore.plugins.module_utils.engine import MigrationOptions, Migrator
        from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec
        src, dst, ledger, index = json.loads(sys.argv[1])
        r = Migrator(StoreSpec.from_dict(src), StoreSpec.from_dict(dst),
                     MigrationOptions(shard_index=index, shard_count=2, workers=4),
                     ledger_location=ledger, migration_id='sharded').run()
        print(json.dumps({'state': r['run_state'], 'copied': r['copied_this_run']}))
    ''')
    procs = [subprocess.Popen([sys.executable, '-c', script, json.dumps([s3_spec, s3b_spec, fresh_db, i])],
                              stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=':'.join(sys.path)))
             for i in range(2)]
    outputs = [json.loads(p.communicate(timeout=120)[0].decode().strip().splitlines()[-1]) for p in procs]
    assert all(o['state'] == 'complete' for o in outputs)
    assert sum(o['copied'] for o in outputs) == 120 and all(o['copied'] for o in outputs)
    summary = Ledger(fresh_db).summary('sharded')
    assert summary['state'] == 'complete' and summary['objects_copied'] == 120 and len(summary['shards']) == 2
    assert logical_digests(s3b_spec) == expected


KILL_SCRIPT = textwrap.dedent('''
    import json, sys
    from ansible_collections.storeshift.objstore.plugins.module_utils.engine import MigrationOptions, Migrator
    from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec
    src, dst, ledger = json.loads(sys.argv[1])
    # Throttled so that the kill lands mid-run however fast the copy is (600 objects: about 2 s).
    options = MigrationOptions(workers=8, max_objects_per_second=300)
    r = Migrator(StoreSpec.from_dict(src), StoreSpec.from_dict(dst), options, ledger_location=ledger,
                 migration_id='killed').run()
    print(json.dumps({'state': r['run_state'], 'copied': r['copied_this_run'], 'skipped': r['objects_skipped']}))
''')


def test_kill_9_then_resume(s3_spec, s3b_spec, tmp_path):
    expected = seed(s3_spec, 600, size=2048)
    ledger_path = str(tmp_path / 'l.sqlite')
    env = dict(os.environ, PYTHONPATH=':'.join(sys.path))
    args = [sys.executable, '-c', KILL_SCRIPT, json.dumps([s3_spec, s3b_spec, ledger_path])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env)
    threshold = random.randint(60, 400)
    deadline = time.time() + 120
    done_before = 0
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(ledger_path):
            try:
                summary = Ledger(ledger_path, create=False).summary('killed')
            except Exception:  # pylint: disable=broad-except
                summary = None  # the schema may not exist yet
            if summary and summary['objects_done'] >= threshold:
                break
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ledger = Ledger(ledger_path)
    assert ledger.summary('killed')['state'] == 'interrupted'
    done_rows = dict((r['key'], r) for r in ledger.iter_objects('killed'))
    done_before = len(done_rows)
    assert done_before >= threshold
    resumed = json.loads(subprocess.check_output(args, env=env).decode().strip().splitlines()[-1])
    assert resumed['state'] == 'complete'
    # Objects recorded as done were not copied again; at most the in-flight ones are re-checked.
    assert resumed['copied'] <= 600 - done_before
    after = dict((r['key'], r) for r in Ledger(ledger_path).iter_objects('killed'))
    for key, row in done_rows.items():
        assert after[key] == row
    assert len(after) == 600
    assert logical_digests(s3b_spec) == expected


def test_one_gib_object_bounded_memory(s3_spec, s3b_spec, tmp_path):
    """A 1 GiB object migrates with the engine's peak RSS under 200 MiB."""
    script = textwrap.dedent('''
        import hashlib, json, sys
        from ansible_collections.storeshift.objstore.plugins.module_utils.engine import MigrationOptions, Migrator
        from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec
        from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store
        src, dst, ledger = json.loads(sys.argv[1])
        class Pattern(object):
            def __init__(self, size):
                self.left = size
                self.block = hashlib.sha256(b'seed').digest() * 32768  # 1 MiB
            def read(self, n=-1):
                n = min(self.left, len(self.block) if n is None or n < 0 else min(n, len(self.block)))
                self.left -= n
                return self.block[:n]
        size = 1024 * 1024 * 1024
        open_store(StoreSpec.from_dict(src)).put('big/one-gib.bin', Pattern(size), size=size)
        r = Migrator(StoreSpec.from_dict(src), StoreSpec.from_dict(dst), MigrationOptions(workers=4),
                     ledger_location=ledger).run()
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across exec).
        hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
        print(json.dumps({'state': r['run_state'], 'bytes': r['bytes_copied'], 'rss_mib': int(hwm) / 1024.0}))
    ''')
    out = subprocess.check_output([sys.executable, '-c', script,
                                   json.dumps([s3_spec, s3b_spec, str(tmp_path / 'l.sqlite')])],
                                  env=dict(os.environ, PYTHONPATH=':'.join(sys.path)), timeout=600)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result['state'] == 'complete' and result['bytes'] == 1024 ** 3
    assert result['rss_mib'] < 200, result
