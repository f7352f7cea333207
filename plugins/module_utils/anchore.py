# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Anchore's ``archive_metadata`` table and its object layout.

Facts from the anchore-engine sources (``anchore_engine/subsys/object_store``
``manager.py`` and ``drivers/{rdbms,s3,filesystem}.py``,
``anchore_engine/db/entities/catalog.py``):

* ``archive_metadata`` is the authoritative pointer: PK (bucket,
  "archiveId", "userId", "documentName" = archiveId + '.json'),
  ``content_url``, ``is_compressed``, ``digest``, ``size``.
* ``ObjectStorageManager.put``: the payload is zlib-compressed (level 3)
  only if ``compression.enabled`` is true, the driver supports compressed
  data (every driver but the legacy ``db`` one) and ``len(data) >
  min_size_kbytes * 1024``; ``digest`` is ``md5(stored bytes).hexdigest()``
  and ``size`` the stored length -- i.e. both describe the *compressed*
  bytes when ``is_compressed``.
* ``ObjectStorageManager.get``: MD5 of the stored bytes is checked when a
  digest is recorded, then the bytes are decompressed when flagged.
* URLs: ``db://u/b/id``, ``db2://u/b/id``, ``s3://<bucket>/<prefix>u/b/id``
  (prefix concatenated), ``file://<archive_data_dir>/<md5(u)>/<b>/
  <md5(id)[:2]>/<md5(id)>.json``. ``rustfs://<bucket>/<prefix><key>`` is
  storeshift's own (not an Anchore driver) for objects moved to RustFS.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import time

from ansible_collections.storeshift.objstore.plugins.module_utils import errors
from ansible_collections.storeshift.objstore.plugins.module_utils.codec import (
    ANCHORE_ZLIB_LEVEL, CHUNK, ChunkedCompressor, HashingReader, PeekReader, ZlibReader)
from ansible_collections.storeshift.objstore.plugins.module_utils.store_db import (
    HAS_PSYCOPG2, PgPool, dsn_params, normalize_dsn)

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - bare targets only
    sql = None

TABLE = 'archive_metadata'
SCHEMES = {'db': 'db', 'db2': 'db2', 's3': 's3', 'localfs': 'file', 'rustfs': 'rustfs'}
# LegacyDbDriver.__supports_compressed_data__ = False; every other driver inherits True.
COMPRESSING_DRIVERS = frozenset(('db2', 's3', 'localfs', 'rustfs'))
PK_COLUMNS = ('bucket', 'archiveId', 'userId', 'documentName')
_COLUMNS = ('userId', 'bucket', 'archiveId', 'documentName', 'content_url', 'is_compressed', 'digest', 'size')


def _md5(data=b''):
    try:
        return hashlib.md5(data, usedforsecurity=False)
    except TypeError:  # pragma: no cover - Python < 3.9
        return hashlib.md5(data)


def _md5_text(text):
    return _md5(text.encode('utf-8')).hexdigest()


def document_name(archive_id):
    return archive_id + '.json'


# ---------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------

def anchore_location(spec, user_id, bucket, archive_id):
    """``(store_key, content_url)`` where Anchore's driver for ``spec`` keeps a document."""
    driver = spec.driver
    cfg = spec.config
    plain = '%s/%s/%s' % (user_id, bucket, archive_id)
    if driver in ('db', 'db2'):
        return plain, '%s://%s' % (driver, plain)
    if driver == 's3':
        return plain, 's3://%s/%s%s' % (cfg['bucket'], cfg.get('prefix') or '', plain)
    if driver == 'rustfs':
        return plain, 'rustfs://%s/%s%s' % (cfg['bucket'], cfg.get('prefix') or '', plain)
    if driver == 'localfs':
        filehash = _md5_text(archive_id)
        parts = (_md5_text(user_id), bucket, filehash[0:2], filehash + '.json')
        return '/'.join(parts), 'file://' + os.path.join(cfg['archive_data_dir'], *parts)
    raise errors.ConfigError("driver '%s' has no Anchore location" % driver, step='config')


def _localfs_root(spec):
    root = os.path.normpath(spec.config['archive_data_dir'])
    return root if root.endswith('/') else root + '/'


