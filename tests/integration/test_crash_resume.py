"""Crash and resume: the engine is SIGKILLed at exact points (STORESHIFT_CRASH_AT) and at a random
moment, then resumed with the same migration_id; nothing is lost, nothing is deleted unverified,
no Anchore row points at nothing. Also: two concurrent migrations on one ledger (the second refuses).

Every run is a real subprocess against the local stack (tests/stack/stack.py up).
"""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import psycopg2
import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils import anchore
from ansible_collections.storeshift.objstore.plugins.module_utils.ledger import Ledger
from ansible_collections.storeshift.objstore.plugins.module_utils.verify import Verifier, VerifyOptions

from helpers import logical_digests, seed, spec_of, store_of

ENGINE_SCRIPT = textwrap.dedent('''
    import json, sys
    from ansible_collections.storeshift.objstore.plugins.module_utils.engine import MigrationOptions, Migrator
    from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ObjstoreError
    from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec
    a = json.loads(sys.argv[1])
    try:
        r = Migrator(StoreSpec.from_dict(a['source']), StoreSpec.from_dict(a['dest']),
                     MigrationOptions(**a['options']), ledger_location=a['ledger'],
                     db_connect=a.get('db_connect'), migration_id=a['migration_id']).run()
    except ObjstoreError as exc:
        print(json.dumps({'error': type(exc).__name__, 'msg': exc.message, 'cause': exc.cause}))
        sys.exit(3)
    print(json.dumps({'state': r['run_state'], 'copied': r['copied_this_run'], 'failed': r['objects_failed'],
                      'deleted': r['objects_deleted'], 'retries': r['retries'], 'failures': r['failures'],
                      'message': r['run_message'], 'total': r['objects_total']}))
''')


def engine_env(crash=None):
    env = dict(os.environ, PYTHONPATH=':'.join(p for p in sys.path if p))
    env.pop('STORESHIFT_CRASH_AT', None)
    if crash:
        env['STORESHIFT_CRASH_AT'] = crash
    return env


def engine_args(source, dest, ledger, migration_id, db_connect=None, **options):
    options.setdefault('workers', 4)
    payload = {'source': source, 'dest': dest, 'ledger': ledger, 'migration_id': migration_id,
               'db_connect': db_connect, 'options': options}
    return [sys.executable, '-c', ENGINE_SCRIPT, json.dumps(payload)]


def parse_output(stdout):
    lines = [line for line in stdout.strip().splitlines() if line.startswith('{')]
    return json.loads(lines[-1]) if lines else None


def run_engine(source, dest, ledger, migration_id, db_connect=None, crash=None, timeout=180, **options):
    """Run one engine process; returns (returncode, parsed JSON result or None, stderr)."""
    proc = subprocess.run(engine_args(source, dest, ledger, migration_id, db_connect, **options),
                          env=engine_env(crash), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout, check=False)
    return proc.returncode, parse_output(proc.stdout), proc.stderr


def crash_then_resume(source, dest, ledger, migration_id, crash, db_connect=None, **options):
    code, out, err = run_engine(source, dest, ledger, migration_id, db_connect, crash=crash, **options)
    assert code == -signal.SIGKILL, 'the engine was not killed at %s: rc %s %s %s' % (crash, code, out, err)
    interrupted = Ledger(ledger, create=False)
    try:
        summary = interrupted.summary(migration_id)
    finally:
        interrupted.close()
    if summary is not None:  # a kill during listing may come before the first ledger write
        assert summary['state'] == 'interrupted', summary
    code, out, err = run_engine(source, dest, ledger, migration_id, db_connect, **options)
    assert code == 0 and out is not None, err
    assert out['state'] == 'complete', out
    assert out['failed'] == 0
    final = Ledger(ledger, create=False)
    try:
        summary = final.summary(migration_id)
    finally:
        final.close()
    assert summary['state'] == 'complete' and summary['objects_failed'] == 0, summary
    return out, summary


def verify_objects(source, dest):
    result = Verifier(spec_of(source), spec_of(dest), VerifyOptions(mode='sha256', workers=8)).run()
    assert result['ok'], result['summary']
    assert result['missing'] == 0 and result['mismatched'] == 0
    return result


def assert_deleted_only_when_verified(source, dest, expected):
    """Every key no longer in the source is in the destination with the right SHA-256."""
    left = logical_digests(source)
    in_dest = logical_digests(dest)
    for key, sha in expected.items():
        if key not in left:
            assert in_dest.get(key) == sha, 'source %s was deleted but the destination copy is %s' % (
                key, 'missing' if key not in in_dest else 'different')
        else:
            assert left[key] == sha
    return left, in_dest


