# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL stores: Anchore's ``db2`` driver (table ``object_storage``,
``content`` bytea) and legacy ``db`` driver (table ``archive_document``,
``jsondata`` text, base64 for non-UTF-8 bytes).

A key is ``userId/bucket/archiveId`` (split on the first two slashes). Rows
are written exactly as anchore-engine writes them
(``anchore_engine/subsys/object_store/drivers/rdbms.py``,
``anchore_engine/db/db_objectstorage.py``, ``db_archivedocument.py``):
``version`` is ``''``, ``documentName`` is ``archiveId + '.json'``,
timestamps are epoch seconds.

Also home of what every PostgreSQL user in the collection shares:
``normalize_dsn``, ``map_pg_error`` (psycopg2 errors to collection errors,
never echoing the DSN password) and ``PgPool`` (a small blocking,
thread-safe connection pool).

storeshift never creates application tables: a missing table is an error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import io
import json
import re
import threading
import time

from ansible_collections.storeshift.objstore.plugins.module_utils import errors
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import dsn_password, redact_dsn
from ansible_collections.storeshift.objstore.plugins.module_utils.store import INLINE_PAGE_BYTES, ObjectInfo, ObjectStore

try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql
    HAS_PSYCOPG2 = True
except ImportError:  # pragma: no cover - bare targets only
    psycopg2 = None
    sql = None
    HAS_PSYCOPG2 = False

READ_CHUNK = 1024 * 1024      # bytea slice fetched per query when streaming a db2 row
PAGE_SIZE = 1000              # rows per listing page (keyset pagination)
MAX_CONNECTIONS = 64          # per pool; callers block when all are in use
CONNECT_TIMEOUT = 15          # seconds, unless the DSN says otherwise
APPLICATION_NAME = 'storeshift-objstore'

TABLES = {'db2': 'object_storage', 'db': 'archive_document'}


def _need_psycopg2():
    if not HAS_PSYCOPG2:
        raise errors.MissingLibraryError('psycopg2')


def _now():
    return int(time.time())


# ---------------------------------------------------------------------------
# DSN handling and error mapping (shared with anchore.py and the ledger)
# ---------------------------------------------------------------------------

def normalize_dsn(dsn):
    """A DSN psycopg2 accepts.

    Anchore's ``db_connect`` is an SQLAlchemy URL such as
    ``postgresql+pg8000://user:pw@host:5432/db``; the ``+driver`` part is
    dropped so the same value can be pasted here.
    """
    if not dsn or not isinstance(dsn, str):
        raise errors.ConfigError('db_connect must be a libpq DSN or a postgresql:// URL', step='config')
    dsn = dsn.strip()
    return re.sub(r'^(postgres(?:ql)?)\+[A-Za-z0-9_]+://', r'\1://', dsn)


def dsn_params(dsn):
    """host, port, user and dbname of a DSN (best effort, never raises)."""
    params = {}
    if HAS_PSYCOPG2:
        try:
            params = psycopg2.extensions.parse_dsn(normalize_dsn(dsn))
        except Exception:  # pylint: disable=broad-except
            params = {}
    return params


def _where(dsn):
    params = dsn_params(dsn)
    host = params.get('host') or 'localhost'
    port = params.get('port') or '5432'
    if host.startswith('/'):
        return 'socket %s port %s' % (host, port)
    return '%s:%s' % (host, port)


def _first_line(text):
    text = (text or '').strip()
    return text.splitlines()[0].strip() if text else ''


