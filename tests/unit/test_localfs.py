# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LocalfsStore: key <-> path mapping, validation, sorted lazy listing, atomic writes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import inspect
import io
import os
import stat

import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils import errors, specs
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store
from ansible_collections.storeshift.objstore.plugins.module_utils.store_localfs import TMP_PREFIX, LocalfsStore


def _store(path):
    spec = specs.StoreSpec.from_dict({'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': str(path)}}})
    store = open_store(spec)
    assert isinstance(store, LocalfsStore) and store.supports_retention is False
    return store


@pytest.fixture
def store(tmp_path):
    root = tmp_path / 'archive'
    root.mkdir()
    return _store(root)


def _tmp_files(root):
    found = []
    for dirpath, _dirs, files in os.walk(str(root)):
        found.extend(os.path.join(dirpath, f) for f in files if f.startswith(TMP_PREFIX))
    return found


def test_key_maps_to_path(store):
    assert store.path_for('a/b/c.json') == os.path.join(store.root, 'a', 'b', 'c.json')
    store.put('a/b/c.json', io.BytesIO(b'{}'))
    with open(os.path.join(store.root, 'a', 'b', 'c.json'), 'rb') as handle:
        assert handle.read() == b'{}'


@pytest.mark.parametrize('key', ['../escape', 'a/../../b', '/etc/passwd', 'a//b', './a', 'a/./b', 'a/..', '',
                                 'a/' + TMP_PREFIX + 'x', 'a\x00b'])
def test_bad_keys_are_rejected(store, key):
    for call in (lambda: store.put(key, io.BytesIO(b'x')), lambda: store.open(key), lambda: store.stat(key),
                 lambda: store.delete(key)):
        with pytest.raises(errors.ConfigError) as info:
            call()
        assert info.value.key == key
        if key:
            assert repr(key)[1:-1] in str(info.value) or key in str(info.value)
    assert os.listdir(store.root) == []


def test_bad_prefix_is_rejected(store):
    with pytest.raises(errors.ConfigError):
        list(store.list('../'))


def test_listing_is_lazy_sorted_and_skips_temp_files(store):
    keys = ['a/b', 'a-c', 'a/a/z', 'b', 'a.x/y', 'A', 'a/b0', u'\u00e9/1']
    for key in keys:
        store.put(key, io.BytesIO(key.encode('utf-8')))
    with open(os.path.join(store.root, 'a', TMP_PREFIX + 'leftover'), 'wb') as handle:
        handle.write(b'partial')
    listing = store.list()
    assert inspect.isgenerator(listing)
    found = [(i.key, i.size) for i in listing]
    assert [k for k, dummy in found] == sorted(keys)
    assert dict(found) == dict((k, len(k.encode('utf-8'))) for k in keys)
    assert [i.key for i in store.list('a/')] == ['a/a/z', 'a/b', 'a/b0']
    assert [i.key for i in store.list('a')] == sorted(['a/b', 'a-c', 'a/a/z', 'a.x/y', 'a/b0'])
    assert [i.key for i in store.list('a/b')] == ['a/b', 'a/b0']
    assert list(store.list('zzz/')) == []
    assert list(store.list('zzz')) == []


def test_stat_open_delete(store):
    assert store.stat('x/y') is None
    with pytest.raises(errors.ObjectMissingError):
        store.open('x/y')
    store.put('x/y', io.BytesIO(b'12345'), size=5)
    assert store.stat('x/y').size == 5
    with store.open('x/y') as handle:
        assert handle.read() == b'12345'
    assert store.stat('x') is None  # a directory is not an object
    with pytest.raises(errors.ObjectMissingError):
        store.open('x')
    store.delete('x')  # not an object: nothing to do
    store.delete('x/y')
    store.delete('x/y')
    assert store.stat('x/y') is None


def test_failed_write_leaves_nothing(store):
    class Boom(object):
        def __init__(self):
            self.calls = 0

        def read(self, size=-1):
            self.calls += 1
            if self.calls > 2:
                raise errors.TransientError('source went away')
            return b'x' * 1000

    store.put('k/obj', io.BytesIO(b'old version'))
    with pytest.raises(errors.TransientError):
        store.put('k/obj', Boom())
    with store.open('k/obj') as handle:
        assert handle.read() == b'old version'  # the old object is untouched
    with pytest.raises(errors.IntegrityError):
        store.put('k/new', io.BytesIO(b'abc'), size=99)
    assert store.stat('k/new') is None
    assert _tmp_files(store.root) == []


def test_file_mode_follows_umask(store):
    old = os.umask(0o022)
    try:
        store.put('m/f', io.BytesIO(b'x'))
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(store.path_for('m/f')).st_mode)
    assert mode == 0o644


def test_check_access(tmp_path):
    missing = _store(tmp_path / 'nope')
    with pytest.raises(errors.BucketMissingError) as info:
        missing.check_access()
    assert str(tmp_path / 'nope') in str(info.value)
    missing.check_access(create_bucket=True)
    assert (tmp_path / 'nope').is_dir()
    assert _tmp_files(tmp_path) == []
    afile = tmp_path / 'file'
    afile.write_bytes(b'')
    with pytest.raises(errors.ConfigError):
        _store(afile).check_access()


@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() != 0, reason='needs root')
def test_root_writes_files_owned_by_the_tree_owner(tmp_path):
    root = tmp_path / 'owned'
    root.mkdir()
    os.chown(str(root), 4321, 4322)
    store = _store(root)
    store.put('d1/d2/file', io.BytesIO(b'data'))
    for path in ('d1', 'd1/d2', 'd1/d2/file'):
        info = os.stat(os.path.join(str(root), path))
        assert (info.st_uid, info.st_gid) == (4321, 4322), path


@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() == 0, reason='root bypasses permissions')
def test_permission_denied(tmp_path):
    root = tmp_path / 'ro'
    root.mkdir()
    os.chmod(str(root), 0o555)
    try:
        with pytest.raises(errors.AccessDeniedError):
            _store(root).put('a/b', io.BytesIO(b'x'))
        with pytest.raises(errors.AccessDeniedError):
            _store(root).check_access()
    finally:
        os.chmod(str(root), 0o755)