# -- Anchore seeding (anchore-engine's db2 driver layout) -----------------------------------------

def seed_anchore_db2(dsn, count, corrupt=()):
    """archive_metadata rows + object_storage content; returns {(user, bucket, archive_id): body}.

    Indexes in ``corrupt`` get stored bytes that do not match the recorded MD5."""
    documents = {}
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            for index in range(count):
                bucket = ('analysis_data', 'analysis_archive')[index % 2]
                archive_id = 'sha256:%064x' % index
                body = json.dumps({'n': index, 'packages': ['pkg-%d' % i for i in range(20 + index)]}).encode()
                stored = body
                if index in corrupt:
                    stored = body[:-2] + b'XX'  # bit rot: same size, other bytes
                cur.execute('INSERT INTO object_storage ("userId", bucket, key, content) VALUES (%s, %s, %s, %s)',
                            ('admin', bucket, archive_id, psycopg2.Binary(stored)))
                cur.execute('INSERT INTO archive_metadata ("userId", bucket, "archiveId", "documentName", '
                            'content_url, is_compressed, digest, size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)',
                            ('admin', bucket, archive_id, archive_id + '.json',
                             'db2://admin/%s/%s' % (bucket, archive_id), False, hashlib.md5(body).hexdigest(),
                             len(body)))
                documents[('admin', bucket, archive_id)] = body
    finally:
        conn.close()
    return documents


def db_rows(dsn, query, args=None):
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        conn.close()


def assert_no_row_points_at_nothing(dsn, documents, stores, expect_in=None):
    """Every archive_metadata row's content_url is in one of ``stores`` and reads back (digest checked)
    with the original content. Returns {store index: rows} counts."""
    specs = [spec_of(s) for s in stores]
    opened = [store_of(s, dsn) for s in stores]
    catalog = anchore.AnchoreCatalog(dsn)
    where = {}
    try:
        rows = db_rows(dsn, 'SELECT "userId", bucket, "archiveId" FROM archive_metadata')
        assert len(rows) == len(documents)
        for user, bucket, archive_id in rows:
            doc = catalog.get_document(user, bucket, archive_id)
            matches = [i for i, spec in enumerate(specs) if anchore.url_matches_store(doc.content_url, spec)]
            assert matches, 'row %s points at %s, in no known store' % (doc.ident, doc.content_url)
            index = matches[0]
            stream = anchore.open_for_anchore(opened[index], doc)  # MD5 and size checked at end of stream
            try:
                assert stream.read() == documents[(user, bucket, archive_id)], doc.ident
            finally:
                stream.close()
            where[index] = where.get(index, 0) + 1
    finally:
        catalog.close()
        for store in opened:
            store.close()
    if expect_in is not None:
        assert where == {expect_in: len(documents)}, where
    return where


DB2 = {'storage_driver': {'name': 'db2', 'config': {}}, 'compression': {'enabled': False, 'min_size_kbytes': 100}}


# -- the crash points -------------------------------------------------------------------------------

def test_crash_at_listing_then_resume(s3_spec, s3b_spec, tmp_path):
    expected = seed(s3_spec, 60)
    ledger = str(tmp_path / 'ledger.sqlite')
    out, summary = crash_then_resume(s3_spec, s3b_spec, ledger, 'crash-listing', 'listing:50')
    assert out['copied'] == 60 and summary['objects_copied'] == 60
    verify_objects(s3_spec, s3b_spec)
    assert logical_digests(s3b_spec) == expected


def test_crash_after_put_then_resume(s3_spec, rustfs_spec, tmp_path):
    expected = seed(s3_spec, 80)
    ledger = str(tmp_path / 'ledger.sqlite')
    point = random.randint(2, 75)
    out, summary = crash_then_resume(s3_spec, rustfs_spec, ledger, 'crash-put', 'put:%d' % point)
    # The object whose put preceded the kill was written but never recorded: it is checked again.
    assert summary['objects_copied'] + summary['objects_skipped'] == 80
    verify_objects(s3_spec, rustfs_spec)
    assert logical_digests(rustfs_spec) == expected


def test_crash_before_repoint_anchore_then_resume(anchore_db, s3_spec, tmp_path):
    documents = seed_anchore_db2(anchore_db, 40)
    ledger = str(tmp_path / 'ledger.sqlite')
    point = random.randint(2, 38)
    crash_then_resume(DB2, s3_spec, ledger, 'crash-repoint', 'repoint:%d' % point, db_connect=anchore_db,
                      layout='anchore')
    assert_no_row_points_at_nothing(anchore_db, documents, [DB2, s3_spec], expect_in=1)
    # Without delete_source the source stays whole.
    assert db_rows(anchore_db, 'SELECT count(*) FROM object_storage')[0][0] == 40