def map_pg_error(exc, dsn, step):
    """Turn a psycopg2 (or socket) exception into a collection error.

    ``dsn`` is used to name the server and database and to scrub the
    password from any server text; ``step`` is what we were doing.
    """
    if isinstance(exc, errors.ObjstoreError):
        return exc
    secrets = [dsn_password(dsn), dsn, normalize_dsn(dsn) if isinstance(dsn, str) else None]
    params = dsn_params(dsn) if dsn else {}
    user = params.get('user') or 'the connecting user'
    dbname = params.get('dbname') or params.get('user') or 'postgres'
    where = _where(dsn) if dsn else 'PostgreSQL'
    raw = str(getattr(exc, 'pgerror', None) or exc or '')
    text = errors.scrub(raw, secrets)
    line = errors.scrub(_first_line(raw), secrets)
    low = text.lower()
    code = getattr(exc, 'pgcode', None) or ''

    def build(cls, message):
        return cls(errors.scrub(message, secrets), step=step)

    if 'password authentication failed' in low:
        match = re.search(r'password authentication failed for user "([^"]*)"', text)
        return build(errors.AuthError, 'PostgreSQL rejected the password for user %s (%s)'
                     % (match.group(1) if match else user, where))
    if 'no password supplied' in low or 'password is required' in low:
        return build(errors.AuthError, 'PostgreSQL at %s requires a password for user %s and db_connect has none'
                     % (where, user))
    if re.search(r'role "[^"]*" does not exist', low):
        return build(errors.AuthError, 'PostgreSQL at %s has no role %s' % (where, user))
    if 'no pg_hba.conf entry' in low or 'authentication failed' in low:
        return build(errors.AuthError, 'PostgreSQL at %s refused user %s: %s' % (where, user, line))
    match = re.search(r'database "([^"]*)" does not exist', text)
    if match and not code.startswith('42'):
        return build(errors.ConnectError, 'database %s does not exist on the PostgreSQL server %s'
                     % (match.group(1), where))
    if 'could not translate host name' in low or 'name or service not known' in low \
            or 'nodename nor servname' in low or 'temporary failure in name resolution' in low:
        return build(errors.ConnectError, 'cannot resolve the PostgreSQL host of %s (check db_connect)' % where)
    if 'connection refused' in low:
        return build(errors.ConnectError, 'PostgreSQL at %s refused the connection (is the server running and '
                     'listening there?)' % where)
    if 'timeout expired' in low or 'timed out' in low:
        return build(errors.ConnectError, 'connecting to PostgreSQL at %s timed out' % where)
    if 'no route to host' in low or 'network is unreachable' in low:
        return build(errors.ConnectError, 'PostgreSQL at %s is unreachable: %s' % (where, line))
    if 'ssl' in low and ('certificate' in low or 'handshake' in low or 'server does not support ssl' in low):
        return build(errors.ConnectError, 'TLS to PostgreSQL at %s failed: %s' % (where, line))
    if code == '42P01':
        return build(errors.BucketMissingError, 'a table is missing in database %s: %s' % (dbname, line))
    if code == '42501':
        return build(errors.AccessDeniedError, 'PostgreSQL user %s may not do this in database %s: %s'
                     % (user, dbname, line))
    if code in ('53100',):
        return build(errors.SpaceError, 'the PostgreSQL server %s is out of disk space: %s' % (where, line))
    if code in ('40001', '40P01', '53200', '53300', '57P01', '57P02', '57P03', '55P03') \
            or code.startswith('08'):
        return build(errors.TransientError, 'PostgreSQL at %s: %s' % (where, line))
    if HAS_PSYCOPG2 and isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        if 'server closed the connection' in low or 'terminating connection' in low \
                or 'connection already closed' in low or 'could not receive data' in low \
                or 'ssl syscall' in low or 'eof detected' in low or 'could not send data' in low:
            return build(errors.TransientError, 'lost the connection to PostgreSQL at %s: %s' % (where, line))
        if step == 'connect':
            return build(errors.ConnectError, 'cannot connect to PostgreSQL at %s: %s' % (where, line))
        return build(errors.TransientError, 'PostgreSQL at %s: %s' % (where, line))
    if code == '54000':
        return build(errors.ObjstoreError, 'PostgreSQL cannot hold this value (a row is limited to 1 GB): %s' % line)
    return build(errors.ObjstoreError, 'PostgreSQL error during %s: %s' % (step or 'a query', line or type(exc).__name__))


