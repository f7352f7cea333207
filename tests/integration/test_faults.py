"""Server faults against the real stack: a destination that dies and comes back, a flaky S3
(503 SlowDown, connection resets, slow answers through tests/stack/faultproxy.py), an unreachable or
killed ledger database, a full destination disk, a corrupt Anchore source object.

Servers that are stopped here are private ones started by the test (never the shared stack's).
"""
import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
import requests

from ansible_collections.storeshift.objstore.plugins.module_utils import engine as engine_module
from ansible_collections.storeshift.objstore.plugins.module_utils import s3fast
from ansible_collections.storeshift.objstore.plugins.module_utils.engine import MigrationOptions, Migrator
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import LedgerError
from ansible_collections.storeshift.objstore.plugins.module_utils.ledger import Ledger

from helpers import logical_digests, seed, spec_of
from ports import free_port
from test_crash_resume import DB2, assert_no_row_points_at_nothing, db_rows, seed_anchore_db2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUSTFS_SERVER = os.path.join(REPO, 'tests', 'stack', 'rustfs_server.py')


def migrator(source, dest, ledger, db_connect=None, migration_id=None, **options):
    return Migrator(spec_of(source), spec_of(dest), MigrationOptions(**options), ledger_location=ledger,
                    db_connect=db_connect, migration_id=migration_id)


class Background(object):
    """Migrator.run() in a thread; ``result`` or ``error`` afterwards."""

    def __init__(self, run):
        self.result = self.error = None
        self._thread = threading.Thread(target=self._main, args=(run,), daemon=True)
        self._thread.start()

    def _main(self, run):
        try:
            self.result = run()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self, timeout=180):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), 'the migration did not end'
        return self


