# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verification engine: prove that the destination equals the source.

Plain Python: no Ansible import. ``Verifier(...).run()`` returns a dict of
counts (exact) and capped key lists, and writes the same as JSON to
``report_path`` when asked.

Content is compared as *logical* bytes: both sides are read through
``codec.decode_stream`` so that a zstd destination equals a plain or zlib
source of the same content. SHA-256 is computed in flight; backend ETags
are never trusted.

Memory stays bounded whatever the number of objects:

- full runs walk the source and the destination listings side by side
  (a streaming merge; both must list in UTF-8 byte order, which s3, rustfs
  and localfs do). Every listing is checked to be strictly increasing while
  it is read; a listing that is not (the db drivers order by column tuple,
  a PostgreSQL ledger may use a locale collation) makes the run start again
  with per-key look-ups, a page at a time;
- a count sample keeps the N keys with the smallest keyed hash
  (``sha256(seed, key)``) in a bounded heap; a percentage sample keeps the
  keys whose hash falls under a threshold, as they stream by;
- the work queue is bounded and every object is read in chunks.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import heapq
import json
import os
import re
import tempfile
import threading
import time

try:
    import queue
except ImportError:  # pragma: no cover - Python 2 is not supported
    import Queue as queue  # noqa

from ansible_collections.storeshift.objstore.plugins.module_utils import codec
from ansible_collections.storeshift.objstore.plugins.module_utils.engine import (
    MigrationOptions,
    normalize_prefixes,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import (
    ConfigError,
    IntegrityError,
    ObjectMissingError,
    ObjstoreError,
    scrub,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.ledger import DONE_STATES, Ledger
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store

MODES = ('exists', 'size', 'sha256')
LAYOUTS = ('objects', 'anchore')
LIST_LIMIT = 100
LOOKUP_PAGE = 500
# Drivers whose listings come out in UTF-8 byte order of the key.
SORTED_DRIVERS = ('s3', 'rustfs', 'localfs')
_HASH_SPACE = 1 << 64

# Mismatch reasons.
REASON_SIZE = 'size'
REASON_SHA = 'sha256'
REASON_POINTER = 'anchore pointer'
REASON_DIGEST = 'digest'

_MISSING = object()   # the destination listing does not have the key
_UNKNOWN = object()   # not listed: look the key up


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------

def parse_sample(value):
    """``None``, ``('count', n)`` or ``('percent', p)`` from an int or a string like "100" / "10%"."""
    if value is None or value == '':
        return None
    if isinstance(value, bool):
        raise ConfigError('sample must be a count ("100") or a percentage ("10%%"), got %r' % value, step='config')
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if value != int(value):
            raise ConfigError('sample must be a whole number of objects or a percentage ("10%%"), got %r' % value,
                              step='config')
        text = str(int(value))
    else:
        text = str(value).strip()
    match = re.match(r'^(\d+(?:\.\d+)?)\s*%$', text)
    if match:
        percent = float(match.group(1))
        if percent <= 0 or percent > 100:
            raise ConfigError('sample percentage must be greater than 0%% and at most 100%%, got %s' % text,
                              step='config')
        return ('percent', percent)
    if re.match(r'^\d+$', text):
        count = int(text)
        if count < 1:
            raise ConfigError('sample must be at least 1 object, got %s' % text, step='config')
        return ('count', count)
    raise ConfigError('sample must be a count ("100") or a percentage ("10%%"), got %r' % (value,), step='config')


def sample_score(seed, key):
    """A keyed 64-bit hash of ``key``: the same for the same seed on every host and Python."""
    digest = hashlib.sha256(('%d\x00' % int(seed)).encode('ascii') + key.encode('utf-8', 'surrogatepass')).digest()
    return int.from_bytes(digest[:8], 'big')


class CountSampler(object):
    """Keeps the ``count`` items with the smallest scores (a bounded max-heap)."""

    def __init__(self, count, seed):
        self.count = count
        self.seed = seed
        self.offered = 0
        self._heap = []  # (-score, key bytes, arrival, key, payload): heap[0] holds the largest score kept

    def offer(self, key, payload=None):
        self.offered += 1
        entry = (-sample_score(self.seed, key), order_key(key), self.offered, key, payload)
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, entry)
        elif entry[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def __len__(self):
        return len(self._heap)

    def items(self):
        """The kept ``(key, payload)`` pairs in key order."""
        return [(entry[3], entry[4]) for entry in sorted(self._heap, key=lambda e: e[1])]


class PercentSampler(object):
    """Keeps a key when its score falls under ``percent`` of the hash space (streaming)."""

    def __init__(self, percent, seed):
        self.percent = percent
        self.seed = seed
        self.threshold = int(_HASH_SPACE * (percent / 100.0))

    def wants(self, key):
        return self.percent >= 100 or sample_score(self.seed, key) < self.threshold


# ---------------------------------------------------------------------------
# Sorted listings
# ---------------------------------------------------------------------------

class UnorderedListing(Exception):
    """A listing that was expected in UTF-8 byte order is not."""

    def __init__(self, name, previous, key):
        super(UnorderedListing, self).__init__('%s is not listed in UTF-8 byte order (%r came after %r)'
                                               % (name, key, previous))
        self.name = name


def order_key(key):
    """The ordering every sorted listing is compared in: S3's binary UTF-8 order."""
    return key.encode('utf-8', 'surrogatepass')


def checked_order(pairs, name):
    """Pass ``(key, payload)`` pairs through, raising UnorderedListing unless keys strictly increase."""
    previous = None
    previous_key = None
    for key, payload in pairs:
        current = order_key(key)
        if previous is not None and current <= previous:
            raise UnorderedListing(name, previous_key, key)
        previous, previous_key = current, key
        yield key, payload


def merge_sorted(left, right, left_name='left', right_name='right'):
    """Walk two sorted ``(key, payload)`` streams side by side.

    Yields ``(key, left_payload, right_payload)`` with ``_MISSING`` on the side
    that lacks the key. Holds one item of each stream at a time.
    """
    left = iter(checked_order(left, left_name))
    right = iter(checked_order(right, right_name))
    end = object()
    a = next(left, end)
    b = next(right, end)
    while a is not end or b is not end:
        if b is end or (a is not end and order_key(a[0]) < order_key(b[0])):
            yield a[0], a[1], _MISSING
            a = next(left, end)
        elif a is end or order_key(b[0]) < order_key(a[0]):
            yield b[0], _MISSING, b[1]
            b = next(right, end)
        else:
            yield a[0], a[1], b[1]
            a = next(left, end)
            b = next(right, end)


# ---------------------------------------------------------------------------
# Options and results
# ---------------------------------------------------------------------------

class VerifyOptions(object):
    """Validated verification options. Filtering reuses engine.MigrationOptions."""

    def __init__(self, layout='objects', buckets=None, prefix=None, include=None, exclude=None, mode='sha256',
                 sample=None, seed=0, keys=None, workers=8, fail_on_mismatch=True, report_path=None):
        if mode not in MODES:
            raise ConfigError("mode must be one of %s, got '%s'" % (', '.join(MODES), mode), step='config')
        if isinstance(workers, bool) or workers is None or int(workers) < 1 or int(workers) > 512:
            raise ConfigError('workers must be between 1 and 512, got %s' % workers, step='config')
        if seed is None:
            seed = 0
        if isinstance(seed, bool):
            raise ConfigError('seed must be an integer, got %r' % seed, step='config')
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise ConfigError('seed must be an integer, got %r' % (seed,), step='config')
        if report_path is not None and not os.path.isabs(report_path):
            raise ConfigError('report_path must be an absolute path, got %s' % report_path, step='config')
        if keys is not None:
            keys = list(keys)
            for key in keys:
                if not isinstance(key, str) or not key:
                    raise ConfigError('keys must be non-empty strings, got %r' % (key,), step='config')
        if isinstance(prefix, str):
            prefix = [prefix]
        # Layout, buckets, prefixes and globs are validated and applied by the migration engine's options,
        # so that verify selects exactly what a migration with the same parameters copied.
        self.filter = MigrationOptions(layout=layout, buckets=buckets, prefixes=prefix, include=include,
                                       exclude=exclude, workers=int(workers))
        self.layout = layout
        self.buckets = self.filter.buckets
        self.prefixes = normalize_prefixes(prefix)
        self.include = self.filter.include
        self.exclude = self.filter.exclude
        self.mode = mode
        self.sample = parse_sample(sample)
        self.sample_text = None if sample is None or sample == '' else str(sample).strip()
        self.seed = seed
        self.keys = keys
        self.workers = int(workers)
        self.fail_on_mismatch = bool(fail_on_mismatch)
        self.report_path = report_path

    def wants(self, key):
        """In the selected prefixes and globs (include/exclude)."""
        return any(key.startswith(p) for p in self.prefixes) and self.filter.wants(key)

    def to_dict(self):
        return {'layout': self.layout, 'buckets': self.buckets, 'prefix': self.prefixes, 'include': self.include,
                'exclude': self.exclude, 'mode': self.mode, 'sample': self.sample_text, 'seed': self.seed,
                'keys': len(self.keys) if self.keys is not None else None, 'workers': self.workers,
                'fail_on_mismatch': self.fail_on_mismatch}


class Tally(object):
    """Thread-safe counts (exact) and key lists (capped)."""

    def __init__(self, limit=LIST_LIMIT):
        self.limit = limit
        self._lock = threading.Lock()
        self.checked = 0
        self.matched = 0
        self.missing = 0
        self.mismatched = 0
        self.extra = 0
        self.errors = 0
        self.ledger_digests = 0
        self.missing_keys = []
        self.mismatched_keys = []
        self.extra_keys = []
        self.error_keys = []
        self.reasons = {}

    def match(self, key, from_ledger=False):
        with self._lock:
            self.checked += 1
            self.matched += 1
            if from_ledger:
                self.ledger_digests += 1

    def miss(self, key):
        with self._lock:
            self.checked += 1
            self.missing += 1
            if len(self.missing_keys) < self.limit:
                self.missing_keys.append(key)

    def mismatch(self, key, reason, detail=None, from_ledger=False):
        with self._lock:
            self.checked += 1
            self.mismatched += 1
            if from_ledger:
                self.ledger_digests += 1
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
            if len(self.mismatched_keys) < self.limit:
                entry = {'key': key, 'reason': reason}
                if detail:
                    entry['detail'] = detail
                self.mismatched_keys.append(entry)

    def add_extra(self, key):
        with self._lock:
            self.extra += 1
            if len(self.extra_keys) < self.limit:
                self.extra_keys.append(key)

    def error(self, key, message):
        with self._lock:
            self.checked += 1
            self.errors += 1
            if len(self.error_keys) < self.limit:
                self.error_keys.append({'key': key, 'error': message})


def format_summary(tally, sampled=None, extra_checked=True):
    text = 'verified {0:,} objects: {1:,} matched, {2:,} missing, {3:,} mismatched, '.format(
        tally.checked, tally.matched, tally.missing, tally.mismatched)
    text += '{0:,} extra'.format(tally.extra) if extra_checked else 'extra not checked'
    if tally.errors:
        text += ', {0:,} unreadable'.format(tally.errors)
    if sampled:
        text += ' (%s)' % sampled
    return text


# ---------------------------------------------------------------------------
# The verifier
# ---------------------------------------------------------------------------

class Verifier(object):
    """One verification of ``dest`` against ``source``. ``run()`` never raises for per-object problems."""

    def __init__(self, source_spec, dest_spec, options, db_connect=None, ledger_location=None, migration_id=None,
                 secrets=()):
        if isinstance(options, dict):
            options = VerifyOptions(**options)
        self.source_spec = source_spec
        self.dest_spec = dest_spec
        self.options = options
        self.db_connect = db_connect
        self.ledger_location = ledger_location
        self.migration_id = migration_id
        self.secrets = [s for s in secrets or () if s] + source_spec.secrets() + dest_spec.secrets()
        if source_spec.identity() == dest_spec.identity():
            raise ConfigError('source and dest are the same store (%s): nothing to verify' % source_spec.describe(),
                              step='config')
        if migration_id and not ledger_location:
            raise ConfigError('migration_id needs ledger (the ledger the migration was recorded in)', step='config')
        if ledger_location and not migration_id:
            raise ConfigError('ledger needs migration_id (which migration\'s digests to reuse)', step='config')
        if options.layout == 'anchore' and not db_connect:
            raise ConfigError('layout anchore needs db_connect (the Anchore database holding archive_metadata)',
                              step='config')
        self.source = None
        self.dest = None
        self.catalog = None
        self.ledger = None
        self.tally = Tally()
        self.strategy = None
        self.extra_checked = False
        self.fallback_reason = None
        self._abort = threading.Event()
        self._source_gone = False
        self.sample_population = None

    # -- setup -----------------------------------------------------------------
    def _open(self):
        self.source = open_store(self.source_spec, db_connect=self.db_connect)
        self.dest = open_store(self.dest_spec, db_connect=self.db_connect)
        self.dest.check_access(create_bucket=False)
        if self.options.layout == 'objects' or self.options.mode == 'sha256':
            try:
                self.source.check_access(create_bucket=False)
            except ObjstoreError as exc:
                # With the ledger's digests a drained (or removed) source is fine.
                if not (self.migration_id and exc.cause == 'missing bucket'):
                    raise
                self._source_gone = True
        if self.ledger_location:
            self.ledger = Ledger(self.ledger_location, create=False)
            if self.ledger.find_migration(self.migration_id) is None:
                raise ConfigError('migration %s is not in the ledger %s' % (self.migration_id, self.ledger.description),
                                  step='ledger')
        if self.options.layout == 'anchore':
            from ansible_collections.storeshift.objstore.plugins.module_utils.anchore import AnchoreCatalog
            self.catalog = AnchoreCatalog(self.db_connect)

    def close(self):
        for resource in (self.source, self.dest, self.catalog, self.ledger):
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # pylint: disable=broad-except
                    pass  # closing after a failure: the failure is what gets reported

    def _clean(self, exc):
        message = exc.message if isinstance(exc, ObjstoreError) else str(exc)
        if isinstance(exc, ObjstoreError) and exc.step:
            message = '%s: %s' % (exc.step, message)
        return scrub(message, self.secrets)[:500]

    # -- run ---------------------------------------------------------------------
    def run(self):
        started = time.time()
        try:
            self._open()
            if self.options.layout == 'anchore':
                self._run_pass(self._anchore_tasks, 'anchore')
            elif self.options.keys is not None or self.options.sample is not None:
                self._run_pass(self._selected_tasks, 'lookup')
            else:
                sortable = (self.source_spec.driver in SORTED_DRIVERS and self.dest_spec.driver in SORTED_DRIVERS)
                if sortable:
                    try:
                        self._run_pass(self._merge_tasks, 'merge')
                    except UnorderedListing as exc:
                        self.fallback_reason = str(exc)
                        self.tally = Tally()
                        self._run_pass(self._lookup_tasks, 'lookup')
                else:
                    self._run_pass(self._lookup_tasks, 'lookup')
            result = self._result(time.time() - started)
        finally:
            self.close()
        if self.options.report_path:
            self.write_report(result)
        return result

    def _run_pass(self, producer, strategy):
        """Feed ``producer()``'s tasks to the worker threads through a bounded queue."""
        self.strategy = strategy
        self._abort.clear()
        work = queue.Queue(maxsize=self.options.workers * 4)
        threads = []
        for index in range(self.options.workers):
            thread = threading.Thread(target=self._worker, args=(work,), name='verify-%d' % index)
            thread.daemon = True
            thread.start()
            threads.append(thread)
        try:
            for task in producer():
                work.put(task)
        except BaseException:
            self._abort.set()
            raise
        finally:
            for _thread in threads:
                work.put(None)
            for thread in threads:
                thread.join()

    def _worker(self, work):
        while True:
            task = work.get()
            if task is None:
                return
            if self._abort.is_set():
                continue
            key = task[1]
            try:
                if task[0] == 'object':
                    self._check_object(*task[1:])
                elif task[0] == 'extra':
                    self._check_extra(*task[1:])
                else:
                    self._check_anchore(*task[1:])
            except ObjstoreError as exc:
                self.tally.error(key, self._clean(exc))
            except Exception as exc:  # pylint: disable=broad-except
                self.tally.error(key, scrub('unexpected error: %s' % exc, self.secrets)[:500])

    # -- producers: objects layout -------------------------------------------------
    def _source_listing(self):
        if self._source_gone:
            return
        for prefix in self.options.prefixes:
            for info in self.source.list(prefix):
                if self.options.wants(info.key):
                    yield info.key, info

    def _dest_listing(self):
        for prefix in self.options.prefixes:
            for info in self.dest.list(prefix):
                if self.options.wants(info.key):
                    yield info.key, info

    def _ledger_rows(self):
        for row in self.ledger.iter_objects(self.migration_id, states=DONE_STATES):
            if self.options.wants(row['key']):
                yield row['key'], row

    def _expected_sorted(self):
        """``(key, source_info_or_None, ledger_row_or_None)`` in key order: the source ∪ the ledger's done rows."""
        if self.ledger is None:
            for key, info in checked_order(self._source_listing(), 'the source listing'):
                yield key, info, None
            return
        for key, info, row in merge_sorted(self._source_listing(), self._ledger_rows(), 'the source listing',
                                           'the ledger'):
            yield key, (None if info is _MISSING else info), (None if row is _MISSING else row)

    def _merge_tasks(self):
        expected = ((key, (info, row)) for key, info, row in self._expected_sorted())
        for key, src, dst in merge_sorted(expected, self._dest_listing(), 'the source listing', 'the dest listing'):
            if src is _MISSING:
                self.tally.add_extra(key)
                continue
            info, row = src
            if dst is _MISSING:
                self.tally.miss(key)
                continue
            yield ('object', key, info, row, dst)
        self.extra_checked = True

    def _ledger_lookup(self, keys):
        """``{key: row}`` of the ledger's done rows for ``keys``."""
        if self.ledger is None or not keys:
            return {}
        found = {}
        for key, (state, size, sha) in self.ledger.object_states(self.migration_id, keys).items():
            if state in DONE_STATES:
                found[key] = {'key': key, 'state': state, 'size': size, 'sha256': sha}
        return found

    def _pages(self, pairs):
        page = []
        for pair in pairs:
            page.append(pair)
            if len(page) >= LOOKUP_PAGE:
                yield page
                page = []
        if page:
            yield page

    def _expected_unsorted(self):
        """Like _expected_sorted, in no particular order, one page of look-ups at a time."""
        if self.ledger is not None:
            for key, row in self._ledger_rows():
                yield key, None, row
        for page in self._pages(self._source_listing()):
            known = self._ledger_lookup([key for key, _info in page]) if self.ledger is not None else {}
            for key, info in page:
                if key not in known:
                    yield key, info, None

    def _lookup_tasks(self):
        for key, info, row in self._expected_unsorted():
            yield ('object', key, info, row, _UNKNOWN)
        for page in self._pages(self._dest_listing()):
            known = self._ledger_lookup([key for key, _info in page])
            for key, _info in page:
                if key not in known:
                    yield ('extra', key)
        self.extra_checked = True

    def _selected_tasks(self):
        """Explicit keys and/or a sample: no extra detection."""
        options = self.options
        if options.keys is not None:
            def universe():
                seen = set()
                for page in self._pages([(key, None) for key in options.keys]):
                    rows = self._ledger_lookup([key for key, _none in page])
                    for key, _none in page:
                        if key not in seen:
                            seen.add(key)
                            yield key, None, rows.get(key)
        else:
            universe = self._expected_unsorted
        sample = options.sample
        if sample is None:
            for key, info, row in universe():
                yield ('object', key, info, row, _UNKNOWN)
        elif sample[0] == 'percent':
            sampler = PercentSampler(sample[1], options.seed)
            for key, info, row in universe():
                if sampler.wants(key):
                    yield ('object', key, info, row, _UNKNOWN)
        else:
            sampler = CountSampler(sample[1], options.seed)
            for key, info, row in universe():
                sampler.offer(key, (info, row))
            self.sample_population = sampler.offered
            for key, (info, row) in sampler.items():
                yield ('object', key, info, row, _UNKNOWN)

    # -- per-object checks: objects layout -------------------------------------------
    def _logical(self, store, spec, key):
        """``(sha256, logical size)`` of one object, read in chunks."""
        raw = store.open(key)
        try:
            reader = codec.HashingReader(codec.decode_stream(raw, spec.compression_enabled))
            reader.drain()
            return reader.hexdigest(), reader.size
        finally:
            raw.close()

    def _logical_size(self, store, spec, key, info):
        """Logical size without reading when the store does not compress."""
        if not spec.compression_enabled:
            if info is None or info is _UNKNOWN or info.size is None:
                info = store.stat(key)
                if info is None:
                    raise ObjectMissingError('object %s is not in %s' % (key, spec.describe()), key=key)
            return info.size
        return self._logical(store, spec, key)[1]

    def _source_digest(self, key, info, row):
        """``(sha256, size, from_ledger)`` of the source object."""
        if row is not None and row.get('sha256') and row.get('size') is not None:
            return row['sha256'], row['size'], True
        try:
            sha, size = self._logical(self.source, self.source_spec, key)
        except ObjectMissingError:
            raise ObjectMissingError('object is not in the source (%s) and the ledger has no digest for it'
                                     % self.source_spec.describe(), step='read source', key=key)
        return sha, size, False

    def _check_object(self, key, info, row, dst):
        mode = self.options.mode
        if mode == 'exists':
            if dst is _UNKNOWN and self.dest.stat(key) is None:
                self.tally.miss(key)
            else:
                self.tally.match(key)
            return
        if mode == 'size':
            try:
                dest_size = self._logical_size(self.dest, self.dest_spec, key, dst)
            except ObjectMissingError:
                self.tally.miss(key)
                return
            from_ledger = row is not None and row.get('size') is not None
            if from_ledger:
                source_size = row['size']
            else:
                try:
                    source_size = self._logical_size(self.source, self.source_spec, key, info)
                except ObjectMissingError:
                    raise ObjectMissingError('object is not in the source (%s) and the ledger has no size for it'
                                             % self.source_spec.describe(), step='read source', key=key)
            if dest_size != source_size:
                self.tally.mismatch(key, REASON_SIZE, 'dest %d bytes, source %d bytes' % (dest_size, source_size),
                                    from_ledger)
            else:
                self.tally.match(key, from_ledger)
            return
        try:
            dest_sha, dest_size = self._logical(self.dest, self.dest_spec, key)
        except ObjectMissingError:
            self.tally.miss(key)
            return
        source_sha, source_size, from_ledger = self._source_digest(key, info, row)
        if dest_size != source_size:
            self.tally.mismatch(key, REASON_SIZE, 'dest %d bytes, source %d bytes' % (dest_size, source_size),
                                from_ledger)
        elif dest_sha != source_sha:
            self.tally.mismatch(key, REASON_SHA, 'dest sha256 %s..., source %s...' % (dest_sha[:12], source_sha[:12]),
                                from_ledger)
        else:
            self.tally.match(key, from_ledger)

    def _check_extra(self, key):
        if self._source_gone or self.source.stat(key) is None:
            self.tally.add_extra(key)

    # -- anchore layout -------------------------------------------------------------------
    def _doc_key(self, doc):
        return '%s/%s/%s' % (doc.user_id, doc.bucket, doc.archive_id)

    def _anchore_docs(self):
        """``(key, doc, points_at_dest)`` for the selected rows pointing at the destination or the source."""
        options = self.options
        if options.keys is not None:
            seen = set()
            for key in options.keys:
                if key in seen:
                    continue
                seen.add(key)
                parts = key.split('/', 2)
                if len(parts) != 3:
                    raise ConfigError("keys: '%s' is not userId/bucket/archiveId (layout anchore)" % key,
                                      step='config')
                doc = self.catalog.get_document(*parts)
                if doc is None:
                    self.tally.error(key, 'no archive_metadata row for %s' % key)
                    continue
                yield key, doc, self._points_at_dest(doc)
            return
        for doc in self.catalog.iter_documents(self.dest_spec, buckets=options.buckets):
            key = self._doc_key(doc)
            if options.wants(key):
                yield key, doc, True
        for doc in self.catalog.iter_documents(self.source_spec, buckets=options.buckets):
            key = self._doc_key(doc)
            if options.wants(key):
                yield key, doc, False

    def _points_at_dest(self, doc):
        from ansible_collections.storeshift.objstore.plugins.module_utils.anchore import url_matches_store
        return bool(url_matches_store(doc.content_url, self.dest_spec))

    def _anchore_tasks(self):
        sample = self.options.sample
        docs = self._anchore_docs()
        if sample is not None and sample[0] == 'count':
            sampler = CountSampler(sample[1], self.options.seed)
            for key, doc, at_dest in docs:
                sampler.offer(key, (doc, at_dest))
            self.sample_population = sampler.offered
            docs = ((key, doc, at_dest) for key, (doc, at_dest) in sampler.items())
        elif sample is not None:
            percent = PercentSampler(sample[1], self.options.seed)
            docs = ((key, doc, at_dest) for key, doc, at_dest in docs if percent.wants(key))
        for key, doc, at_dest in docs:
            yield ('anchore', key, doc, at_dest)

    def _check_anchore(self, key, doc, at_dest):
        from ansible_collections.storeshift.objstore.plugins.module_utils.anchore import (
            anchore_location,
            key_from_url,
            open_for_anchore,
        )
        if not at_dest:
            self.tally.mismatch(key, REASON_POINTER, 'archive_metadata row still points at the source (not repointed)')
            return
        mode = self.options.mode
        if mode in ('exists', 'size'):
            info = self.dest.stat(key_from_url(self.dest_spec, doc.content_url))
            if info is None:
                self.tally.miss(key)
            elif mode == 'size' and doc.size is not None and info.size is not None and info.size != doc.size:
                self.tally.mismatch(key, REASON_SIZE, 'stored %d bytes, archive_metadata records %d'
                                    % (info.size, doc.size))
            else:
                self.tally.match(key)
            return
        # open_for_anchore checks the MD5 and size of the stored bytes against the row at end of stream.
        stream = None
        try:
            stream = open_for_anchore(self.dest, doc)
            reader = codec.HashingReader(stream)
            reader.drain()
        except ObjectMissingError:
            self.tally.miss(key)
            return
        except IntegrityError as exc:
            reason = REASON_SIZE if exc.message.startswith('size mismatch') else REASON_DIGEST
            self.tally.mismatch(key, reason, self._clean(exc))
            return
        finally:
            if stream is not None:
                stream.close()
        # Compare with the ledger's digest, else with the source object while the source still has it.
        row = self._ledger_lookup([key]).get(key) if self.ledger is not None else None
        from_ledger = bool(row and row.get('sha256'))
        if from_ledger:
            source_sha, source_size = row['sha256'], row.get('size')
        else:
            source_key = anchore_location(self.source_spec, doc.user_id, doc.bucket, doc.archive_id)[0]
            try:
                # The source row's is_compressed flag is gone after the repoint; Anchore's zlib is recognised
                # by its header (documents are JSON, which never looks like zlib or zstd).
                source_sha, source_size = self._logical_any(self.source, source_key)
            except ObjectMissingError:
                self.tally.match(key)  # nothing left to compare with: the recorded digest and size matched
                return
        if (source_size is not None and source_size != reader.size) or source_sha != reader.hexdigest():
            self.tally.mismatch(key, REASON_SHA, 'dest sha256 %s..., source %s...'
                                % (reader.hexdigest()[:12], source_sha[:12]), from_ledger)
        else:
            self.tally.match(key, from_ledger)

    def _logical_any(self, store, key):
        raw = store.open(key)
        try:
            reader = codec.HashingReader(codec.decode_stream(raw, True))
            reader.drain()
            return reader.hexdigest(), reader.size
        finally:
            raw.close()

    # -- results --------------------------------------------------------------------------
    def _sampled_text(self):
        sample = self.options.sample
        if sample is None:
            return None
        if sample[0] == 'count':
            return 'sample of %d, seed %d' % (sample[1], self.options.seed)
        return 'sample of %s%%, seed %d' % (('%g' % sample[1]), self.options.seed)

    def _result(self, duration):
        tally = self.tally
        extra_checked = self.extra_checked
        ok = not (tally.missing or tally.mismatched or tally.extra or tally.errors)
        result = {
            'ok': ok,
            'checked': tally.checked,
            'matched': tally.matched,
            'missing': tally.missing,
            'mismatched': tally.mismatched,
            'extra': tally.extra,
            'errors': tally.errors,
            # Workers finish in any order: sorted, so that the same run gives the same lists.
            'missing_keys': sorted(tally.missing_keys, key=order_key),
            'mismatched_keys': sorted((dict(entry) for entry in tally.mismatched_keys),
                                      key=lambda entry: order_key(entry['key'])),
            'extra_keys': sorted(tally.extra_keys, key=order_key),
            'error_keys': sorted((dict(entry) for entry in tally.error_keys),
                                 key=lambda entry: order_key(entry['key'])),
            'mismatch_reasons': dict(tally.reasons),
            'extra_checked': extra_checked,
            'ledger_digests_used': tally.ledger_digests,
            'summary': format_summary(tally, self._sampled_text(), extra_checked),
            'mode': self.options.mode,
            'layout': self.options.layout,
            'strategy': self.strategy,
            'source': self.source_spec.describe(),
            'dest': self.dest_spec.describe(),
            'migration_id': self.migration_id,
            'sample': self.options.sample_text,
            'seed': self.options.seed if self.options.sample is not None else None,
            'sample_population': self.sample_population,
            'duration_s': round(duration, 3),
            'report_path': self.options.report_path,
        }
        if self.fallback_reason:
            result['fallback_reason'] = scrub(self.fallback_reason, self.secrets)
        return result

    def write_report(self, result):
        """Write the full report as JSON (atomically); no secrets."""
        path = self.options.report_path
        report = dict(result)
        report['source_spec'] = self.source_spec.to_dict(redact=True)
        report['dest_spec'] = self.dest_spec.to_dict(redact=True)
        report['options'] = self.options.to_dict()
        report['generated_at'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        report['list_limit'] = LIST_LIMIT
        text = scrub(json.dumps(report, indent=2, sort_keys=True, default=str), self.secrets)
        directory = os.path.dirname(path) or '.'
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            handle, tmp = tempfile.mkstemp(prefix='.verify-', dir=directory)
            try:
                with os.fdopen(handle, 'w') as out:
                    out.write(text + '\n')
                os.chmod(tmp, 0o644)
                os.rename(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except (IOError, OSError) as exc:
            raise ConfigError('report_path %s cannot be written: %s' % (path, exc.strerror or exc), step='report')
        return path