def connect(dsn, step='connect'):
    """One new psycopg2 connection (autocommit off), errors mapped."""
    _need_psycopg2()
    dsn = normalize_dsn(dsn)
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except Exception:  # pylint: disable=broad-except
        raise errors.ConfigError('db_connect is not a valid libpq DSN or postgresql:// URL: %s'
                                 % redact_dsn(dsn), step='config')
    extra = {}
    if 'connect_timeout' not in params:
        extra['connect_timeout'] = CONNECT_TIMEOUT
    if 'application_name' not in params:
        extra['application_name'] = APPLICATION_NAME
    try:
        conn = psycopg2.connect(dsn, **extra)
        conn.set_client_encoding('UTF8')
    except Exception as exc:  # pylint: disable=broad-except
        raise map_pg_error(exc, dsn, step)
    return conn


def _discard(conn):
    try:
        conn.close()
    except Exception:  # pylint: disable=broad-except
        pass


class PgPool(object):
    """A blocking, thread-safe pool of psycopg2 connections.

    Connections are opened lazily up to ``maxconn``; a caller that finds
    them all in use waits (psycopg2's own pools raise instead). Broken
    connections are dropped, idle ones are reused.
    """

    def __init__(self, dsn, maxconn=MAX_CONNECTIONS):
        _need_psycopg2()
        self.dsn = normalize_dsn(dsn)
        self._max = maxconn
        self._idle = []
        self._count = 0
        self._closed = False
        self._cond = threading.Condition()

    def acquire(self, step='connect'):
        with self._cond:
            while True:
                if self._closed:
                    raise errors.ObjstoreError('the PostgreSQL connection pool is closed', step=step)
                if self._idle:
                    return self._idle.pop()
                if self._count < self._max:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return connect(self.dsn, step='connect')
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def release(self, conn, broken=False):
        if not broken and not conn.closed:
            try:
                if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    conn.rollback()
            except Exception:  # pylint: disable=broad-except
                broken = True
        with self._cond:
            if broken or self._closed or conn.closed:
                self._count -= 1
                _discard(conn)
            else:
                self._idle.append(conn)
            self._cond.notify()

    def close(self):
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            _discard(conn)

    def transaction(self, step):
        return _Transaction(self, step)


class _Transaction(object):
    """``with pool.transaction(step) as cur``: commit on success, map errors."""

    def __init__(self, pool, step):
        self._pool = pool
        self._step = step
        self._conn = None
        self._cursor = None

    def __enter__(self):
        self._conn = self._pool.acquire(self._step)
        try:
            self._cursor = self._conn.cursor()
        except Exception as exc:  # pylint: disable=broad-except
            self._pool.release(self._conn, broken=True)
            raise map_pg_error(exc, self._pool.dsn, self._step)
        return self._cursor

    def __exit__(self, exc_type, exc, tb):
        conn, self._conn = self._conn, None
        broken = False
        try:
            try:
                self._cursor.close()
            except Exception:  # pylint: disable=broad-except
                pass
            if exc_type is None:
                try:
                    conn.commit()
                except Exception as commit_exc:  # pylint: disable=broad-except
                    broken = True
                    raise map_pg_error(commit_exc, self._pool.dsn, self._step)
                return False
            broken = bool(conn.closed) or (HAS_PSYCOPG2 and isinstance(
                exc, (psycopg2.OperationalError, psycopg2.InterfaceError)))
            if not broken:
                try:
                    conn.rollback()
                except Exception:  # pylint: disable=broad-except
                    broken = True
            if HAS_PSYCOPG2 and isinstance(exc, psycopg2.Error):
                raise map_pg_error(exc, self._pool.dsn, self._step)
            return False
        finally:
            self._pool.release(conn, broken=broken)


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------

def split_key(key, driver='db2'):
    """``userId/bucket/archiveId`` -> the three parts (ConfigError otherwise)."""
    parts = key.split('/', 2) if isinstance(key, str) else []
    if len(parts) != 3 or not all(parts):
        raise errors.ConfigError("key '%s' is not userId/bucket/archiveId: the %s driver stores keys with at least "
                                 "two '/' and non-empty parts" % (key, driver), step='key', key=key)
    return parts[0], parts[1], parts[2]