def wait_done(ledger, migration_id, count, timeout=60):
    """Wait until the ledger records ``count`` objects done for the migration."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(ledger) or '://' in ledger:
            try:
                probe = Ledger(ledger, create=False)
                try:
                    summary = probe.summary(migration_id, failures_limit=0)
                finally:
                    probe.close()
            except Exception:  # noqa: BLE001 - not created yet
                summary = None
            if summary and summary['objects_done'] >= count:
                return summary
        time.sleep(0.05)
    raise AssertionError('%d objects were not done within %ds' % (count, timeout))


class PrivateRustfs(object):
    """A RustFS reference server in its own process, on its own port: it can be killed and restarted."""

    def __init__(self, data_dir, key='private-key'):
        self.data_dir = str(data_dir)
        self.port = free_port()
        self.key = key
        self.url = 'http://127.0.0.1:%d' % self.port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, RUSTFS_SERVER, '--port', str(self.port), '--data-dir',
                                      self.data_dir, '--api-key-header', 'X-API-Key', '--api-key', self.key,
                                      '--quiet'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if requests.get(self.url + '/health', timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError('private RustFS server did not start')

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def spec(self, bucket):
        response = requests.put('%s/api/v1/buckets/%s' % (self.url, bucket), headers={'X-API-Key': self.key},
                                timeout=10)
        assert response.status_code in (200, 201), response.text
        return {'storage_driver': {'name': 'rustfs', 'config': {
            'endpoint': self.url, 'bucket': bucket, 'api_key_header': 'X-API-Key', 'api_key': self.key}},
            'compression': {'enabled': False, 'min_size_kbytes': 100}}


@pytest.fixture
def private_rustfs(tmp_path):
    server = PrivateRustfs(tmp_path / 'private-rustfs').start()
    yield server
    server.kill()


def local_spec(directory):
    directory.mkdir(parents=True, exist_ok=True)
    return {'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': str(directory)}},
            'compression': {'enabled': False, 'min_size_kbytes': 100}}


# -- destination down -------------------------------------------------------------------------------

def test_destination_down_briefly_is_retried_within_the_run(private_rustfs, tmp_path):
    source = local_spec(tmp_path / 'src')
    expected = seed(source, 80)
    dest = private_rustfs.spec('brief')
    ledger = str(tmp_path / 'ledger.sqlite')
    run = Background(migrator(source, dest, ledger, migration_id='brief', workers=4,
                              max_objects_per_second=25).run)
    wait_done(ledger, 'brief', 10)
    private_rustfs.kill()
    time.sleep(1.0)  # shorter than the engine's retry window (6 attempts, >= 3.1 s of backoff)
    private_rustfs.start()
    run.join()
    assert run.error is None, run.error
    assert run.result['run_state'] == 'complete', run.result['failures']
    assert run.result['retries'] > 0
    assert logical_digests(dest) == expected


def test_destination_stopped_then_restarted_resume_completes(private_rustfs, tmp_path, monkeypatch):
    # Shorter backoff only so that the down phase exhausts the retries quickly (same code path).
    monkeypatch.setattr(engine_module, 'RETRY_BASE_SECONDS', 0.02)
    source = local_spec(tmp_path / 'src')
    expected = seed(source, 80)
    dest = private_rustfs.spec('stopped')
    ledger = str(tmp_path / 'ledger.sqlite')
    run = Background(migrator(source, dest, ledger, migration_id='stopped', workers=4,
                              max_objects_per_second=40).run)
    wait_done(ledger, 'stopped', 10)
    private_rustfs.kill()
    run.join()
    assert run.error is None, run.error
    first = run.result
    assert first['run_state'] == 'failed' and first['objects_failed'] > 0
    assert first['retries'] > 0
    assert any('connection refused' in f['error'] for f in first['failures']), first['failures']
    private_rustfs.start()  # same port, same data directory
    second = migrator(source, dest, ledger, migration_id='stopped', workers=4).run()
    assert second['run_state'] == 'complete' and second['objects_failed'] == 0, second['failures']
    assert second['objects_copied'] + second['objects_skipped'] == 80
    assert logical_digests(dest) == expected


# -- flaky S3 ----------------------------------------------------------------------------------------

def test_flaky_s3_slowdown_resets_delays_complete_with_retries(s3_spec, s3b_spec, fault_proxy, tmp_path):
    expected = seed(s3_spec, 60)
    proxy = fault_proxy(s3b_spec['storage_driver']['config']['url'], seed=7, delay_seconds=0.3)
    config = dict(s3b_spec['storage_driver']['config'], url=proxy.url)
    dest = dict(s3b_spec, storage_driver={'name': 's3', 'config': config})
    ledger = str(tmp_path / 'ledger.sqlite')
    run = Background(migrator(s3_spec, dest, ledger, migration_id='flaky', workers=4,
                              max_objects_per_second=30).run)
    # Faults start once the run is under way: the migration row is written after the start-up access
    # checks (which are not retried by design: a store that cannot be reached at all fails the run).
    wait_done(ledger, 'flaky', 0)
    proxy.set_rates(slowdown_rate=0.12, reset_rate=0.06, truncate_rate=0.05, delay_rate=0.1)
    run.join()
    assert run.error is None, run.error
    result = run.result
    assert result['run_state'] == 'complete', result['failures']
    assert result['objects_failed'] == 0
    assert proxy.injected['slowdown'] > 0 and proxy.injected['reset'] > 0 and proxy.injected['delay'] > 0
    assert proxy.injected['truncate'] > 0
    assert result['retries'] > 0
    assert logical_digests(s3b_spec) == expected


# -- bytes corrupted on the way ------------------------------------------------------------------------

def _behind_proxy(spec, proxy, url_key):
    config = dict(spec['storage_driver']['config'], **{url_key: proxy.url})
    return dict(spec, storage_driver={'name': spec['storage_driver']['name'], 'config': config})


@pytest.mark.parametrize('verify_method', ['auto', 'readback'])
def test_s3_refuses_bytes_corrupted_on_the_way_and_they_are_sent_again(s3_spec, s3b_spec, fault_proxy, tmp_path,
                                                                       verify_method):
    """One byte of some PUT bodies is flipped between the engine and the destination S3 server.

    Every PUT carries the SHA-256 of its bytes (a header: these objects are below the multipart
    threshold), so the server refuses the damaged ones (BadDigest) and stores nothing; the engine sends
    them again. With ``auto`` the server's confirmed digest proves each write; ``readback`` reads every
    object back as well. Streamed PUTs: the tests below.
    """
    expected = seed(s3_spec, 60, size=4096)
    expected.update(seed(s3_spec, 3, size=3 * 1024 * 1024, prefix='big/'))
    proxy = fault_proxy(s3b_spec['storage_driver']['config']['url'], seed=11, corrupt_rate=0.2)
    dest = _behind_proxy(s3b_spec, proxy, 'url')
    result = migrator(s3_spec, dest, str(tmp_path / 'ledger.sqlite'), workers=4, verify_method=verify_method).run()
    assert result['run_state'] == 'complete', result['failures']
    assert result['write_verification'] == ('server-checksum' if verify_method == 'auto' else 'readback')
    # Refused PUTs are sent again by the driver itself (through boto3) or by the engine's retry.
    assert proxy.injected['corrupt'] > 0
    assert logical_digests(s3b_spec) == expected


# Above the default multipart threshold (8 MiB): copied as one streamed PUT.
STREAMED_SIZE = 9 * 1024 * 1024


def _spy_on_streamed_puts(monkeypatch, source_md5=None):
    """{object name: [the MD5 sent with each streamed PUT, or None]}; with ``source_md5`` every S3 source
    reader claims that MD5 (a source whose ETags are not its content's MD5: SSE-KMS, say)."""
    sent = {}
    put_stream = s3fast.FastS3.put_stream

    def recording(self, bucket, name, stream, size, md5_hex=None):
        sent.setdefault(name, []).append(md5_hex)
        return put_stream(self, bucket, name, stream, size, md5_hex)
    monkeypatch.setattr(s3fast.FastS3, 'put_stream', recording)
    if source_md5 is not None:
        from ansible_collections.storeshift.objstore.plugins.module_utils import store_s3
        reader_init = store_s3._S3Reader.__init__

        def claiming(self, store, body, key, etag=None):
            reader_init(self, store, body, key, etag)
            self.content_md5 = source_md5
        monkeypatch.setattr(store_s3._S3Reader, '__init__', claiming)
    return sent


def test_streamed_copy_is_proven_by_the_source_md5(s3_spec, s3b_spec, s3_client, s3b_client, tmp_path,
                                                   monkeypatch):
    """A single-part source object's ETag is its MD5: the destination's ETag of its streamed PUT (its own MD5
    of what it stored) must be that MD5, and proves the write. A multipart source object (ETag
    ``<hex>-<parts>``) gets the SHA-256 trailer instead."""
    from boto3.s3.transfer import TransferConfig
    expected = seed(s3_spec, 2, size=STREAMED_SIZE, prefix='single/')
    bucket = s3_spec['storage_driver']['config']['bucket']
    data = os.urandom(STREAMED_SIZE)
    s3_client.upload_fileobj(io.BytesIO(data), bucket, 'multi/part', Config=TransferConfig(
        multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, use_threads=False))
    expected['multi/part'] = hashlib.sha256(data).hexdigest()
    source_etags = dict((key, s3_client.head_object(Bucket=bucket, Key=key)['ETag'].strip('"')) for key in expected)
    assert '-' in source_etags['multi/part']
    sent = _spy_on_streamed_puts(monkeypatch)
    spliced = []
    move_to = s3fast.SpliceSource.move_to
    monkeypatch.setattr(s3fast.SpliceSource, 'move_to', lambda self, sink, count: spliced.append(
        move_to(self, sink, count)) or spliced[-1])
    result = migrator(s3_spec, s3b_spec, str(tmp_path / 'ledger.sqlite'), workers=2).run()
    assert result['run_state'] == 'complete', result['failures']
    assert result['write_verification'] == 'server-checksum' and result['retries'] == 0
    assert logical_digests(s3b_spec) == expected
    # Both servers speak plain HTTP: the kernel moved every byte of the streamed copies (where it can).
    sizes = sum(s3_client.head_object(Bucket=bucket, Key=key)['ContentLength'] for key in expected)
    assert sum(spliced) == (sizes if s3fast.SPLICE else 0)
    dest_bucket = s3b_spec['storage_driver']['config']['bucket']
    for key, etag in source_etags.items():
        if key.startswith('single/'):
            assert sent[key] == [etag]
            assert s3b_client.head_object(Bucket=dest_bucket, Key=key)['ETag'].strip('"') == etag
        else:
            assert sent[key] == [None]


def test_source_md5_not_matched_is_copied_again_with_a_sha256_trailer(s3_spec, s3b_spec, s3b_client, tmp_path,
                                                                      monkeypatch):
    """A source whose ETags are not its content's MD5: the destination's ETag of each such PUT is not the
    source's, the write is deleted and the object copied again with a SHA-256 trailer, and after
    MD5_MISMATCHES_MAX mismatches the run stops relying on the source's ETags at all."""
    expected = seed(s3_spec, 5, size=STREAMED_SIZE, prefix='kms/')
    sent = _spy_on_streamed_puts(monkeypatch, source_md5=hashlib.md5(b'not the content').hexdigest())
    result = migrator(s3_spec, s3b_spec, str(tmp_path / 'ledger.sqlite'), workers=1).run()
    assert result['run_state'] == 'complete', result['failures']
    assert result['write_verification'] == 'server-checksum'
    assert logical_digests(s3b_spec) == expected
    forms = [md5 is not None for key in sorted(sent) for md5 in sent[key]]
    assert forms.count(True) == engine_module.MD5_MISMATCHES_MAX == result['retries']
    assert all(md5s[-1] is None for md5s in sent.values())  # each object stored by its trailer PUT
    bucket = s3b_spec['storage_driver']['config']['bucket']
    for key in sent:  # what is there now is the trailer PUT's (checked by SHA-256), with the content's MD5
        assert s3b_client.head_object(Bucket=bucket, Key=key)['ETag'].strip('"') == hashlib.md5(
            s3b_client.get_object(Bucket=bucket, Key=key)['Body'].read()).hexdigest()


def test_streamed_write_damaged_every_time_stores_nothing(s3_spec, s3b_spec, fault_proxy, tmp_path, monkeypatch):
    """Every PUT body has a byte flipped on the way: the destination's MD5 of the first attempt is not the
    source's (the write is deleted), the SHA-256 trailer refuses every later one; the object fails, and
    nothing damaged is left at the destination."""
    seed(s3_spec, 1, size=STREAMED_SIZE, prefix='big/')
    monkeypatch.setattr(engine_module, 'RETRY_BASE_SECONDS', 0.05)
    proxy = fault_proxy(s3b_spec['storage_driver']['config']['url'], seed=3, corrupt_rate=1.0)
    sent = _spy_on_streamed_puts(monkeypatch)
    result = migrator(s3_spec, _behind_proxy(s3b_spec, proxy, 'url'), str(tmp_path / 'ledger.sqlite'),
                      workers=1).run()
    assert result['run_state'] == 'failed' and result['objects_failed'] == 1
    assert len(sent) == 1
    md5s = list(sent.values())[0]
    assert md5s[0] is not None and md5s[1:] and all(md5 is None for md5 in md5s[1:])
    assert logical_digests(s3b_spec) == {}


def test_rustfs_corrupted_write_is_caught_by_the_read_back_and_copied_again(s3_spec, rustfs_spec, fault_proxy,
                                                                            tmp_path):
    """A destination that does not check checksums (the RustFS API) stores damaged bytes: the read-back
    finds them, and the object is copied again from the source."""
    expected = seed(s3_spec, 40, size=4096)
    proxy = fault_proxy(rustfs_spec['storage_driver']['config']['endpoint'], seed=5, corrupt_rate=0.15)
    dest = _behind_proxy(rustfs_spec, proxy, 'endpoint')
    result = migrator(s3_spec, dest, str(tmp_path / 'ledger.sqlite'), workers=4).run()
    assert result['run_state'] == 'complete', result['failures']
    assert result['write_verification'] == 'readback'
    assert proxy.injected['corrupt'] > 0 and result['retries'] >= proxy.injected['corrupt']
    assert logical_digests(rustfs_spec) == expected


def test_every_write_corrupted_fails_the_object_not_the_run(s3_spec, rustfs_spec, fault_proxy, tmp_path):
    """Damage on every attempt: each object fails after WRITE_MISMATCH_ATTEMPTS with the read-back named."""
    seed(s3_spec, 3, size=4096)
    proxy = fault_proxy(rustfs_spec['storage_driver']['config']['endpoint'], seed=5, corrupt_rate=1.0)
    dest = _behind_proxy(rustfs_spec, proxy, 'endpoint')
    result = migrator(s3_spec, dest, str(tmp_path / 'ledger.sqlite'), workers=2).run()
    assert result['run_state'] == 'failed' and result['objects_failed'] == 3
    assert all('read back differs' in failure['error'] for failure in result['failures']), result['failures']
    assert proxy.injected['corrupt'] == 3 * engine_module.WRITE_MISMATCH_ATTEMPTS


# -- the ledger database -----------------------------------------------------------------------------

def test_ledger_unreachable_fails_cleanly_deletes_nothing(s3_spec, s3b_spec, stack):
    expected = seed(s3_spec, 10)
    password = stack['OBJSTORE_PG_PASSWORD']
    ledger = 'postgresql://%s:%s@127.0.0.1:%d/objstore' % (stack['OBJSTORE_PG_USER'], password, free_port())
    with pytest.raises(LedgerError) as caught:
        migrator(s3_spec, s3b_spec, ledger, delete_source=True).run()
    message = str(caught.value)
    assert 'ledger' in message and '127.0.0.1' in message, message
    assert password not in message and password not in repr(caught.value.to_dict())
    assert logical_digests(s3_spec) == expected  # nothing deleted
    assert logical_digests(s3b_spec) == {}  # nothing written


def test_ledger_killed_mid_run_stops_and_deletes_only_verified(s3_spec, rustfs_spec, fresh_db, stack):
    expected = seed(s3_spec, 120)
    password = stack['OBJSTORE_PG_PASSWORD']
    run = Background(migrator(s3_spec, rustfs_spec, fresh_db, migration_id='ledger-killed', workers=4,
                              delete_source=True, max_objects_per_second=30).run)
    wait_done(fresh_db, 'ledger-killed', 10)
    dbname = fresh_db.rpartition('/')[2]
    conn = psycopg2.connect(stack['OBJSTORE_PG_DSN'])
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            # The ledger's database goes away: its sessions are terminated and it is dropped.
            cur.execute('DROP DATABASE "%s" WITH (FORCE)' % dbname)
    finally:
        conn.close()
    run.join()
    assert isinstance(run.error, LedgerError), (run.error, run.result)
    message = str(run.error)
    assert 'ledger' in message and dbname in message, message
    assert password not in message
    left = logical_digests(s3_spec)
    in_dest = logical_digests(rustfs_spec)
    assert len(left) < 120 and len(left) > 0, 'the run should have stopped part way (%d left)' % len(left)
    for key, sha in expected.items():
        if key not in left:
            assert in_dest.get(key) == sha, 'source %s deleted without a verified copy' % key


# -- a full disk ------------------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    mount_point = tmp_path / 'small-disk'
    mount_point.mkdir()
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(mount_point)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    if proc.returncode != 0:
        pytest.skip('cannot mount a tmpfs here: %s' % proc.stdout.strip())
    yield mount_point
    subprocess.run(['umount', str(mount_point)], check=False)


def test_full_destination_disk_fails_cleanly(small_tmpfs, tmp_path):
    source = local_spec(tmp_path / 'src')
    expected = seed(source, 40, size=100 * 1024)  # 4 MiB into a 2 MiB file system
    dest = {'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': str(small_tmpfs)}},
            'compression': {'enabled': False, 'min_size_kbytes': 100}}
    result = migrator(source, dest, str(tmp_path / 'ledger.sqlite'), workers=4).run()
    assert result['run_state'] == 'failed'
    assert result['objects_failed'] > 0 and result['objects_copied'] > 0
    assert result['failures'] and all('no space left' in f['error'] for f in result['failures']), result['failures']
    assert '%d objects failed' % result['objects_failed'] in result['run_message']
    # What is in the destination is whole (atomic writes): no truncated object, no temporary file.
    in_dest = logical_digests(dest)
    assert len(in_dest) == result['objects_copied']
    for key, sha in in_dest.items():
        assert expected[key] == sha
    assert logical_digests(source) == expected
    files = [os.path.join(d, f) for d, _s, fs in os.walk(str(small_tmpfs)) for f in fs]
    assert len(files) == len(in_dest), sorted(files)[:5]


