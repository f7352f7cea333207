# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DestIndex: the destination listing merged with the source listing replaces per-object HEADs."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.storeshift.objstore.plugins.module_utils import store_localfs
from ansible_collections.storeshift.objstore.plugins.module_utils.engine import DestIndex, MigrationOptions, Migrator
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import TransientError
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec
from ansible_collections.storeshift.objstore.plugins.module_utils.store import ObjectInfo


class FakeStore(object):
    def __init__(self, keys, fail_after=None):
        self.keys = keys
        self.fail_after = fail_after

    def list(self, prefix=''):
        for index, key in enumerate(k for k in self.keys if k.startswith(prefix)):
            if self.fail_after is not None and index >= self.fail_after:
                raise TransientError('listing broke')
            yield ObjectInfo(key, size=1)


def answers(index, keys):
    return [(known, info.key if info is not None else None) for known, info in (index.lookup(k) for k in keys)]


def test_merge_in_order():
    index = DestIndex(FakeStore(['a', 'c', 'd']), [''])
    assert answers(index, ['a', 'b', 'c', 'e']) == [(True, 'a'), (True, None), (True, 'c'), (True, None)]


def test_source_out_of_order_turns_it_off():
    index = DestIndex(FakeStore(['a', 'b']), [''])
    assert answers(index, ['b', 'a', 'c']) == [(True, 'b'), (False, None), (False, None)]


def test_dest_out_of_order_turns_it_off():
    index = DestIndex(FakeStore(['a', 'c', 'b']), [''])
    assert answers(index, ['a', 'z']) == [(True, 'a'), (False, None)]


def test_dest_listing_failure_turns_it_off():
    index = DestIndex(FakeStore(['a', 'b', 'c'], fail_after=1), [''])
    assert answers(index, ['a', 'c']) == [(True, 'a'), (False, None)]


def test_several_prefixes():
    index = DestIndex(FakeStore(['p/1', 'q/1', 'r/1']), ['p/', 'r/'])
    assert answers(index, ['p/1', 'p/2', 'r/1']) == [(True, 'p/1'), (True, None), (True, 'r/1')]


def localfs(path):
    return StoreSpec.from_dict({'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': str(path)}}})


def test_engine_skips_heads_and_keeps_equal_objects(tmp_path, monkeypatch):
    src, dst = tmp_path / 'src', tmp_path / 'dst'
    for index in range(30):
        path = src / 'k' / ('%02d' % index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(100 + index))
    (dst / 'k').mkdir(parents=True)
    for index in range(10):  # already there and equal: compared, skipped, never PUT again
        (dst / 'k' / ('%02d' % index)).write_bytes((src / 'k' / ('%02d' % index)).read_bytes())
    (dst / 'k' / '10').write_bytes(b'different')
    stats = []
    real_stat = store_localfs.LocalfsStore.stat

    def counting_stat(self, key):
        stats.append(key)
        return real_stat(self, key)
    monkeypatch.setattr(store_localfs.LocalfsStore, 'stat', counting_stat)
    migrator = Migrator(localfs(src), localfs(dst), MigrationOptions(workers=4),
                        ledger_location=str(tmp_path / 'ledger.sqlite'))
    summary = migrator.run()
    assert summary['run_state'] == 'complete'
    assert summary['objects_skipped'] == 10
    assert migrator.puts == 20
    assert stats == []
    for index in range(30):
        name = 'k/%02d' % index
        assert (dst / name).read_bytes() == (src / name).read_bytes()