def _prefix_conditions(prefix, columns):
    """SQL conditions selecting keys that start with ``prefix``.

    Whole components become equality tests (index friendly), the last
    partial component a ``left(col, n) = value`` test (no LIKE escaping).
    """
    conds = []
    params = []
    if not prefix:
        return conds, params
    parts = prefix.split('/', 2)
    for index, part in enumerate(parts):
        column = sql.Identifier(columns[index])
        if index < len(parts) - 1:
            conds.append(sql.SQL('{} = %s').format(column))
            params.append(part)
        elif part:
            conds.append(sql.SQL('left({}, %s) = %s').format(column))
            params.extend([len(part), part])
    return conds, params


# ---------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------

class _ByteaReader(object):
    """Streams one bytea value in slices from a snapshot transaction.

    Holds a pooled connection in a REPEATABLE READ READ ONLY transaction
    so every slice comes from the same row version; the connection goes
    back to the pool at end of stream or on ``close()``.
    """

    def __init__(self, store, conn, ident, length, chunk=READ_CHUNK):
        self._store = store
        self._conn = conn
        self._ident = ident  # (userId, bucket, key)
        self._length = length
        self._offset = 0
        self._chunk = chunk
        self._buffer = b''

    def _fetch(self):
        count = min(self._chunk, self._length - self._offset)
        try:
            with self._conn.cursor() as cur:
                cur.execute(
                    'SELECT substring(content FROM %s FOR %s) FROM object_storage '
                    'WHERE "userId" = %s AND bucket = %s AND key = %s AND version = %s',
                    (self._offset + 1, count) + self._ident + ('',))
                row = cur.fetchone()
        except Exception as exc:  # pylint: disable=broad-except
            self._finish(broken=True)
            raise map_pg_error(exc, self._store.dsn, 'read')
        data = bytes(row[0]) if row and row[0] is not None else b''
        if len(data) != count:
            self._finish()
            raise errors.IntegrityError('object %s changed or vanished while it was read'
                                        % '/'.join(self._ident), step='read', key='/'.join(self._ident))
        self._offset += count
        return data

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self._buffer]
            self._buffer = b''
            while self._conn is not None and self._offset < self._length:
                parts.append(self._fetch())
            self._finish()
            return b''.join(parts)
        while len(self._buffer) < size and self._offset < self._length:
            self._buffer += self._fetch()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        if self._offset >= self._length and not self._buffer:
            self._finish()
        return data

    def _finish(self, broken=False):
        conn, self._conn = self._conn, None
        if conn is not None:
            self._store.pool.release(conn, broken=broken)

    def close(self):
        self._finish()
        self._buffer = b''

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _read_all(stream, size, key):
    """Read a whole stream (DB rows are whole values), checking ``size``."""
    data = bytearray()
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            break
        data.extend(chunk)
    if size is not None and len(data) != size:
        raise errors.IntegrityError('object %s: read %d bytes but %d were announced' % (key, len(data), size),
                                    step='write', key=key)
    return data  # a bytearray: psycopg2 adapts it as bytea without another copy


def anchore_text_encode(data):
    """What anchore-engine's legacy ``db`` driver stores for ``data``:
    ``(jsondata, b64_encoded)`` -- UTF-8 text when the bytes decode, else
    ``base64.encodebytes`` (LegacyDbDriver._encode). Text containing NUL,
    which a PostgreSQL text column cannot hold, is base64-encoded too.
    """
    try:
        text = bytes(data).decode('utf-8')
        if '\x00' not in text:
            return text, False
    except UnicodeDecodeError:
        pass
    return base64.encodebytes(bytes(data)).decode('ascii'), True


def anchore_text_decode(jsondata, b64_encoded):
    """The bytes anchore-engine's legacy ``db`` driver returns for a row."""
    if jsondata is None:
        return b''
    if b64_encoded and jsondata:
        return base64.decodebytes(jsondata.encode('ascii'))
    return jsondata.encode('utf-8')


# ---------------------------------------------------------------------------
# Stores
# ---------------------------------------------------------------------------