def url_prefix(spec):
    """The ``content_url`` prefix of every document held by ``spec``'s store."""
    driver = spec.driver
    cfg = spec.config
    if driver in ('db', 'db2'):
        return '%s://' % driver
    if driver in ('s3', 'rustfs'):
        return '%s://%s/%s' % (driver, cfg['bucket'], cfg.get('prefix') or '')
    if driver == 'localfs':
        return 'file://' + _localfs_root(spec)
    raise errors.ConfigError("driver '%s' has no Anchore location" % driver, step='config')


def key_from_url(spec, content_url):
    """The store key of ``content_url`` in ``spec``'s store, or None when it lives elsewhere."""
    if not content_url or not isinstance(content_url, str):
        return None
    if spec.driver == 'localfs':
        if not content_url.startswith('file://'):
            return None
        path = os.path.normpath(content_url[len('file://'):])
        root = _localfs_root(spec)
        if not path.startswith(root) or len(path) == len(root):
            return None
        return path[len(root):]
    prefix = url_prefix(spec)
    if not content_url.startswith(prefix) or len(content_url) == len(prefix):
        return None
    return content_url[len(prefix):]


def url_matches_store(content_url, spec):
    """Is the object behind ``content_url`` in ``spec``'s store (scheme and location)?"""
    return key_from_url(spec, content_url) is not None


def scheme_of(content_url):
    return content_url.split('://', 1)[0] if content_url and '://' in content_url else None


# ---------------------------------------------------------------------------
# Compression and digests
# ---------------------------------------------------------------------------

def compression_applies(spec):
    return bool(spec.compression_enabled) and spec.driver in COMPRESSING_DRIVERS


def will_compress(spec, logical_size):
    """Anchore's rule: enabled, driver supports it, and size > min_size_kbytes * 1024."""
    return compression_applies(spec) and logical_size is not None \
        and int(logical_size) > int(spec.min_size_kbytes) * 1024


def encode_for_anchore(spec, logical_stream, logical_size):
    """The bytes to store for a document in ``spec``'s store.

    Returns ``(stream, will_compress)``. ``stream`` is a
    ``codec.HashingReader(md5=True)`` over the stored bytes: once it has
    been read to the end, ``stream.md5_hexdigest()`` and ``stream.size``
    are the ``digest`` and ``size`` to record in ``archive_metadata`` and
    ``will_compress`` is its ``is_compressed``. ``logical_size`` may be
    None: the decision is then made by reading ahead at most
    ``min_size_kbytes * 1024 + 1`` bytes.
    """
    if not compression_applies(spec):
        return HashingReader(logical_stream, md5=True), False
    threshold = int(spec.min_size_kbytes) * 1024
    stream = logical_stream
    if logical_size is None:
        stream = PeekReader(logical_stream)
        logical_size = len(stream.peek(threshold + 1))
    if int(logical_size) > threshold:
        return HashingReader(ChunkedCompressor(stream, 'zlib', ANCHORE_ZLIB_LEVEL), md5=True), True
    return HashingReader(stream, md5=True), False


class DigestCheckingReader(object):
    """Passes stored bytes through; at end of stream compares MD5 and size
    with what ``archive_metadata`` recorded and raises IntegrityError."""

    def __init__(self, raw, expected_md5, expected_size, ident):
        self._raw = raw
        self._expected_md5 = (expected_md5 or '').strip().lower() or None
        self._expected_size = expected_size
        self._ident = ident
        self._md5 = _md5()
        self.size = 0
        self.done = False
        self.error = None

    def _verify(self):
        self.done = True
        found = self._md5.hexdigest()
        if self._expected_md5 and found != self._expected_md5:
            self.error = errors.IntegrityError(
                'digest mismatch for %s: archive_metadata records MD5 %s, the stored bytes have %s (%d bytes)'
                % (self._ident, self._expected_md5, found, self.size), step='read', key=self._ident)
        elif self._expected_size is not None and int(self._expected_size) != self.size:
            self.error = errors.IntegrityError(
                'size mismatch for %s: archive_metadata records %d bytes, the store holds %d'
                % (self._ident, int(self._expected_size), self.size), step='read', key=self._ident)
        if self.error is not None:
            raise self.error

    def read(self, size=-1):
        if self.error is not None:
            raise self.error
        if self.done:
            return b''
        if size is None or size < 0:
            data = self._raw.read()
            self._md5.update(data)
            self.size += len(data)
            self._verify()
            return data
        data = self._raw.read(size)
        if data:
            self._md5.update(data)
            self.size += len(data)
        else:
            self._verify()
        return data

    def md5_hexdigest(self):
        return self._md5.hexdigest()

    def close(self):
        close = getattr(self._raw, 'close', None)
        if close:
            close()


