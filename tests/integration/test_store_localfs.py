# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LocalfsStore on real file systems: atomicity under a killed writer, a full
tmpfs (ENOSPC), a read-only mount (EROFS), concurrent writers."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils import errors, specs
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store
from ansible_collections.storeshift.objstore.plugins.module_utils.store_localfs import TMP_PREFIX

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MIB = 1024 * 1024


def _store(path):
    return open_store(specs.StoreSpec.from_dict(
        {'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': str(path)}}}))


def _tmp_files(root):
    found = []
    for dirpath, _dirs, files in os.walk(str(root)):
        found.extend(os.path.join(dirpath, f) for f in files if f.startswith(TMP_PREFIX))
    return found


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where mounting is refused)."""
    mountpoint = tmp_path / 'tmpfs'
    mountpoint.mkdir()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mountpoint)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        pytest.skip('cannot mount a tmpfs here: %s' % result.stdout.decode(errors='replace').strip())
    try:
        yield mountpoint
    finally:
        subprocess.run(['umount', '-l', str(mountpoint)], check=False)


def test_full_disk_is_space_error(tmpfs):
    store = _store(tmpfs)
    store.check_access()
    store.put('fits/small', io.BytesIO(b'x' * 1000))
    with pytest.raises(errors.SpaceError) as info:
        store.put('too/big', io.BytesIO(os.urandom(2 * MIB)), size=2 * MIB)
    assert str(info.value) == 'no space left on device writing %s' % os.path.join(str(tmpfs), 'too', 'big')
    assert info.value.cause == 'no space left'
    assert store.stat('too/big') is None
    assert _tmp_files(tmpfs) == []  # the partial temp file was removed, the space is back
    store.put('after/full', io.BytesIO(b'y' * 1000))
    assert [i.key for i in store.list()] == ['after/full', 'fits/small']


def test_read_only_mount_is_access_denied(tmpfs):
    store = _store(tmpfs)
    store.put('a/b', io.BytesIO(b'x'))
    subprocess.check_call(['mount', '-o', 'remount,ro', str(tmpfs)])
    with pytest.raises(errors.AccessDeniedError) as info:
        store.put('a/c', io.BytesIO(b'x'))
    assert 'read-only' in str(info.value)
    with pytest.raises(errors.AccessDeniedError):
        store.check_access()
    with store.open('a/b') as handle:  # reads still work
        assert handle.read() == b'x'


def test_killed_writer_leaves_no_partial_object(tmp_path):
    """SIGKILL in the middle of a put: the key is either absent or the old object, never a prefix."""
    root = tmp_path / 'archive'
    root.mkdir()
    store = _store(root)
    store.put('doc/obj', io.BytesIO(b'OLD' * 1000))
    script = textwrap.dedent('''
        import sys, time
        from ansible_collections.storeshift.objstore.plugins.module_utils import specs
        from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store
        store = open_store(specs.StoreSpec.from_dict(
            {'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': sys.argv[1]}}}))

        class Slow(object):
            def read(self, size=-1):
                sys.stdout.write('chunk\\n')
                sys.stdout.flush()
                time.sleep(0.05)
                return b'N' * 65536

        store.put('doc/obj', Slow())
    ''')
    env = dict(os.environ)
    env.setdefault('PYTHONPATH', os.path.join(ROOT, '.build', 'collections'))
    proc = subprocess.Popen([sys.executable, '-c', script, str(root)], stdout=subprocess.PIPE, env=env)
    for dummy in range(5):
        assert proc.stdout.readline() == b'chunk\n'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with store.open('doc/obj') as handle:
        assert handle.read() == b'OLD' * 1000
    leftovers = _tmp_files(root)
    assert len(leftovers) == 1 and os.path.getsize(leftovers[0]) > 0  # the killed writer's temp file...
    assert [i.key for i in store.list()] == ['doc/obj']  # ...is never listed as an object
    store.put('doc/obj', io.BytesIO(b'NEW'))
    with store.open('doc/obj') as handle:
        assert handle.read() == b'NEW'


def test_concurrent_writers_same_and_different_keys(tmp_path):
    store = _store(tmp_path / 'archive')
    store.check_access(create_bucket=True)
    payloads = dict(('v%d' % n, os.urandom(50000 + n)) for n in range(16))

    def write(item):
        name, data = item
        store.put('shared/key', io.BytesIO(data))  # same key from every thread: last rename wins
        store.put('own/%s/key' % name, io.BytesIO(data))

    started = time.time()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(write, sorted(payloads.items())))
    assert time.time() - started < 30
    with store.open('shared/key') as handle:
        assert handle.read() in payloads.values()  # one whole payload, never a mix
    for name, data in payloads.items():
        with store.open('own/%s/key' % name) as handle:
            assert handle.read() == data
    assert _tmp_files(tmp_path) == []
    assert len(list(store.list('own/'))) == 16