# -- corruption -------------------------------------------------------------------------------------

def test_corrupt_anchore_source_object_fails_alone(anchore_db, tmp_path):
    documents = seed_anchore_db2(anchore_db, 20, corrupt={7})
    dest = local_spec(tmp_path / 'dest')
    result = migrator(DB2, dest, str(tmp_path / 'ledger.sqlite'), db_connect=anchore_db, layout='anchore',
                      delete_source=True, workers=4).run()
    assert result['run_state'] == 'failed'
    assert result['objects_failed'] == 1 and result['objects_deleted'] == 19
    bad = 'admin/analysis_archive/sha256:%064x' % 7
    [failure] = result['failures']
    assert failure['key'] == bad
    assert 'digest mismatch' in failure['error'] and bad in failure['error'], failure
    # The corrupt object stays where it was (not deleted, row not repointed); the rest moved.
    assert db_rows(anchore_db, 'SELECT bucket, key FROM object_storage') == [('analysis_archive', 'sha256:%064x' % 7)]
    good = dict(documents)
    del good[('admin', 'analysis_archive', 'sha256:%064x' % 7)]
    row = db_rows(anchore_db, 'SELECT content_url FROM archive_metadata WHERE "archiveId" = %s',
                  ('sha256:%064x' % 7,))
    assert row[0][0].startswith('db2://')
    db_rows(anchore_db, 'DELETE FROM archive_metadata WHERE "archiveId" = %s RETURNING 1', ('sha256:%064x' % 7,))
    assert_no_row_points_at_nothing(anchore_db, good, [DB2, dest], expect_in=1)