class _CheckedZlibReader(object):
    """ZlibReader over a DigestCheckingReader: when the zlib data is corrupt,
    a digest mismatch (the likelier story) is reported in preference."""

    def __init__(self, checked):
        self._checked = checked
        self._inner = ZlibReader(checked)

    def read(self, size=-1):
        try:
            return self._inner.read(size)
        except errors.IntegrityError:
            if self._checked.error is not None:
                raise self._checked.error
            try:
                while self._checked.read(CHUNK):
                    pass
            except errors.IntegrityError:
                raise self._checked.error or errors.IntegrityError('stored bytes unreadable', step='read')
            raise

    def close(self):
        self._inner.close()


def open_for_anchore(store, doc):
    """The logical content of ``doc`` read from ``store`` (its current location).

    The stored bytes are checked against ``doc.digest`` / ``doc.size`` at end
    of stream (IntegrityError "digest mismatch for u/b/id") and
    zlib-decompressed when ``doc.is_compressed``.
    """
    key = key_from_url(store.spec, doc.content_url)
    if key is None:
        raise errors.ConfigError('content_url %s of document %s is not in store %s'
                                 % (doc.content_url, doc.ident, store.describe()), step='read', key=doc.ident)
    raw = store.open(key)
    checked = DigestCheckingReader(raw, doc.digest, doc.size, doc.ident)
    if doc.is_compressed:
        return _CheckedZlibReader(checked)
    return checked


# ---------------------------------------------------------------------------
# The catalog table
# ---------------------------------------------------------------------------

class AnchoreDocument(object):
    """One ``archive_metadata`` row (the fields storeshift uses)."""

    __slots__ = ('user_id', 'bucket', 'archive_id', 'document_name', 'content_url', 'is_compressed', 'digest', 'size')

    def __init__(self, user_id, bucket, archive_id, document_name=None, content_url=None, is_compressed=False,
                 digest=None, size=None):
        self.user_id = user_id
        self.bucket = bucket
        self.archive_id = archive_id
        self.document_name = document_name if document_name is not None else archive_id + '.json'
        self.content_url = content_url
        self.is_compressed = bool(is_compressed)
        self.digest = digest
        self.size = int(size) if size is not None else None

    @property
    def ident(self):
        return '%s/%s/%s' % (self.user_id, self.bucket, self.archive_id)

    def to_dict(self):
        return dict((name, getattr(self, name)) for name in self.__slots__)

    def __repr__(self):
        return 'AnchoreDocument(%s -> %s)' % (self.ident, self.content_url)

    def __eq__(self, other):
        return isinstance(other, AnchoreDocument) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.user_id, self.bucket, self.archive_id, self.document_name))


def _doc(row):
    return AnchoreDocument(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])


