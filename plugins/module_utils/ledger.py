# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration ledger: one row per migration, one per executor (shard), one per object.

SQLite (a file path) for a single host, PostgreSQL (a DSN) to share one
migration between hosts. Object rows and the run's counters are written in
the same transaction, so counts always equal the per-object rows. Nothing
secret is stored: parameters are redacted before they are saved.

Object states: ``copied`` (written, read back and matched; for the anchore
layout also repointed), ``written`` (anchore layout: copied and verified but
not yet repointed), ``skipped`` (destination already equal), ``deleted``
(copied, then removed from the source), ``failed``. Done = copied, skipped,
deleted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import (
    ConfigError,
    ConflictError,
    LedgerError,
    MissingLibraryError,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import dsn_password, redact_dsn

try:
    import psycopg2
    HAS_PSYCOPG2 = True
except ImportError:  # pragma: no cover
    psycopg2 = None
    HAS_PSYCOPG2 = False

# PostgreSQL advisory lock keys (arbitrary constants, unique to this collection).
_LOCK_SCHEMA = 0x5354534801
_LOCK_RUNS = 0x5354534802

DONE_STATES = ('copied', 'skipped', 'deleted')
OBJECT_STATES = ('written', 'copied', 'skipped', 'deleted', 'failed')
HEARTBEAT_SECONDS = 1.0
# A run whose heartbeat is older than this is considered dead (other hosts cannot check its pid).
STALE_SECONDS = 30.0

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS storeshift_migrations (
        id VARCHAR(64) PRIMARY KEY,
        layout VARCHAR(16) NOT NULL,
        source TEXT NOT NULL,
        dest TEXT NOT NULL,
        source_identity TEXT NOT NULL,
        dest_identity TEXT NOT NULL,
        params TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS storeshift_runs (
        migration_id VARCHAR(64) NOT NULL,
        shard_index INTEGER NOT NULL,
        shard_count INTEGER NOT NULL,
        state VARCHAR(16) NOT NULL,
        host VARCHAR(255) NOT NULL,
        pid INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION,
        listing_done INTEGER NOT NULL DEFAULT 0,
        objects_total BIGINT NOT NULL DEFAULT 0,
        bytes_total BIGINT NOT NULL DEFAULT 0,
        objects_copied BIGINT NOT NULL DEFAULT 0,
        objects_skipped BIGINT NOT NULL DEFAULT 0,
        objects_failed BIGINT NOT NULL DEFAULT 0,
        objects_deleted BIGINT NOT NULL DEFAULT 0,
        bytes_copied BIGINT NOT NULL DEFAULT 0,
        retries BIGINT NOT NULL DEFAULT 0,
        copied_this_attempt BIGINT NOT NULL DEFAULT 0,
        message TEXT,
        PRIMARY KEY (migration_id, shard_index)
    )""",
    """CREATE TABLE IF NOT EXISTS storeshift_objects (
        migration_id VARCHAR(64) NOT NULL,
        key TEXT NOT NULL,
        shard_index INTEGER NOT NULL,
        state VARCHAR(16) NOT NULL,
        size BIGINT,
        stored_size BIGINT,
        sha256 VARCHAR(64),
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (migration_id, key)
    )""",
    """CREATE INDEX IF NOT EXISTS storeshift_objects_state ON storeshift_objects (migration_id, state)""",
]

_COPIED_LIKE = ('copied', 'written', 'deleted')
# Counter column each object state counts in (deleted objects were copied first).
_COUNTER = {'copied': 'objects_copied', 'written': 'objects_copied', 'skipped': 'objects_skipped',
            'deleted': 'objects_copied', 'failed': 'objects_failed'}


def is_postgres_location(location):
    return bool(location) and (location.startswith(('postgresql://', 'postgres://'))
                               or ('=' in location and not os.path.sep + '=' in location
                                   and ('dbname=' in location or 'host=' in location)))


def default_ledger_path():
    return os.path.join(os.path.expanduser('~'), '.storeshift', 'ledger.sqlite')


def resolve_location(location):
    """The ledger location with the default applied and ``~`` expanded."""
    location = location or default_ledger_path()
    if location.startswith('~'):
        location = os.path.expanduser(location)
    return location


def new_migration_id():
    return time.strftime('%Y%m%dT%H%M%S', time.gmtime()) + '-' + uuid.uuid4().hex[:8]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == 1  # EPERM: exists, not ours
    # A zombie is dead for our purposes.
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().split(')')[-1].split()[0] != 'Z'
    except (IOError, OSError, IndexError):
        return True


class Ledger(object):
    """Thread-safe access to the ledger database (one connection, one lock)."""

    def __init__(self, location=None, create=True):
        self.location = resolve_location(location)
        self.is_postgres = is_postgres_location(self.location)
        self.description = redact_dsn(self.location) if self.is_postgres else self.location
        self._secret = dsn_password(self.location) if self.is_postgres else None
        self._lock = threading.RLock()
        self._cursor = None
        self._conn = None
        self._connect(create)

    # -- connection -----------------------------------------------------------
    def _connect(self, create):
        if self.is_postgres:
            if not HAS_PSYCOPG2:
                raise MissingLibraryError('psycopg2')
            try:
                self._conn = psycopg2.connect(self.location, connect_timeout=10)
            except psycopg2.Error as exc:
                raise LedgerError('cannot open the ledger database %s: %s'
                                  % (self.description, self._clean(exc)), step='ledger')
        else:
            if not os.path.isabs(self.location):
                raise ConfigError('ledger must be an absolute path or a postgresql:// DSN, got %s' % self.location,
                                  step='config')
            directory = os.path.dirname(self.location)
            if not os.path.exists(self.location) and not create:
                raise LedgerError('ledger %s does not exist' % self.location, step='ledger')
            try:
                if create and not os.path.isdir(directory):
                    os.makedirs(directory, 0o700)
                self._conn = sqlite3.connect(self.location, timeout=30, check_same_thread=False,
                                             isolation_level=None)
                self._conn.execute('PRAGMA journal_mode=WAL')
                self._conn.execute('PRAGMA synchronous=NORMAL')
            except (sqlite3.Error, OSError) as exc:
                raise LedgerError('cannot open the ledger %s: %s' % (self.location, exc), step='ledger')
        if create:
            self._ensure_schema()

    def _clean(self, exc):
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self._secret:
            text = text.replace(self._secret, '********')
        return text

    @property
    def _bytewise(self):
        """Collation giving byte order (UTF-8 byte order = code point order), as listings use."""
        return 'COLLATE "C"' if self.is_postgres else 'COLLATE BINARY'

    def _sql(self, statement):
        return statement.replace('?', '%s') if self.is_postgres else statement

    @contextlib.contextmanager
    def _transaction(self, lock_key=None):
        """One transaction; statements run through _execute/_query inside it join it.

        SQLite's BEGIN IMMEDIATE serialises writers across processes; on PostgreSQL an
        advisory lock does, so that concurrent shards create the schema and their run rows safely.
        """
        with self._lock:
            if self._cursor is not None:  # nested: join the outer transaction
                yield self._cursor
                return
            try:
                cursor = self._conn.cursor()
                if not self.is_postgres:
                    cursor.execute('BEGIN IMMEDIATE')
                elif lock_key is not None:
                    cursor.execute('SELECT pg_advisory_xact_lock(%s)', (lock_key,))
            except Exception as exc:
                self._fail(exc)
            self._cursor = cursor
            try:
                yield cursor
                if self.is_postgres:
                    self._conn.commit()
                else:
                    cursor.execute('COMMIT')
            except Exception as exc:
                self._rollback()
                self._fail(exc)
            finally:
                self._cursor = None

    def _rollback(self):
        try:
            if self.is_postgres:
                self._conn.rollback()
            else:
                self._conn.execute('ROLLBACK')
        except Exception:  # pylint: disable=broad-except
            pass  # the connection itself may be gone; the original error is what matters

    def _fail(self, exc):
        if isinstance(exc, sqlite3.Error) or (HAS_PSYCOPG2 and isinstance(exc, psycopg2.Error)):
            raise LedgerError('ledger %s failed: %s' % (self.description, self._clean(exc)), step='ledger')
        raise exc

    def _execute(self, statements, fetch=None):
        """Run ``[(sql, args), ...]`` in one transaction; return the last fetch."""
        with self._transaction() as cursor:
            result = None
            for sql, args in statements:
                cursor.execute(self._sql(sql), tuple(args))
                if fetch == 'all':
                    result = cursor.fetchall() if cursor.description else result
                elif fetch == 'one':
                    result = cursor.fetchone() if cursor.description else result
            return result

    def _query(self, sql, args=(), one=False):
        return self._execute([(sql, args)], fetch='one' if one else 'all')

    def _ensure_schema(self):
        with self._transaction(lock_key=_LOCK_SCHEMA):
            self._execute([(statement, ()) for statement in _SCHEMA])

    def close(self):
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # pylint: disable=broad-except
                    pass  # closing a broken connection
                self._conn = None

    # -- migrations -----------------------------------------------------------
    def find_migration(self, migration_id):
        row = self._query('SELECT id, layout, source, dest, source_identity, dest_identity, params, created_at, '
                          'updated_at FROM storeshift_migrations WHERE id = ?', (migration_id,), one=True)
        if not row:
            return None
        keys = ('id', 'layout', 'source', 'dest', 'source_identity', 'dest_identity', 'params', 'created_at',
                'updated_at')
        record = dict(zip(keys, row))
        record['params'] = json.loads(record['params'])
        return record

    def latest_migration(self, source_identity, dest_identity):
        row = self._query('SELECT id FROM storeshift_migrations WHERE source_identity = ? AND dest_identity = ? '
                          'ORDER BY created_at DESC LIMIT 1', (source_identity, dest_identity), one=True)
        return row[0] if row else None

    def begin_run(self, migration_id, layout, source, dest, source_identity, dest_identity, params,
                  shard_index=0, shard_count=1):
        """Create or take over the run of one shard. Refuses when a live run holds it."""
        now = time.time()
        host = socket.gethostname()
        pid = os.getpid()
        with self._transaction(lock_key=_LOCK_RUNS):
            existing = self.find_migration(migration_id)
            if existing and (existing['source_identity'] != source_identity
                             or existing['dest_identity'] != dest_identity):
                raise ConfigError('migration %s was started from %s to %s; it cannot be resumed with a different '
                                  'source or destination' % (migration_id, existing['source'], existing['dest']),
                                  step='ledger')
            for other in self._live_runs(source_identity, dest_identity):
                if other['migration_id'] != migration_id:
                    raise ConflictError('migration %s from the same source to the same destination is already running '
                                        '(host %s, pid %d); wait for it or stop it first'
                                        % (other['migration_id'], other['host'], other['pid']), step='ledger')
            statements = []
            if not existing:
                statements.append(('INSERT INTO storeshift_migrations (id, layout, source, dest, source_identity, '
                                   'dest_identity, params, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                                   (migration_id, layout, source, dest, source_identity, dest_identity,
                                    json.dumps(params, sort_keys=True, default=str), now, now)))
            run = self.run_record(migration_id, shard_index)
            if run:
                if run['shard_count'] != shard_count:
                    raise ConfigError('migration %s was sharded %d ways; resume it with shard count %d'
                                      % (migration_id, run['shard_count'], run['shard_count']), step='ledger')
                if self.effective_state(run) == 'running':
                    raise ConflictError('migration %s (shard %d) is already running on host %s, pid %d'
                                        % (migration_id, shard_index, run['host'], run['pid']), step='ledger')
                statements.append(('UPDATE storeshift_runs SET state = ?, host = ?, pid = ?, attempt = attempt + 1, '
                                   'started_at = ?, heartbeat_at = ?, ended_at = NULL, listing_done = 0, objects_total = 0, '
                                   'bytes_total = 0, '
                                   'copied_this_attempt = 0, message = NULL WHERE migration_id = ? AND shard_index = ?',
                                   ('running', host, pid, now, now, migration_id, shard_index)))
            else:
                statements.append(('INSERT INTO storeshift_runs (migration_id, shard_index, shard_count, state, host, '
                                   'pid, attempt, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)',
                                   (migration_id, shard_index, shard_count, 'running', host, pid, now, now)))
            self._execute(statements)
            return self.run_record(migration_id, shard_index)

    def _live_runs(self, source_identity, dest_identity):
        rows = self._query('SELECT r.migration_id, r.shard_index FROM storeshift_runs r JOIN storeshift_migrations m '
                           'ON m.id = r.migration_id WHERE r.state = ? AND m.source_identity = ? '
                           'AND m.dest_identity = ?', ('running', source_identity, dest_identity))
        live = []
        for migration_id, shard_index in rows or ():
            run = self.run_record(migration_id, shard_index)
            if run and self.effective_state(run) == 'running':
                live.append(run)
        return live

    _RUN_COLUMNS = ('migration_id', 'shard_index', 'shard_count', 'state', 'host', 'pid', 'attempt', 'started_at',
                    'heartbeat_at', 'ended_at', 'listing_done', 'objects_total', 'bytes_total', 'objects_copied',
                    'objects_skipped', 'objects_failed', 'objects_deleted', 'bytes_copied', 'retries',
                    'copied_this_attempt', 'message')

    def run_record(self, migration_id, shard_index):
        row = self._query('SELECT %s FROM storeshift_runs WHERE migration_id = ? AND shard_index = ?'
                          % ', '.join(self._RUN_COLUMNS), (migration_id, shard_index), one=True)
        return dict(zip(self._RUN_COLUMNS, row)) if row else None

    def runs(self, migration_id):
        rows = self._query('SELECT %s FROM storeshift_runs WHERE migration_id = ? ORDER BY shard_index'
                           % ', '.join(self._RUN_COLUMNS), (migration_id,))
        return [dict(zip(self._RUN_COLUMNS, row)) for row in rows or ()]

    @staticmethod
    def effective_state(run, now=None):
        """``running`` only while the executor is alive; a dead one shows as ``interrupted``."""
        if run['state'] != 'running':
            return run['state']
        now = now or time.time()
        if run['host'] == socket.gethostname():
            return 'running' if pid_alive(run['pid']) else 'interrupted'
        return 'running' if now - run['heartbeat_at'] < STALE_SECONDS else 'interrupted'

    # -- progress -------------------------------------------------------------
    def record(self, migration_id, shard_index, results, listed=0, listed_bytes=0, retries=0, listing_done=False):
        """Store a batch of object results and update the run's counters atomically.

        ``results``: iterable of dicts with key, state, size, stored_size, sha256, error.
        """
        now = time.time()
        statements = []
        deltas = {'objects_copied': 0, 'objects_skipped': 0, 'objects_failed': 0, 'objects_deleted': 0,
                  'bytes_copied': 0, 'copied_this_attempt': 0}
        results = list(results)
        if results:
            keys = [r['key'] for r in results]
            previous = dict(self._previous_states(migration_id, keys))
        else:
            previous = {}
        for result in results:
            old = previous.get(result['key'])
            new = result['state']
            if old == new:
                continue
            if old is not None:
                deltas[_COUNTER[old]] -= 1
            deltas[_COUNTER[new]] += 1
            # Bytes and the per-attempt rate count an object once, when it first lands in the destination.
            if new in _COPIED_LIKE and old not in _COPIED_LIKE:
                deltas['bytes_copied'] += result.get('size') or 0
                deltas['copied_this_attempt'] += 1
            if new == 'deleted':
                deltas['objects_deleted'] += 1
            if old == 'deleted':
                deltas['objects_deleted'] -= 1
            if old is None:
                statements.append(('INSERT INTO storeshift_objects (migration_id, key, shard_index, state, size, '
                                   'stored_size, sha256, error, attempts, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                                   (migration_id, result['key'], shard_index, new, result.get('size'),
                                    result.get('stored_size'), result.get('sha256'), result.get('error'),
                                    result.get('attempts', 1), now)))
            else:
                statements.append(('UPDATE storeshift_objects SET state = ?, size = COALESCE(?, size), '
                                   'stored_size = COALESCE(?, stored_size), sha256 = COALESCE(?, sha256), error = ?, '
                                   'attempts = attempts + ?, updated_at = ? WHERE migration_id = ? AND key = ?',
                                   (new, result.get('size'), result.get('stored_size'), result.get('sha256'),
                                    result.get('error'), result.get('attempts', 1), now, migration_id, result['key'])))
        statements.append(('UPDATE storeshift_runs SET heartbeat_at = ?, objects_total = objects_total + ?, '
                           'bytes_total = bytes_total + ?, retries = retries + ?, '
                           'listing_done = CASE WHEN ? = 1 THEN 1 ELSE listing_done END, '
                           'objects_copied = objects_copied + ?, objects_skipped = objects_skipped + ?, '
                           'objects_failed = objects_failed + ?, objects_deleted = objects_deleted + ?, '
                           'bytes_copied = bytes_copied + ?, copied_this_attempt = copied_this_attempt + ? '
                           'WHERE migration_id = ? AND shard_index = ?',
                           (now, listed, listed_bytes, retries, 1 if listing_done else 0,
                            deltas['objects_copied'], deltas['objects_skipped'], deltas['objects_failed'],
                            deltas['objects_deleted'], deltas['bytes_copied'], deltas['copied_this_attempt'],
                            migration_id, shard_index)))
        statements.append(('UPDATE storeshift_migrations SET updated_at = ? WHERE id = ?', (now, migration_id)))
        self._execute(statements)

    def _previous_states(self, migration_id, keys):
        found = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._query('SELECT key, state FROM storeshift_objects WHERE migration_id = ? AND key IN (%s)'
                               % ', '.join('?' * len(chunk)), [migration_id] + chunk)
            found.extend(rows or ())
        return found

    def object_states(self, migration_id, keys):
        """``{key: (state, size, sha256)}`` for the given keys (one query per 500 keys)."""
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._query('SELECT key, state, size, sha256 FROM storeshift_objects WHERE migration_id = ? '
                               'AND key IN (%s)' % ', '.join('?' * len(chunk)), [migration_id] + chunk)
            for key, state, size, sha in rows or ():
                found[key] = (state, size, sha)
        return found

    def finish_run(self, migration_id, shard_index, state, message=None):
        now = time.time()
        self._execute([('UPDATE storeshift_runs SET state = ?, ended_at = ?, heartbeat_at = ?, message = ? '
                        'WHERE migration_id = ? AND shard_index = ?',
                        (state, now, now, message, migration_id, shard_index)),
                       ('UPDATE storeshift_migrations SET updated_at = ? WHERE id = ?', (now, migration_id))])

    def heartbeat(self, migration_id, shard_index):
        self._execute([('UPDATE storeshift_runs SET heartbeat_at = ? WHERE migration_id = ? AND shard_index = ?',
                        (time.time(), migration_id, shard_index))])

    # -- reading --------------------------------------------------------------
    def iter_objects(self, migration_id, states=DONE_STATES, batch=1000):
        """Yield ``{key, state, size, stored_size, sha256, error}`` page by page, in key order."""
        last = ''
        first = True
        while True:
            rows = self._query('SELECT key, state, size, stored_size, sha256, error FROM storeshift_objects '
                               'WHERE migration_id = ? AND state IN (%s) AND (key %s > ? OR ? = 1) ORDER BY key %s LIMIT %d'
                               % (', '.join('?' * len(states)), self._bytewise, self._bytewise, int(batch)),
                               [migration_id] + list(states) + [last, 1 if first else 0])
            if not rows:
                return
            for key, state, size, stored_size, sha, error in rows:
                yield {'key': key, 'state': state, 'size': size, 'stored_size': stored_size, 'sha256': sha,
                       'error': error}
            last = rows[-1][0]
            first = False

    def failures(self, migration_id, limit=20):
        rows = self._query('SELECT key, error FROM storeshift_objects WHERE migration_id = ? AND state = ? '
                           'ORDER BY updated_at LIMIT %d' % int(limit), (migration_id, 'failed'))
        return [{'key': key, 'error': error} for key, error in rows or ()]

    def count_states(self, migration_id):
        rows = self._query('SELECT state, COUNT(*) FROM storeshift_objects WHERE migration_id = ? GROUP BY state',
                           (migration_id,))
        return dict(rows or ())

    def migration_ids(self, limit=100):
        rows = self._query('SELECT id FROM storeshift_migrations ORDER BY created_at DESC LIMIT %d' % int(limit))
        return [row[0] for row in rows or ()]

    def summary(self, migration_id, failures_limit=20):
        """A migration as data: combined shard counters, state, rate, ETA, progress line."""
        record = self.find_migration(migration_id)
        if record is None:
            return None
        runs = self.runs(migration_id)
        now = time.time()
        states = [self.effective_state(run, now) for run in runs]
        shard_count = runs[0]['shard_count'] if runs else 1
        total = sum(r['objects_total'] for r in runs)
        copied = sum(r['objects_copied'] for r in runs)
        skipped = sum(r['objects_skipped'] for r in runs)
        failed = sum(r['objects_failed'] for r in runs)
        deleted = sum(r['objects_deleted'] for r in runs)
        if not runs:
            state = 'pending'
        elif 'running' in states:
            state = 'running'
        elif 'interrupted' in states:
            state = 'interrupted'
        elif 'failed' in states:
            state = 'failed'
        elif len(runs) < shard_count:
            state = 'partial'
        else:
            state = 'complete'
        started = min(r['started_at'] for r in runs) if runs else record['created_at']
        ended = max(r['ended_at'] or now for r in runs) if runs else now
        elapsed = max(ended - started, 1e-6)
        this_attempt = sum(r['copied_this_attempt'] for r in runs)
        rate = this_attempt / elapsed if state == 'running' else (copied + skipped) / elapsed
        done = copied + skipped
        listing_done = bool(runs) and all(r['listing_done'] for r in runs) and len(runs) == shard_count
        remaining = max(total - done - failed, 0)
        eta = (remaining / rate) if (rate > 0 and listing_done) else None
        summary = {
            'migration_id': migration_id, 'state': state, 'layout': record['layout'],
            'source': record['source'], 'dest': record['dest'], 'params': record['params'],
            'created_at': _iso(record['created_at']), 'started_at': _iso(started),
            'ended_at': _iso(ended) if state not in ('running',) and runs else None,
            'updated_at': _iso(record['updated_at']),
            'objects_total': total, 'objects_done': done, 'objects_copied': copied, 'objects_skipped': skipped,
            'objects_failed': failed, 'objects_deleted': deleted,
            'bytes_total': sum(r['bytes_total'] for r in runs), 'bytes_copied': sum(r['bytes_copied'] for r in runs),
            'retries': sum(r['retries'] for r in runs), 'listing_done': listing_done,
            'duration_s': round(elapsed, 3), 'objects_per_s': round(rate, 1),
            'eta_s': round(eta, 1) if eta is not None else None,
            'shards': [{'index': r['shard_index'], 'count': r['shard_count'], 'state': s, 'host': r['host'],
                        'pid': r['pid'], 'attempt': r['attempt'], 'objects_total': r['objects_total'],
                        'objects_copied': r['objects_copied'], 'objects_skipped': r['objects_skipped'],
                        'objects_failed': r['objects_failed'], 'message': r['message']}
                       for r, s in zip(runs, states)],
        }
        summary['progress_line'] = progress_line(summary)
        if failures_limit:
            summary['failures'] = self.failures(migration_id, failures_limit)
        return summary


def _iso(epoch):
    if epoch is None:
        return None
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


def format_duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return '%dh%02dm' % (seconds // 3600, (seconds % 3600) // 60)
    if seconds >= 60:
        return '%dm%02ds' % (seconds // 60, seconds % 60)
    return '%ds' % seconds


def progress_line(summary):
    """``copied 12,340 / 50,000 (24.7%), 310 obj/s, ETA 2m03s``."""
    done = summary['objects_done']
    total = summary['objects_total']
    if summary['listing_done'] and total:
        head = 'copied {0:,} / {1:,} ({2:.1f}%)'.format(done, total, 100.0 * done / total)
    else:
        head = 'copied {0:,} / {1:,}+ (listing)'.format(done, total)
    parts = [head, '{0:,.0f} obj/s'.format(summary['objects_per_s'])]
    if summary['objects_failed']:
        parts.append('{0:,} failed'.format(summary['objects_failed']))
    if summary['state'] == 'running' and summary['eta_s'] is not None:
        parts.append('ETA %s' % format_duration(summary['eta_s']))
    elif summary['state'] != 'running':
        parts.append(summary['state'])
    return ', '.join(parts)
