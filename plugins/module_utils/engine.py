# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration engine: list, shard, copy, verify, repoint, delete; recorded in the ledger.

One producer lists the source page by page into a bounded queue; ``workers``
threads copy; one writer thread batches results into the ledger at least
every second (progress for ``objstore_migration_info``). Memory stays
bounded: a page of keys, the queue, and per worker either one small object
(at most ``SMALL_OBJECT`` bytes) or a streaming chunk.

Safety rules:
- an object counts as copied only after the destination was read back and
  its logical SHA-256 matched what was read from the source;
- ``delete_source`` removes a source object only after that, and (anchore
  layout) after the application's row points at the destination;
- an object that fails does not stop the run, but the run ends ``failed``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import hashlib
import io
import os
import random
import signal
import threading
import time

try:
    import queue
except ImportError:  # pragma: no cover - Python 2 is not supported, keeps sanity's compile test quiet
    import Queue as queue  # noqa

from ansible_collections.storeshift.objstore.plugins.module_utils import codec
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import (
    ConfigError,
    ConnectError,
    IntegrityError,
    ObjectMissingError,
    ObjstoreError,
    TransientError,
    scrub,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.ledger import (
    DONE_STATES,
    Ledger,
    new_migration_id,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.store import INLINE_PAGE_BYTES, open_store

SMALL_OBJECT = 1024 * 1024
# Memory for objects copied as streams (larger than SMALL_OBJECT): an upload holds what the destination
# driver's ``stream_memory(size)`` says (a streamed PUT a chunk or two; a multipart upload a few parts: the
# one being sent, the next one being read, its read buffer; 3 parts of DEFAULT_PART when the driver does
# not say), and uploads wait for room in LARGE_MEMORY_BUDGET, whatever the number of workers.
LARGE_MEMORY_BUDGET = 64 * 1024 * 1024
# Large objects are bound by the servers' bandwidth, not by latency: beyond a few streams at once they
# only compete (measured on the test stack: 4 streams copy 40 x 32 MiB about twice as fast as 21).
LARGE_STREAMS = 6
DEFAULT_PART = 8 * 1024 * 1024
# Crash testing: STORESHIFT_CRASH_AT=<point>:<n> makes the process SIGKILL itself the n-th time it
# reaches <point> (listing, put, repoint, delete). Used by the test suite to prove resume safety at
# exact moments; unset in normal use.
CRASH_ENV = 'STORESHIFT_CRASH_AT'
CRASH_POINTS = ('listing', 'put', 'repoint', 'delete')
PAGE = 1000
# Objects up to INLINE_LIMIT bytes come with the listing where the source can send them so (the database
# drivers: one query per page instead of one per object); an engine page then holds at most about
# INLINE_PAGE_BYTES (store.py) of such content, and the work queue workers * 4 objects.
INLINE_LIMIT = 64 * 1024
FLUSH_SECONDS = 0.5
RETRY_ATTEMPTS = 6
RETRY_BASE_SECONDS = 0.2
RETRY_MAX_SECONDS = 8.0
# A destination that read back (or confirmed) other bytes than were sent was written wrong on the way:
# the object is copied again from the source, up to this many attempts in all, then it fails.
WRITE_MISMATCH_ATTEMPTS = 3
# A streamed copy hands the source's plain ETag (its MD5 of the bytes) to the destination, whose MD5 of what
# it stored must be the same; after this many mismatches in a run the source's (or the destination's) ETags
# are taken not to be content MD5s (SSE-KMS, say) and the source's are no longer used.
MD5_MISMATCHES_MAX = 3
LAYOUTS = ('objects', 'anchore')
OVERWRITE = ('never', 'if_different', 'always')
# How a write is proven: ``auto`` accepts the destination server's own check of what it stored (S3
# checksums or the source's MD5, where the server is seen refusing a wrong digest), else reads back;
# ``readback`` always reads the destination object back and hashes it.
VERIFY_METHODS = ('auto', 'readback')
# Drivers whose listing is in plain key order (S3: UTF-8 binary order, which is Python's str order; localfs
# and the RustFS API walk in the same order). For them the destination is listed once alongside the source
# (a merge join) instead of one HEAD per object; see DestIndex.
LISTS_IN_KEY_ORDER = ('s3', 'localfs', 'rustfs')


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

def validate_glob(pattern, name):
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError('%s: empty glob pattern' % name, step='config')
    depth = 0
    for char in pattern:
        if char == '[':
            depth += 1
        elif char == ']' and depth:
            depth -= 1
    if depth:
        raise ConfigError("%s: invalid glob '%s' (unbalanced '[')" % (name, pattern), step='config')
    return pattern


def normalize_prefixes(prefixes):
    """Drop prefixes covered by a shorter one, so no key is listed twice."""
    prefixes = sorted(set(p or '' for p in (prefixes or [''])))
    kept = []
    for prefix in prefixes:
        if not any(prefix.startswith(k) for k in kept):
            kept.append(prefix)
    return kept or ['']


def shard_of(key, count):
    """Stable hash partition of the key space (same on every host and Python)."""
    if count <= 1:
        return 0
    digest = hashlib.sha1(key.encode('utf-8')).digest()
    return int.from_bytes(digest[:8], 'big') % count


class MigrationOptions(object):
    def __init__(self, layout='objects', buckets=None, prefixes=None, include=None, exclude=None,
                 overwrite='if_different', delete_source=False, immutable=False, retain_days=None, workers=8,
                 max_objects_per_second=None, max_bytes_per_second=None, shard_index=0, shard_count=1,
                 verify_writes=True, verify_method='auto'):
        if layout not in LAYOUTS:
            raise ConfigError("layout must be one of %s, got '%s'" % (', '.join(LAYOUTS), layout), step='config')
        if overwrite not in OVERWRITE:
            raise ConfigError("overwrite must be one of %s, got '%s'" % (', '.join(OVERWRITE), overwrite),
                              step='config')
        if workers is None or int(workers) < 1 or int(workers) > 512:
            raise ConfigError('workers must be between 1 and 512, got %s' % workers, step='config')
        if shard_count < 1:
            raise ConfigError('shard.count must be at least 1, got %d' % shard_count, step='config')
        if not 0 <= shard_index < shard_count:
            raise ConfigError('shard.index must be between 0 and shard.count - 1 (%d), got %d'
                              % (shard_count - 1, shard_index), step='config')
        for name, value in (('max_objects_per_second', max_objects_per_second),
                            ('max_bytes_per_second', max_bytes_per_second)):
            if value is not None and value <= 0:
                raise ConfigError('%s must be positive, got %s' % (name, value), step='config')
        if verify_method not in VERIFY_METHODS:
            raise ConfigError("verify_method must be one of %s, got '%s'" % (', '.join(VERIFY_METHODS), verify_method),
                              step='config')
        if retain_days is not None and retain_days <= 0:
            raise ConfigError('retain_days must be positive, got %s' % retain_days, step='config')
        self.layout = layout
        self.buckets = list(buckets) if buckets else None
        self.prefixes = normalize_prefixes(prefixes)
        self.include = [validate_glob(p, 'include') for p in (include or [])]
        self.exclude = [validate_glob(p, 'exclude') for p in (exclude or [])]
        self.overwrite = overwrite
        self.delete_source = bool(delete_source)
        self.immutable = bool(immutable)
        self.retain_days = retain_days
        self.workers = int(workers)
        self.max_objects_per_second = max_objects_per_second
        self.max_bytes_per_second = max_bytes_per_second
        self.shard_index = shard_index
        self.shard_count = shard_count
        # delete_source never trusts anything but a read-back of the destination.
        self.verify_writes = bool(verify_writes) or self.delete_source
        self.verify_method = 'readback' if self.delete_source else verify_method

    @property
    def retain_seconds(self):
        return int(self.retain_days * 86400) if self.retain_days else None

    def wants(self, key):
        if self.include and not any(fnmatch.fnmatchcase(key, p) for p in self.include):
            return False
        if self.exclude and any(fnmatch.fnmatchcase(key, p) for p in self.exclude):
            return False
        return shard_of(key, self.shard_count) == self.shard_index

    def to_dict(self):
        return {'layout': self.layout, 'buckets': self.buckets, 'prefix': self.prefixes, 'include': self.include,
                'exclude': self.exclude, 'overwrite': self.overwrite, 'delete_source': self.delete_source,
                'immutable': self.immutable, 'retain_days': self.retain_days, 'workers': self.workers,
                'max_objects_per_second': self.max_objects_per_second,
                'max_bytes_per_second': self.max_bytes_per_second,
                'verify_writes': self.verify_writes, 'verify_method': self.verify_method,
                'shard': {'index': self.shard_index, 'count': self.shard_count}}


class CrashPoints(object):
    """Reads STORESHIFT_CRASH_AT once; ``reach(point)`` kills the process when its turn comes."""

    def __init__(self, setting=None):
        self.point, self.remaining = None, 0
        self._lock = threading.Lock()
        setting = setting if setting is not None else os.environ.get(CRASH_ENV, '')
        if setting:
            point, _sep, count = setting.partition(':')
            if point not in CRASH_POINTS:
                raise ConfigError('%s: unknown crash point %s (expected one of %s)'
                                  % (CRASH_ENV, point, ', '.join(CRASH_POINTS)), step='config')
            self.point, self.remaining = point, int(count or 1)

    def reach(self, point):
        if point != self.point:
            return
        with self._lock:
            self.remaining -= 1
            if self.remaining == 0:
                os.kill(os.getpid(), signal.SIGKILL)


class MemoryBudget(object):
    """Bytes (and number of holders) that streamed copies may hold at once; ``hold(n)`` waits for room
    (one holder always fits)."""

    def __init__(self, total, holders):
        self.total = total
        self.holders = holders
        self.used = 0
        self.count = 0
        self._cond = threading.Condition()

    def hold(self, amount):
        return _Held(self, min(amount, self.total))

    def _take(self, amount):
        with self._cond:
            while self.count and (self.used + amount > self.total or self.count >= self.holders):
                self._cond.wait()
            self.used += amount
            self.count += 1

    def _give(self, amount):
        with self._cond:
            self.used -= amount
            self.count -= 1
            self._cond.notify_all()


class _Held(object):
    def __init__(self, budget, amount):
        self._budget, self._amount = budget, amount

    def __enter__(self):
        self._budget._take(self._amount)
        return self

    def __exit__(self, *exc_info):
        self._budget._give(self._amount)


class _Decision(object):
    """A value: ``value`` itself, or, with ``decide``, what ``decide()`` returns in a thread (``value`` if it
    raised); ``get()`` waits for it."""

    def __init__(self, value, decide=None):
        self._value = value
        self._thread = None
        if decide is not None:
            self._thread = threading.Thread(target=self._run, args=(decide,), name='decide')
            self._thread.daemon = True
            self._thread.start()

    def _run(self, decide):
        try:
            self._value = decide()
        except Exception:  # pylint: disable=broad-except
            pass  # the fallback (reading back) is always right

    def get(self):
        if self._thread is not None:
            self._thread.join()
        return self._value


class RateLimiter(object):
    """A token bucket shared by the workers; ``None`` rate means unlimited."""

    def __init__(self, rate):
        self.rate = float(rate) if rate else None
        self._lock = threading.Lock()
        self._next = time.time()

    def take(self, amount=1):
        if not self.rate:
            return
        with self._lock:
            now = time.time()
            start = max(now, self._next)
            self._next = start + amount / self.rate
            wait = start - now
        if wait > 0:
            time.sleep(wait)


# ---------------------------------------------------------------------------
# Work items
# ---------------------------------------------------------------------------

class WorkItem(object):
    __slots__ = ('key', 'size', 'source_key', 'dest_key', 'doc', 'dest_known', 'dest_info', 'content', 'md5_mismatched')

    def __init__(self, key, size=None, source_key=None, dest_key=None, doc=None, content=None):
        self.key = key
        self.size = size
        self.source_key = source_key if source_key is not None else key
        self.dest_key = dest_key if dest_key is not None else key
        self.doc = doc
        # The source's stored bytes when they came with the listing (taken once: a retry reads the source).
        self.content = content
        # Set by DestIndex: dest_known True means dest_info (None = absent) comes from the destination's listing.
        self.dest_known = False
        self.dest_info = None
        # The destination stored this object with another MD5 than the source's once: the next attempt does
        # not rely on the source's MD5 (it sends a SHA-256 trailer).
        self.md5_mismatched = False


class DestIndex(object):
    """What the destination holds, from its listing, merged with the source listing in key order.

    The source items arrive in ascending key order; the destination is listed lazily (page by page,
    bounded memory) under the same prefixes and advanced alongside. ``lookup`` answers
    (known, ObjectInfo or None). As soon as either listing is seen out of order, or the destination
    listing fails, every later answer is "unknown" and the engine falls back to one HEAD per object.
    """

    def __init__(self, store, prefixes):
        self._listing = self._iterate(store, prefixes)
        self._current = None
        self._exhausted = False
        self._last_source = None
        self.enabled = True

    def _iterate(self, store, prefixes):
        last = None
        for prefix in prefixes:
            for info in store.list(prefix):
                if last is not None and info.key <= last:
                    raise _OutOfOrder()
                last = info.key
                yield info

    def _advance(self):
        try:
            self._current = next(self._listing)
        except StopIteration:
            self._current = None
            self._exhausted = True

    def lookup(self, key):
        if not self.enabled:
            return False, None
        if self._last_source is not None and key <= self._last_source:
            self.enabled = False
            return False, None
        self._last_source = key
        try:
            if self._current is None and not self._exhausted:
                self._advance()
            while self._current is not None and self._current.key < key:
                self._advance()
        except (_OutOfOrder, ObjstoreError):
            self.enabled = False
            return False, None
        if self._current is not None and self._current.key == key:
            return True, self._current
        return True, None

    def close(self):
        self._listing.close()  # a generator: stops the destination listing where it is


class _OutOfOrder(Exception):
    pass


def _check_size_unchanged(item, listed, read):
    """IntegrityError when a stream of ``listed`` bytes (None: unknown) gave ``read`` bytes."""
    if listed is not None and read != listed:
        raise IntegrityError('source object changed size while being read (%d listed, %d read)' % (listed, read),
                             key=item.key)


def _read_all(stream):
    parts = []
    try:
        while True:
            chunk = stream.read(codec.CHUNK)
            if not chunk:
                break
            parts.append(chunk)
    finally:
        close = getattr(stream, 'close', None)
        if close:
            close()
    return b''.join(parts)


class Migrator(object):
    """One run of one shard of a migration."""

    def __init__(self, source_spec, dest_spec, options, ledger_location=None, db_connect=None, migration_id=None,
                 resume=False, secrets=None):
        self.source_spec = source_spec
        self.dest_spec = dest_spec
        self.options = options
        self.ledger_location = ledger_location
        self.db_connect = db_connect
        self.migration_id = migration_id
        self.resume = resume
        self.secrets = list(secrets or []) + source_spec.secrets() + dest_spec.secrets()
        if source_spec.identity() == dest_spec.identity():
            raise ConfigError('source and dest are the same store (%s): nothing to migrate' % source_spec.describe(),
                              step='config')
        if options.layout == 'anchore' and not db_connect:
            raise ConfigError('layout anchore needs db_connect (the Anchore database holding archive_metadata)',
                              step='config')
        self.source = None
        self.dest = None
        self.catalog = None
        self._lock = threading.Lock()
        self._retries = 0
        self._md5_mismatches = 0
        self._listed = 0
        self._listed_bytes = 0
        self._results = queue.Queue()
        self._objects_limiter = RateLimiter(options.max_objects_per_second)
        self._bytes_limiter = RateLimiter(options.max_bytes_per_second)
        self._stop = threading.Event()
        self._listing_done = False
        self._writer_error = None
        self._crash = CrashPoints()
        self.copied_this_run = 0
        self.puts = 0
        self._memory = MemoryBudget(LARGE_MEMORY_BUDGET, LARGE_STREAMS)
        self._write_verification = _Decision('readback' if options.verify_writes else 'none')

    # -- setup ------------------------------------------------------------------
    def _open_stores(self, write):
        self.source = open_store(self.source_spec, db_connect=self.db_connect)
        self.source.check_access(create_bucket=False)
        self.dest = open_store(self.dest_spec, db_connect=self.db_connect)
        if write:
            self.dest.check_access(create_bucket=bool(self.dest_spec.config.get('create_bucket')))
        else:
            try:
                self.dest.check_access(create_bucket=False)
            except ObjstoreError as exc:
                if exc.cause != 'missing bucket' or not self.dest_spec.config.get('create_bucket'):
                    raise
        if (self.options.immutable or self.options.retain_days) and not self.dest.supports_retention:
            raise ConfigError('immutable/retain_days were asked but the destination (%s) cannot keep retention '
                              '(RustFS API, or S3 with Object Lock enabled on the bucket, can)'
                              % self.dest_spec.describe(), step='config')
        if self.options.layout == 'anchore':
            from ansible_collections.storeshift.objstore.plugins.module_utils.anchore import AnchoreCatalog
            self.catalog = AnchoreCatalog(self.db_connect)

    @property
    def write_verification(self):
        """How writes are proven (waits for the destination probe the first time it is asked)."""
        return self._write_verification.get()

    def _choose_write_verification(self):
        """'server-checksum' when the destination's own check of each write may stand for a read-back, else
        'readback'.

        Only for stores that keep the logical bytes as they are (no compression: the digest the server
        checks is then the content's) and whose server was seen refusing a wrong SHA-256. The check is
        that SHA-256, or for a streamed copy the source's MD5 (its ETag) when the server's ETag of the
        write equals it; a write the server did not prove is read back.
        """
        if not self.options.verify_writes:
            return 'none'
        if self.options.verify_method != 'auto' or self.options.layout != 'objects' \
                or self.dest_spec.compression_enabled:
            return 'readback'
        enforces = getattr(self.dest, 'enforces_checksums', None)
        try:
            if enforces is not None and enforces():
                return 'server-checksum'
        except ObjstoreError:
            pass  # the probe could not tell: reading back is always right
        return 'readback'

    def _stream_memory(self, size):
        answer = getattr(self.dest, 'stream_memory', None)
        return int(answer(size)) if answer is not None else 3 * DEFAULT_PART

    def close(self):
        for resource in (self.source, self.dest, self.catalog):
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # pylint: disable=broad-except
                    pass  # closing after a failure: the failure is what gets reported

    # -- listing ----------------------------------------------------------------
    def iter_items(self):
        """Yield WorkItems of this shard, lazily."""
        if self.options.layout == 'anchore':
            from ansible_collections.storeshift.objstore.plugins.module_utils.anchore import anchore_location
            for doc in self.catalog.iter_documents(self.source_spec, buckets=self.options.buckets):
                key = '%s/%s/%s' % (doc.user_id, doc.bucket, doc.archive_id)
                if not self.options.wants(key):
                    continue
                source_key = anchore_location(self.source_spec, doc.user_id, doc.bucket, doc.archive_id)[0]
                dest_key = anchore_location(self.dest_spec, doc.user_id, doc.bucket, doc.archive_id)[0]
                yield WorkItem(key, doc.size, source_key, dest_key, doc)
            return
        # Content comes with the listing only when every listed object is wanted (no shards, no filters):
        # otherwise the objects of other shards would be fetched for nothing.
        inline = INLINE_LIMIT if self.options.shard_count == 1 and not self.options.include \
            and not self.options.exclude else 0
        for prefix in self.options.prefixes:
            for info in self.source.list_with_content(prefix, inline):
                if self.options.wants(info.key):
                    yield WorkItem(info.key, info.size, content=info.content)

    def iter_pages(self):
        page = []
        inline_bytes = 0
        for item in self.iter_items():
            self._crash.reach('listing')
            page.append(item)
            inline_bytes += len(item.content) if item.content is not None else 0
            if len(page) >= PAGE or inline_bytes >= INLINE_PAGE_BYTES:
                yield page
                page = []
                inline_bytes = 0
        if page:
            yield page

    def _source_bytes(self, item):
        """The whole stored bytes of a small source object: from the listing when they came with it."""
        content, item.content = item.content, None
        if content is not None:
            return content
        return _read_all(self.source.open(item.source_key))

    # -- object copy --------------------------------------------------------------
    def _logical_sha(self, store, spec, key):
        raw = store.open(key)
        try:
            return codec.sha256_of_stream(codec.decode_stream(raw, spec.compression_enabled))
        finally:
            raw.close()

    def _put(self, key, stream, size, source_md5=None):
        """Write one object; returns the SHA-256 of the stored bytes when the destination checked it."""
        server_sha = self.dest.put(key, stream, size=size, immutable=self.options.immutable,
                                   retain_seconds=self.options.retain_seconds, source_md5=source_md5)
        with self._lock:
            self.puts += 1
        self._crash.reach('put')
        return server_sha

    def _copy_objects_layout(self, item):
        """Copy one object; returns (logical sha256, logical size, stored size, stored sha256, server's sha256)."""
        src_spec, dst_spec = self.source_spec, self.dest_spec
        if item.size is not None and item.size <= SMALL_OBJECT:
            if not src_spec.compression_enabled and not dst_spec.compression_enabled:
                data = self._source_bytes(item)  # byte for byte: no codec layers
                sha = hashlib.sha256(data).hexdigest()
                self._bytes_limiter.take(len(data))
                server_sha = self._put(item.dest_key, io.BytesIO(data), len(data))
                return sha, len(data), len(data), sha, server_sha
            raw = self._source_bytes(item)
            logical = _read_all(codec.decode_stream(io.BytesIO(raw), src_spec.compression_enabled))
            sha = hashlib.sha256(logical).hexdigest()
            stream, size, _codec = codec.encode_stream(io.BytesIO(logical), len(logical),
                                                       dst_spec.compression_enabled, dst_spec.min_size_kbytes)
            stored = _read_all(stream)
            self._bytes_limiter.take(len(logical))
            server_sha = self._put(item.dest_key, io.BytesIO(stored), len(stored))
            return sha, len(logical), len(stored), hashlib.sha256(stored).hexdigest(), server_sha
        return self._copy_stream(item)

    def _copy_stream(self, item):
        src_spec, dst_spec = self.source_spec, self.dest_spec
        raw = self.source.open(item.source_key)
        if not src_spec.compression_enabled and not dst_spec.compression_enabled:
            # Byte for byte: one digest is the content's and the stored bytes' (and the driver may reuse it),
            # and the MD5 the source recorded for them is theirs too (the destination may check against it).
            source_md5 = getattr(raw, 'content_md5', None)
            if item.md5_mismatched or self._md5_mismatches >= MD5_MISMATCHES_MAX:
                source_md5 = None
            try:
                throttled = _Throttled(raw, self._bytes_limiter) if self._bytes_limiter.rate else raw
                stored = codec.HashingReader(throttled)
                server_sha = self._put(item.dest_key, stored, item.size, source_md5)
            except IntegrityError as exc:
                if source_md5 and exc.step == 'verify':
                    item.md5_mismatched = True
                    with self._lock:
                        self._md5_mismatches += 1
                raise
            finally:
                raw.close()
            _check_size_unchanged(item, item.size, stored.size)
            sha = stored.hexdigest()
            return sha, stored.size, stored.size, sha, server_sha
        try:
            logical = codec.HashingReader(codec.decode_stream(raw, src_spec.compression_enabled))
            logical_size = item.size if not src_spec.compression_enabled else None
            stream, size, _codec = codec.encode_stream(_Throttled(logical, self._bytes_limiter), logical_size,
                                                       dst_spec.compression_enabled, dst_spec.min_size_kbytes)
            stored = codec.HashingReader(stream)
            server_sha = self._put(item.dest_key, stored, size)
        finally:
            raw.close()
        _check_size_unchanged(item, logical_size, logical.size)
        return logical.hexdigest(), logical.size, stored.size, stored.hexdigest(), server_sha

    def _verify_dest(self, item, sha, size):
        dest_sha, dest_size = self._logical_sha(self.dest, self.dest_spec, item.dest_key)
        if dest_sha != sha or dest_size != size:
            raise IntegrityError('destination read back differs from the source (sha256 %s vs %s, %d vs %d bytes)'
                                 % (dest_sha[:12], sha[:12], dest_size, size), step='verify', key=item.key)

    def _copy_and_verify(self, item):
        sha, size, stored_size, stored_sha, server_sha = self._copy_objects_layout(item)
        if self.write_verification == 'server-checksum' and server_sha is not None:
            # The server checked what it stored against a digest of the bytes read from the source (their
            # SHA-256, refused on a mismatch, or the MD5 the source recorded for them, which its ETag
            # matched: a store checks that and removes a mismatch); the SHA-256 returned
            # must be the one computed over those bytes (the content: the destination is uncompressed).
            if server_sha != stored_sha or stored_sha != sha:
                raise IntegrityError('destination confirmed another SHA-256 than the source\'s (%s vs %s)'
                                     % (server_sha[:12], sha[:12]), step='verify', key=item.key)
        elif self.write_verification != 'none':
            self._verify_dest(item, sha, size)
        return sha, size, stored_size

    def _process_objects(self, item):
        if self.options.overwrite != 'always':
            existing = item.dest_info if item.dest_known else self.dest.stat(item.dest_key)
            if existing is not None:
                if self.options.overwrite == 'never':
                    return {'state': 'skipped', 'size': existing.size, 'error': None}
                comparable = not self.source_spec.compression_enabled and not self.dest_spec.compression_enabled
                if not (comparable and item.size is not None and existing.size is not None
                        and existing.size != item.size):
                    src_sha, src_size = self._logical_sha(self.source, self.source_spec, item.source_key)
                    dst_sha, dst_size = self._logical_sha(self.dest, self.dest_spec, item.dest_key)
                    if src_sha == dst_sha and src_size == dst_size:
                        return self._after_copy(item, {'state': 'skipped', 'size': src_size, 'sha256': src_sha})
        if item.size is not None and item.size <= SMALL_OBJECT:
            sha, size, stored_size = self._copy_and_verify(item)
        else:
            # copy and read-back of a stream: bounded memory whatever the workers
            with self._memory.hold(self._stream_memory(item.size)):
                sha, size, stored_size = self._copy_and_verify(item)
        return self._after_copy(item, {'state': 'copied', 'size': size, 'stored_size': stored_size, 'sha256': sha,
                                       'copied': True})

    def _after_copy(self, item, result):
        if self.options.delete_source:
            if result['state'] == 'skipped' and not result.get('sha256'):
                return result  # never delete what was not compared
            self._crash.reach('delete')
            self.source.delete(item.source_key)
            result['state'] = 'deleted'
        return result

    def _process_anchore(self, item):
        from ansible_collections.storeshift.objstore.plugins.module_utils import anchore
        doc = item.doc
        dest_key, dest_url = anchore.anchore_location(self.dest_spec, doc.user_id, doc.bucket, doc.archive_id)
        logical = codec.HashingReader(anchore.open_for_anchore(self.source, doc))
        try:
            # ``stored`` hashes what is written: Anchore's digest is the MD5 of the stored bytes.
            stored, compressed = anchore.encode_for_anchore(self.dest_spec, logical, None)
            if doc.size is not None and doc.size <= SMALL_OBJECT:
                data = _read_all(stored)
                self._put(dest_key, io.BytesIO(data), len(data))
            else:
                with self._memory.hold(self._stream_memory(None)):
                    self._put(dest_key, stored, None)
        finally:
            logical.close()
        sha = logical.hexdigest()
        new_doc = anchore.AnchoreDocument(doc.user_id, doc.bucket, doc.archive_id, doc.document_name, dest_url,
                                          compressed, stored.md5_hexdigest(), stored.size)
        check = codec.HashingReader(anchore.open_for_anchore(self.dest, new_doc))
        try:
            check.drain()
        finally:
            check.close()
        if check.hexdigest() != sha or check.size != logical.size:
            raise IntegrityError('destination read back differs from the source', step='verify', key=item.key)
        self._crash.reach('repoint')
        if not self.catalog.repoint(doc, dest_url, compressed, stored.md5_hexdigest(), stored.size):
            raise IntegrityError('archive_metadata row changed during the migration; not repointed', step='repoint',
                                 key=item.key)
        result = {'state': 'copied', 'size': logical.size, 'stored_size': stored.size, 'sha256': sha, 'copied': True}
        if self.options.delete_source:
            self._crash.reach('delete')
            self.source.delete(item.source_key)
            result['state'] = 'deleted'
        return result

    def process(self, item):
        """Migrate one item with retries; always returns a result dict (never raises ObjstoreError)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                self._objects_limiter.take(1)
                if self.options.layout == 'anchore':
                    result = self._process_anchore(item)
                else:
                    result = self._process_objects(item)
                result['key'] = item.key
                result['attempts'] = attempt
                result.setdefault('error', None)
                return result
            except (TransientError, ConnectError) as exc:
                if attempt >= RETRY_ATTEMPTS or self._stop.is_set():
                    return self._failure(item, exc, attempt)
                with self._lock:
                    self._retries += 1
                delay = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * (2 ** (attempt - 1)))
                time.sleep(delay / 2 + random.random() * delay / 2)
            except IntegrityError as exc:
                if exc.step != 'verify' or attempt >= WRITE_MISMATCH_ATTEMPTS or self._stop.is_set():
                    return self._failure(item, exc, attempt)
                with self._lock:
                    self._retries += 1
            except ObjectMissingError as exc:
                return self._failure(item, ObjectMissingError('source object disappeared during the migration: %s'
                                                              % exc.message, key=item.key), attempt)
            except ObjstoreError as exc:
                return self._failure(item, exc, attempt)

    def _failure(self, item, exc, attempt):
        message = '%s: %s' % (exc.step or 'copy', exc.message) if exc.step else exc.message
        return {'key': item.key, 'state': 'failed', 'error': scrub(message, self.secrets)[:1000], 'attempts': attempt}

    # -- threads ------------------------------------------------------------------
    def _writer(self, ledger):
        """Batch results into the ledger at least every FLUSH_SECONDS."""
        pending = []
        last = time.time()
        done = False
        while not done:
            try:
                item = self._results.get(timeout=FLUSH_SECONDS / 2)
                if item is None:
                    done = True
                else:
                    pending.append(item)
            except queue.Empty:
                pass
            if done or len(pending) >= 500 or time.time() - last >= FLUSH_SECONDS:
                with self._lock:
                    listed, listed_bytes, retries = self._listed, self._listed_bytes, self._retries
                    self._listed = self._listed_bytes = self._retries = 0
                    listing_done = self._listing_done
                try:
                    ledger.record(self.migration_id, self.options.shard_index, pending, listed=listed,
                                  listed_bytes=listed_bytes, retries=retries, listing_done=listing_done)
                except ObjstoreError as exc:
                    self._writer_error = exc
                    self._stop.set()
                    return
                pending = []
                last = time.time()

    def _worker(self, work):
        while True:
            item = work.get()
            if item is None:
                return
            if self._stop.is_set():
                continue
            result = self.process(item)
            if result.get('copied'):
                with self._lock:
                    self.copied_this_run += 1
            self._results.put(result)

    # -- runs ------------------------------------------------------------------------
    def _resolve_migration_id(self, ledger):
        if self.migration_id:
            return self.migration_id
        if self.resume:
            latest = ledger.latest_migration(repr(self.source_spec.identity()), repr(self.dest_spec.identity()))
            if latest:
                return latest
        return new_migration_id()

    def run(self):
        started = time.time()
        ledger = Ledger(self.ledger_location)
        try:
            self.migration_id = self._resolve_migration_id(ledger)
            self._open_stores(write=True)
            # The probe (one request, which some servers answer slowly) runs while the first objects are
            # listed and copied: only their verification waits for it.
            self._write_verification = _Decision('readback', decide=self._choose_write_verification)
            params = self.options.to_dict()
            params.update({'source': self.source_spec.to_dict(redact=True), 'dest': self.dest_spec.to_dict(redact=True)})
            ledger.begin_run(self.migration_id, self.options.layout, self.source_spec.describe(),
                             self.dest_spec.describe(), repr(self.source_spec.identity()),
                             repr(self.dest_spec.identity()), params, self.options.shard_index,
                             self.options.shard_count)
            state, message = 'complete', None
            try:
                self._copy_all(ledger)
            except ObjstoreError as exc:
                state, message = 'failed', scrub(exc.message, self.secrets)
                self._stop.set()
            if self._writer_error is not None:
                raise self._writer_error
            counts = ledger.count_states(self.migration_id)
            if state == 'complete' and counts.get('failed'):
                state = 'failed'
                message = '%d objects failed' % counts['failed']
            ledger.finish_run(self.migration_id, self.options.shard_index, state, message)
            summary = ledger.summary(self.migration_id)
            summary['run_state'] = state
            summary['run_message'] = message
            summary['copied_this_run'] = self.copied_this_run
            summary['write_verification'] = self.write_verification
            summary['run_duration_s'] = round(time.time() - started, 3)
            return summary
        finally:
            self.close()
            ledger.close()

    def _copy_all(self, ledger):
        work = queue.Queue(maxsize=self.options.workers * 4)
        writer = threading.Thread(target=self._writer, args=(ledger,), name='ledger-writer')
        writer.daemon = True
        writer.start()
        workers = []
        for index in range(self.options.workers):
            thread = threading.Thread(target=self._worker, args=(work,), name='copy-%d' % index)
            thread.daemon = True
            thread.start()
            workers.append(thread)
        index = None
        # The source may list in any order (an inversion only turns the index off); the destination's order
        # is what makes an "absent" answer true, hence the list of drivers.
        if self.options.layout == 'objects' and self.options.overwrite != 'always' \
                and self.dest_spec.driver in LISTS_IN_KEY_ORDER:
            index = DestIndex(self.dest, self.options.prefixes)
        try:
            for page in self.iter_pages():
                if self._stop.is_set():
                    break
                states = ledger.object_states(self.migration_id, [item.key for item in page])
                with self._lock:
                    self._listed += len(page)
                    self._listed_bytes += sum(item.size or 0 for item in page)
                for item in page:
                    if index is not None:
                        # Every listed key goes through the index (done ones too): it checks the order.
                        item.dest_known, item.dest_info = index.lookup(item.dest_key)
                    known = states.get(item.key)
                    if known is not None and known[0] in DONE_STATES:
                        continue  # done in an earlier attempt: never copied twice
                    work.put(item)
            with self._lock:
                # Only a listing that really reached its end makes the total final.
                self._listing_done = not self._stop.is_set()
        finally:
            if index is not None:
                index.close()
            for _thread in workers:
                work.put(None)
            for thread in workers:
                thread.join()
            self._results.put(None)
            writer.join()

    # -- dry run -------------------------------------------------------------------
    def dry_run(self, sample_seconds=3.0, sample_objects=20):
        """Enumerate and estimate; writes nothing anywhere."""
        self._open_stores(write=False)
        try:
            total = would_copy = would_skip = 0
            total_bytes = copy_bytes = 0
            dest_missing = False
            try:
                self.dest.check_access(create_bucket=False)
            except ObjstoreError:
                dest_missing = True
            sample = []
            for item in self.iter_items():
                total += 1
                total_bytes += item.size or 0
                if len(sample) < sample_objects:
                    sample.append(item)
                existing = None
                if not dest_missing and self.options.overwrite != 'always' and self.options.layout == 'objects':
                    existing = self.dest.stat(item.dest_key)
                if existing is not None and (self.options.overwrite == 'never' or existing.size == item.size):
                    would_skip += 1
                else:
                    would_copy += 1
                    copy_bytes += item.size or 0
            rate_bytes, rate_objects = self._measure_sample(sample, sample_seconds)
            eta = None
            if would_copy and rate_objects:
                # Reading is about half of a copy's work (read + write + read back): a conservative estimate.
                eta = max(would_copy / rate_objects, copy_bytes / rate_bytes if rate_bytes else 0) * 2.0
            return {'objects_total': total, 'bytes_total': total_bytes, 'objects_to_copy': would_copy,
                    'bytes_to_copy': copy_bytes, 'objects_to_skip': would_skip,
                    'eta_s': round(eta, 1) if eta is not None else None,
                    'sample_objects': len(sample)}
        finally:
            self.close()

    def _measure_sample(self, sample, seconds):
        started = time.time()
        read_bytes = count = 0
        for item in sample:
            if time.time() - started > seconds:
                break
            try:
                if self.options.layout == 'anchore':
                    from ansible_collections.storeshift.objstore.plugins.module_utils.anchore import open_for_anchore
                    stream = open_for_anchore(self.source, item.doc)
                else:
                    stream = self.source.open(item.source_key)
                read_bytes += codec.HashingReader(stream).drain().size
                stream.close()
                count += 1
            except ObjstoreError:
                continue
        elapsed = max(time.time() - started, 1e-6)
        return (read_bytes / elapsed if count else None), (count / elapsed if count else None)


class _Throttled(object):
    """Applies the bytes-per-second limit to a stream as it is read."""

    def __init__(self, raw, limiter):
        self._raw = raw
        self._limiter = limiter

    def read(self, size=-1):
        data = self._raw.read(size)
        if data:
            self._limiter.take(len(data))
        return data

    def close(self):
        close = getattr(self._raw, 'close', None)
        if close:
            close()