class AnchoreCatalog(object):
    """Reads and repoints ``archive_metadata`` rows (thread safe)."""

    def __init__(self, dsn, maxconn=16):
        if not HAS_PSYCOPG2:
            raise errors.MissingLibraryError('psycopg2')
        self.dsn = normalize_dsn(dsn)
        self.pool = PgPool(self.dsn, maxconn=maxconn)

    def _missing(self, step):
        dbname = dsn_params(self.dsn).get('dbname') or 'the database named by db_connect'
        return errors.BucketMissingError(
            'table %s does not exist in database %s: is db_connect pointing at Anchore\'s database? '
            '(storeshift does not create application tables)' % (TABLE, dbname), step=step)

    def _query(self, step, query, args, fetch='all'):
        try:
            with self.pool.transaction(step) as cur:
                cur.execute(query, args)
                if fetch == 'all':
                    return cur.fetchall()
                if fetch == 'one':
                    return cur.fetchone()
                return cur.rowcount
        except errors.BucketMissingError:
            raise self._missing(step)

    def check_access(self):
        """Connect and confirm ``archive_metadata`` exists and may be updated."""
        row = self._query('check_access', "SELECT to_regclass(%s) IS NOT NULL, current_database(), "
                          "current_user", (TABLE,), fetch='one')
        if not row[0]:
            raise errors.BucketMissingError(
                'table %s does not exist in database %s: is db_connect pointing at Anchore\'s database? '
                '(storeshift does not create application tables)' % (TABLE, row[1]), step='check_access')
        rights = self._query('check_access', "SELECT has_table_privilege(%s, 'SELECT'), "
                             "has_table_privilege(%s, 'UPDATE')", (TABLE, TABLE), fetch='one')
        if not all(rights):
            raise errors.AccessDeniedError('PostgreSQL user %s may not SELECT and UPDATE %s in database %s'
                                           % (row[2], TABLE, row[1]), step='check_access')

    @staticmethod
    def _filters(source_spec, buckets):
        prefix = url_prefix(source_spec)
        conds = [sql.SQL('left(content_url, %s) = %s')]
        args = [len(prefix), prefix]
        if buckets:
            if isinstance(buckets, str):
                buckets = [buckets]
            conds.append(sql.SQL('bucket = ANY(%s)'))
            args.append([str(b) for b in buckets])
        return conds, args

    def count_documents(self, source_spec, buckets=None):
        """How many documents ``iter_documents`` would yield right now."""
        conds, args = self._filters(source_spec, buckets)
        query = sql.SQL('SELECT count(*) FROM {} WHERE ').format(sql.Identifier(TABLE)) + sql.SQL(' AND ').join(conds)
        return int(self._query('count', query, args, fetch='one')[0])

    def iter_documents(self, source_spec, buckets=None, batch=1000):
        """Documents whose content_url is in ``source_spec``'s store, in PK order.

        Keyset pagination: one short query per ``batch`` rows, nothing held
        open between pages; rows repointed meanwhile simply stop matching.
        For localfs the selection is by path prefix; rows whose path is not
        normalised (``//``) are matched by ``url_matches_store`` only.
        """
        batch = max(1, int(batch))
        base_conds, base_args = self._filters(source_spec, buckets)
        cols = sql.SQL(', ').join(sql.Identifier(c) for c in _COLUMNS)
        pk = sql.SQL(', ').join(sql.Identifier(c) for c in PK_COLUMNS)
        last = None
        while True:
            conds, args = list(base_conds), list(base_args)
            if last is not None:
                conds.append(sql.SQL('({}) > (%s, %s, %s, %s)').format(pk))
                args.extend(last)
            query = sql.SQL('SELECT {cols} FROM {table} WHERE {where} ORDER BY {pk} LIMIT %s').format(
                cols=cols, table=sql.Identifier(TABLE), where=sql.SQL(' AND ').join(conds), pk=pk)
            args.append(batch)
            rows = self._query('list', query, args)
            for row in rows:
                yield _doc(row)
            if len(rows) < batch:
                return
            tail = rows[-1]
            last = (tail[1], tail[2], tail[0], tail[3])  # bucket, archiveId, userId, documentName

    def get_document(self, user_id, bucket, archive_id):
        query = sql.SQL('SELECT {cols} FROM {table} WHERE "userId" = %s AND bucket = %s AND "archiveId" = %s '
                        'ORDER BY "documentName" LIMIT 1').format(
            cols=sql.SQL(', ').join(sql.Identifier(c) for c in _COLUMNS), table=sql.Identifier(TABLE))
        row = self._query('read', query, (user_id, bucket, archive_id), fetch='one')
        return _doc(row) if row else None

    def repoint(self, doc, new_url, is_compressed, digest, size):
        """Point ``doc`` at its new copy, in its own transaction.

        Guarded by the old ``content_url``: returns False (and changes
        nothing) when the row was changed or removed meanwhile.
        """
        query = ('UPDATE archive_metadata SET content_url = %s, is_compressed = %s, digest = %s, size = %s, '
                 'last_updated = %s WHERE "userId" = %s AND bucket = %s AND "archiveId" = %s '
                 'AND "documentName" = %s AND content_url = %s')
        count = self._query('repoint', query,
                            (new_url, bool(is_compressed), digest, int(size) if size is not None else None,
                             int(time.time()), doc.user_id, doc.bucket, doc.archive_id, doc.document_name,
                             doc.content_url), fetch='count')
        return count == 1

    def close(self):
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
