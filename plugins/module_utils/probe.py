# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store check: connect, write a probe object, read it back, delete it, confirm it is gone."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import socket
import time
import uuid

from ansible_collections.storeshift.objstore.plugins.module_utils.codec import (
    HashingReader,
    bytes_stream,
    decode_stream,
    encode_stream,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import IntegrityError, ObjstoreError
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store

# userId/bucket/archiveId so that the db drivers can hold it too.
PROBE_PREFIX = 'storeshift-probe/objstore_check/'


def probe_key():
    host = socket.gethostname().split('.')[0] or 'host'
    return '%s%s-%d-%s' % (PROBE_PREFIX, host, os.getpid(), uuid.uuid4().hex[:12])


def run_probe(spec, db_connect=None, create_bucket=False, write=True, probe_size=1024):
    """Return ``{'probe_key', 'steps', 'error'}``; ``error`` is None or the ObjstoreError met."""
    key = probe_key()
    payload = os.urandom(max(0, int(probe_size)))
    expected = hashlib.sha256(payload).hexdigest()
    steps = []
    state = {'store': None, 'written': False}

    def step(name, func):
        started = time.time()
        try:
            func()
        except ObjstoreError as exc:
            exc.step = name
            steps.append({'step': name, 'ok': False, 'seconds': round(time.time() - started, 4),
                          'error': exc.message, 'cause': exc.cause})
            raise
        steps.append({'step': name, 'ok': True, 'seconds': round(time.time() - started, 4)})

    def connect():
        state['store'] = open_store(spec, db_connect=db_connect)
        state['store'].check_access(create_bucket=create_bucket)

    def do_write():
        stream, size, _codec = encode_stream(bytes_stream(payload), len(payload),
                                             spec.compression_enabled, spec.min_size_kbytes)
        state['store'].put(key, stream, size=size)
        state['written'] = True

    def do_read():
        raw = state['store'].open(key)
        try:
            hasher = HashingReader(decode_stream(raw, spec.compression_enabled)).drain()
        finally:
            raw.close()
        if hasher.hexdigest() != expected or hasher.size != len(payload):
            raise IntegrityError('probe object read back differs from what was written (%d bytes read, %d written)'
                                 % (hasher.size, len(payload)), key=key)

    def do_delete():
        state['store'].delete(key)
        state['written'] = False

    def confirm_deleted():
        if state['store'].exists(key):
            raise IntegrityError('probe object %s still exists after delete' % key, key=key)

    error = None
    try:
        step('connect', connect)
        if write:
            step('write', do_write)
            step('read', do_read)
            step('delete', do_delete)
            step('confirm_deleted', confirm_deleted)
    except ObjstoreError as exc:
        error = exc
    finally:
        store = state['store']
        if store is not None:
            if state['written']:
                try:
                    store.delete(key)
                except ObjstoreError:
                    pass  # best effort: the failure that matters is already recorded
            store.close()
    return {'probe_key': key, 'steps': steps, 'error': error}