class _PgStore(ObjectStore):
    """Shared plumbing of the two PostgreSQL drivers."""

    table = None
    key_columns = None
    supports_retention = False

    def __init__(self, spec, db_connect, pool=None):
        super(_PgStore, self).__init__(spec)
        _need_psycopg2()
        self.dsn = normalize_dsn(db_connect)
        self.pool = pool or PgPool(self.dsn)

    def _error(self, exc, step, key=None):
        err = map_pg_error(exc, self.dsn, step)
        if key is not None and err.key is None:
            err.key = key
        return err

    def close(self):
        self.pool.close()

    def describe(self):
        return '%s (PostgreSQL table %s at %s)' % (self.driver, self.table, _where(self.dsn))

    def check_access(self, create_bucket=False):
        """Connect, then confirm the table exists and is usable."""
        step = 'check_access'
        with self.pool.transaction(step) as cur:
            cur.execute('SELECT current_database(), current_user, to_regclass(%s) IS NOT NULL',
                        (self.table,))
            database, user, exists = cur.fetchone()
            if not exists:
                raise errors.BucketMissingError(
                    'table %s does not exist in database %s: is this the application\'s database? '
                    '(storeshift does not create application tables)' % (self.table, database), step=step)
            # Only reading is required here: a source that is only verified needs no more. Missing
            # INSERT/UPDATE/DELETE rights surface as AccessDeniedError when a write is attempted.
            cur.execute("SELECT has_table_privilege(%s, 'SELECT')", (self.table,))
            if not cur.fetchone()[0]:
                raise errors.AccessDeniedError('PostgreSQL user %s may not SELECT from table %s in database %s'
                                               % (user, self.table, database), step=step)
            cur.execute(sql.SQL('SELECT 1 FROM {} LIMIT 1').format(sql.Identifier(self.table)))

    # listing ---------------------------------------------------------------
    def _size_expr(self):
        raise NotImplementedError

    def _extra_where(self):
        return [], []

    def _inline_columns(self, limit):
        """SQL for the columns that carry an object's stored bytes when its size is at most ``limit``."""
        raise NotImplementedError

    def _inline_value(self, values):
        """The stored bytes from the values of ``_inline_columns`` (None: not fetched, open() instead)."""
        raise NotImplementedError

    def list(self, prefix=''):
        return self._list(prefix, 0)

    def list_with_content(self, prefix='', limit=0):
        return self._list(prefix, int(limit or 0))

    def _list(self, prefix, inline_limit):
        columns = self.key_columns
        idents = [sql.Identifier(c) for c in columns]
        conds, params = _prefix_conditions(prefix, columns)
        extra_conds, extra_params = self._extra_where()
        order = sql.SQL(', ').join(idents)
        selected = [order, self._size_expr()]
        page_size = PAGE_SIZE
        if inline_limit > 0:
            selected.extend(self._inline_columns(inline_limit))
            # Pages with content stay small enough to bound memory whatever the objects' sizes.
            page_size = max(1, min(PAGE_SIZE, INLINE_PAGE_BYTES // inline_limit))
        last = None
        while True:
            where = list(conds) + list(extra_conds)
            args = list(params) + list(extra_params)
            if last is not None:
                where.append(sql.SQL('({}) > (%s, %s, %s)').format(order))
                args.extend(last)
            query = sql.SQL('SELECT {cols} FROM {table}{where} ORDER BY {order} LIMIT %s').format(
                cols=sql.SQL(', ').join(selected), table=sql.Identifier(self.table),
                where=(sql.SQL(' WHERE ') + sql.SQL(' AND ').join(where)) if where else sql.SQL(''),
                order=order)
            args.append(page_size)
            with self.pool.transaction('list') as cur:
                cur.execute(query, args)
                rows = cur.fetchall()
            for row in rows:
                content = self._inline_value(row[4:]) if inline_limit > 0 else None
                yield ObjectInfo('%s/%s/%s' % (row[0], row[1], row[2]), size=int(row[3] or 0), content=content)
            if len(rows) < page_size:
                return
            last = rows[-1][:3]
            rows = None  # the page's content goes before the next one comes

    def stat(self, key):
        parts = split_key(key, self.driver)
        conds = [sql.SQL('{} = %s').format(sql.Identifier(c)) for c in self.key_columns]
        extra_conds, extra_params = self._extra_where()
        query = sql.SQL('SELECT {size} FROM {table} WHERE {where}').format(
            size=self._size_expr(), table=sql.Identifier(self.table),
            where=sql.SQL(' AND ').join(conds + extra_conds))
        with self.pool.transaction('stat') as cur:
            cur.execute(query, list(parts) + list(extra_params))
            row = cur.fetchone()
        if row is None:
            return None
        return ObjectInfo(key, size=int(row[0] or 0))

    def delete(self, key):
        parts = split_key(key, self.driver)
        conds = [sql.SQL('{} = %s').format(sql.Identifier(c)) for c in self.key_columns]
        extra_conds, extra_params = self._extra_where()
        query = sql.SQL('DELETE FROM {table} WHERE {where}').format(
            table=sql.Identifier(self.table), where=sql.SQL(' AND ').join(conds + extra_conds))
        with self.pool.transaction('delete') as cur:
            cur.execute(query, list(parts) + list(extra_params))


class Db2Store(_PgStore):
    """Anchore ``db2``: table ``object_storage``, content in a bytea column."""

    driver = 'db2'
    table = 'object_storage'
    key_columns = ('userId', 'bucket', 'key')

    def _size_expr(self):
        # octet_length of a TOASTed bytea reads the header only.
        return sql.SQL('coalesce(octet_length(content), 0)')

    def _extra_where(self):
        return [sql.SQL('version = %s')], ['']

    def _inline_columns(self, limit):
        return [sql.SQL('CASE WHEN octet_length(content) <= {} THEN content END').format(sql.Literal(limit))]

    def _inline_value(self, values):
        return bytes(values[0]) if values[0] is not None else None

    def open(self, key):
        user, bucket, name = split_key(key, self.driver)
        conn = self.pool.acquire('read')
        # Small values (most of Anchore's documents) come whole with their length, in one statement and one
        # round trip (autocommit: no BEGIN / ROLLBACK); larger ones stream in slices from a snapshot below.
        try:
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute('SELECT coalesce(octet_length(content), 0), CASE WHEN octet_length(content) <= %s '
                                'THEN content END FROM object_storage '
                                'WHERE "userId" = %s AND bucket = %s AND key = %s AND version = %s',
                                (READ_CHUNK, user, bucket, name, ''))
                    row = cur.fetchone()
            finally:
                conn.autocommit = False
        except Exception as exc:  # pylint: disable=broad-except
            self.pool.release(conn, broken=HAS_PSYCOPG2 and isinstance(exc, (psycopg2.OperationalError,
                                                                             psycopg2.InterfaceError)))
            raise self._error(exc, 'read', key)
        if row is None:
            self.pool.release(conn)
            raise errors.ObjectMissingError('object %s does not exist in table object_storage' % key,
                                            step='read', key=key)
        if int(row[0]) <= READ_CHUNK:
            self.pool.release(conn)
            return io.BytesIO(bytes(row[1]) if row[1] is not None else b'')
        try:
            with conn.cursor() as cur:
                cur.execute('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY')
                cur.execute('SELECT coalesce(octet_length(content), 0) FROM object_storage '
                            'WHERE "userId" = %s AND bucket = %s AND key = %s AND version = %s',
                            (user, bucket, name, ''))
                row = cur.fetchone()
        except Exception as exc:  # pylint: disable=broad-except
            self.pool.release(conn, broken=HAS_PSYCOPG2 and isinstance(exc, psycopg2.OperationalError))
            raise self._error(exc, 'read', key)
        if row is None:
            self.pool.release(conn)
            raise errors.ObjectMissingError('object %s does not exist in table object_storage' % key,
                                            step='read', key=key)
        reader = _ByteaReader(self, conn, (user, bucket, name), int(row[0]))
        if int(row[0]) == 0:
            reader.close()
        return reader

    def put(self, key, stream, size=None, immutable=False, retain_seconds=None, metadata=None, source_md5=None):
        user, bucket, name = split_key(key, self.driver)
        data = _read_all(stream, size, key)
        meta = json.dumps(metadata) if metadata else None
        now = _now()
        with self.pool.transaction('write') as cur:
            cur.execute(
                'INSERT INTO object_storage ("userId", bucket, key, version, object_metadata, content, '
                'created_at, last_updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) '
                'ON CONFLICT ("userId", bucket, key, version) DO UPDATE SET content = EXCLUDED.content, '
                'object_metadata = coalesce(EXCLUDED.object_metadata, object_storage.object_metadata), '
                'last_updated = EXCLUDED.last_updated',
                (user, bucket, name, '', meta, psycopg2.Binary(data), now, now))


class DbStore(_PgStore):
    """Anchore legacy ``db``: table ``archive_document``, text + base64 flag."""

    driver = 'db'
    table = 'archive_document'
    key_columns = ('userId', 'bucket', 'archiveId')

    def _size_expr(self):
        return sql.SQL("CASE WHEN jsondata IS NULL THEN 0 "
                       "WHEN b64_encoded AND jsondata <> '' THEN octet_length(decode(jsondata, 'base64')) "
                       "ELSE octet_length(jsondata) END")

    def _inline_columns(self, limit):
        # The text is at most 4/3 of the bytes it encodes: the bound keeps big rows out of the page.
        return [sql.SQL('CASE WHEN octet_length(jsondata) <= {} THEN jsondata END').format(
            sql.Literal(limit * 4 // 3 + 4)), sql.SQL('b64_encoded')]

    def _inline_value(self, values):
        if values[0] is None:
            return None
        try:
            return anchore_text_decode(values[0], values[1])
        except (ValueError, TypeError):
            return None  # not valid base64: open() reads it again and names the error

    def open(self, key):
        user, bucket, name = split_key(key, self.driver)
        with self.pool.transaction('read') as cur:
            cur.execute('SELECT jsondata, b64_encoded FROM archive_document '
                        'WHERE "userId" = %s AND bucket = %s AND "archiveId" = %s LIMIT 1',
                        (user, bucket, name))
            row = cur.fetchone()
        if row is None:
            raise errors.ObjectMissingError('object %s does not exist in table archive_document' % key,
                                            step='read', key=key)
        try:
            return io.BytesIO(anchore_text_decode(row[0], row[1]))
        except (ValueError, TypeError) as exc:
            raise errors.IntegrityError('object %s: archive_document.jsondata is flagged b64_encoded but is not '
                                        'valid base64 (%s)' % (key, exc), step='read', key=key)

    def put(self, key, stream, size=None, immutable=False, retain_seconds=None, metadata=None, source_md5=None):
        user, bucket, name = split_key(key, self.driver)
        data = _read_all(stream, size, key)
        text, is_b64 = anchore_text_encode(data)
        now = _now()
        with self.pool.transaction('write') as cur:
            cur.execute(
                'INSERT INTO archive_document (bucket, "archiveId", "userId", "documentName", jsondata, b64_encoded, '
                'created_at, last_updated, record_state_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) '
                'ON CONFLICT (bucket, "archiveId", "userId", "documentName") DO UPDATE SET '
                'jsondata = EXCLUDED.jsondata, b64_encoded = EXCLUDED.b64_encoded, '
                'last_updated = EXCLUDED.last_updated',
                (bucket, name, user, name + '.json', text, is_b64, now, now, 'active'))


def open_db_store(spec, db_connect):
    """The PostgreSQL store for ``spec`` (driver ``db`` or ``db2``)."""
    if spec.driver == 'db2':
        return Db2Store(spec, db_connect)
    if spec.driver == 'db':
        return DbStore(spec, db_connect)
    raise errors.ConfigError("driver '%s' is not a PostgreSQL driver (db, db2)" % spec.driver, step='config')