def test_crash_before_delete_objects_then_resume(s3_spec, rustfs_spec, tmp_path):
    expected = seed(s3_spec, 80)
    ledger = str(tmp_path / 'ledger.sqlite')
    point = random.randint(2, 75)
    out, summary = crash_then_resume(s3_spec, rustfs_spec, ledger, 'crash-delete', 'delete:%d' % point,
                                     delete_source=True)
    left, in_dest = assert_deleted_only_when_verified(s3_spec, rustfs_spec, expected)
    assert in_dest == expected
    assert left == {}, 'source objects left after a complete delete_source migration: %s' % sorted(left)[:5]


def test_crash_before_delete_anchore_then_resume(anchore_db, s3_spec, tmp_path):
    documents = seed_anchore_db2(anchore_db, 40)
    ledger = str(tmp_path / 'ledger.sqlite')
    point = random.randint(2, 38)
    crash_then_resume(DB2, s3_spec, ledger, 'crash-delete-anchore', 'delete:%d' % point, db_connect=anchore_db,
                      layout='anchore', delete_source=True)
    # Every row points at the destination and reads back with its digest; no row points at a deleted object.
    assert_no_row_points_at_nothing(anchore_db, documents, [DB2, s3_spec], expect_in=1)
    # Source objects still present are only those whose row was repointed just before the kill (their
    # deletion was interrupted): each of them is also safely in the destination.
    left = db_rows(anchore_db, 'SELECT "userId", bucket, key FROM object_storage')
    assert len(left) <= 4, 'more source objects left than were in flight (4 workers): %d' % len(left)


def test_random_time_kill_with_delete_source_then_resume(s3_spec, rustfs_spec, tmp_path):
    expected = seed(s3_spec, 250, size=2048)
    ledger = str(tmp_path / 'ledger.sqlite')
    # Throttled (250 objects: about 2.5 s) so that the kill lands mid-run however fast the copy is.
    args = engine_args(s3_spec, rustfs_spec, ledger, 'random-kill', delete_source=True, workers=8,
                       max_objects_per_second=100)
    proc = subprocess.Popen(args, env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    threshold = random.randint(20, 180)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(ledger):
            try:
                probe = Ledger(ledger, create=False)
                try:
                    summary = probe.summary('random-kill')
                finally:
                    probe.close()
            except Exception:  # noqa: BLE001 - the schema may not exist yet
                summary = None
            if summary and summary['objects_done'] >= threshold:
                break
        time.sleep(0.02)
    assert proc.poll() is None, 'the run ended before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    code, out, err = run_engine(s3_spec, rustfs_spec, ledger, 'random-kill', delete_source=True, workers=8)
    assert code == 0 and out['state'] == 'complete', (out, err)
    left, in_dest = assert_deleted_only_when_verified(s3_spec, rustfs_spec, expected)
    assert in_dest == expected
    assert left == {}


# -- concurrency ------------------------------------------------------------------------------------

@pytest.mark.parametrize('same_id', [False, True], ids=['other-migration-id', 'same-migration-id'])
def test_second_concurrent_migration_refuses(s3_spec, s3b_spec, tmp_path, same_id):
    expected = seed(s3_spec, 100)
    ledger = str(tmp_path / 'ledger.sqlite')
    # The first run is slowed down so that it is surely running when the second starts.
    first = subprocess.Popen(engine_args(s3_spec, s3b_spec, ledger, 'first', workers=2, max_objects_per_second=20),
                             env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if os.path.exists(ledger):
                try:
                    probe = Ledger(ledger, create=False)
                    try:
                        summary = probe.summary('first')
                    finally:
                        probe.close()
                except Exception:  # noqa: BLE001
                    summary = None
                if summary and summary['state'] == 'running':
                    break
            time.sleep(0.05)
        code, out, err = run_engine(s3_spec, s3b_spec, ledger, 'first' if same_id else 'second')
        assert code == 3, (code, out, err)
        assert out['error'] == 'ConflictError' and 'already running' in out['msg'], out
        assert 'pid %d' % first.pid in out['msg']
    finally:
        stdout, stderr = first.communicate(timeout=120)
    result = parse_output(stdout)
    assert result and result['state'] == 'complete', stderr
    assert logical_digests(s3b_spec) == expected
    check = Ledger(ledger, create=False)
    try:
        ids = check.migration_ids()
        assert ids == ['first']  # the refused run recorded nothing
    finally:
        check.close()
