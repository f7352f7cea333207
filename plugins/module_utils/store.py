# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store interface every driver implements, and the factory.

Keys are ``/``-separated strings relative to the store's root (its bucket
and prefix for s3 and rustfs, ``archive_data_dir`` for localfs, the
``userId/bucket/key`` triple for db and db2). Streams carry the *stored*
bytes; ``codec.decode_stream`` / ``codec.encode_stream`` turn them into
logical content according to the store's compression settings.

Thread safety: one store instance is shared by the engine's workers; every
driver must allow concurrent calls (per-thread connections where the
underlying client is not thread safe).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError


# A listing page that carries objects' content (list_with_content) holds at most about this many bytes of it.
INLINE_PAGE_BYTES = 8 * 1024 * 1024


class ObjectInfo(object):
    """What a listing or stat returns for one object."""

    __slots__ = ('key', 'size', 'etag', 'sha256', 'metadata', 'content')

    def __init__(self, key, size=None, etag=None, sha256=None, metadata=None, content=None):
        self.key = key
        self.size = size          # stored size in bytes, None when the listing cannot tell
        self.etag = etag          # backend checksum as reported (never trusted as content digest)
        self.sha256 = sha256      # SHA-256 of the stored bytes when the backend records it
        self.metadata = metadata or {}
        self.content = content    # the stored bytes, from list_with_content only (None: open() them)

    def __repr__(self):
        return 'ObjectInfo(%r, size=%r)' % (self.key, self.size)

    def __eq__(self, other):
        return isinstance(other, ObjectInfo) and (self.key, self.size) == (other.key, other.size)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.key, self.size))


class ObjectStore(object):
    """Base class. Drivers override every method that raises NotImplementedError."""

    driver = None
    # True when the backend can keep objects immutable / retained (RustFS API, S3 Object Lock).
    supports_retention = False

    def __init__(self, spec):
        self.spec = spec

    # -- lifecycle --------------------------------------------------------
    def check_access(self, create_bucket=False):
        """Confirm the store is reachable and its bucket/table/dir exists.

        Raises a collection error naming the cause. With ``create_bucket``
        a missing bucket is created where the backend allows it.
        """
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- objects ----------------------------------------------------------
    def list(self, prefix=''):
        """Yield ObjectInfo for every key starting with ``prefix``, page by page."""
        raise NotImplementedError

    def list_with_content(self, prefix='', limit=0):
        """Like ``list``; a backend that can fetch small objects with the listing itself (one query per
        page instead of one per object: the database drivers) sets ``content`` (the stored bytes) on
        those of at most ``limit`` bytes. Others just list."""
        return self.list(prefix)

    def stat(self, key):
        """ObjectInfo for ``key``, or None when it does not exist."""
        raise NotImplementedError

    def exists(self, key):
        return self.stat(key) is not None

    def open(self, key):
        """A readable stream of the stored bytes; ObjectMissingError when absent."""
        raise NotImplementedError

    def put(self, key, stream, size=None, immutable=False, retain_seconds=None, metadata=None, source_md5=None):
        """Store ``stream`` (stored bytes) under ``key``; ``size`` may be None (unknown).

        ``source_md5``: the MD5 (hex) the source recorded for exactly these bytes, when it has one; a
        driver may check the write against it (S3: the ETag of what the server stored must be that MD5).

        Returns the SHA-256 (hex) of the stored bytes when the backend itself checked them on receipt
        against a digest sent with the request (S3 checksums), else None: the engine then reads back.
        """
        raise NotImplementedError

    def delete(self, key):
        """Delete ``key``; deleting a missing key is not an error."""
        raise NotImplementedError

    def describe(self):
        return self.spec.describe()


def open_store(spec, db_connect=None):
    """Instantiate the driver for ``spec`` (a StoreSpec)."""
    driver = spec.driver
    if driver == 's3':
        from ansible_collections.storeshift.objstore.plugins.module_utils.store_s3 import S3Store
        return S3Store(spec)
    if driver == 'rustfs':
        from ansible_collections.storeshift.objstore.plugins.module_utils.store_rustfs import RustfsStore
        return RustfsStore(spec)
    if driver == 'localfs':
        from ansible_collections.storeshift.objstore.plugins.module_utils.store_localfs import LocalfsStore
        return LocalfsStore(spec)
    if driver in ('db', 'db2'):
        if not db_connect:
            raise ConfigError('the %s driver needs db_connect (a libpq DSN or postgresql:// URL)' % driver,
                              step='config')
        from ansible_collections.storeshift.objstore.plugins.module_utils.store_db import open_db_store
        return open_db_store(spec, db_connect)
    raise ConfigError("unknown storage driver '%s'" % driver, step='config')
