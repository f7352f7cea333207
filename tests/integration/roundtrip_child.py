# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Child process of the big round-trip tests: streams SIZE seeded bytes into the store named by
$STORE_SPEC and back, then prints hashes, the S3 calls made and its own peak RSS as JSON.

    python roundtrip_child.py SIZE KEY known|unknown
"""

import json
import os
import random
import resource
import sys

from ansible_collections.storeshift.objstore.plugins.module_utils import codec, specs
from ansible_collections.storeshift.objstore.plugins.module_utils import store as store_mod


class Seeded(object):
    def __init__(self, size, seed):
        self.left = size
        self.rng = random.Random(seed)

    def read(self, n=-1):
        if n is None or n < 0 or n > self.left:
            n = self.left
        self.left -= n
        return self.rng.randbytes(n) if n else b''


size = int(sys.argv[1])
key = sys.argv[2]
known = sys.argv[3] == 'known'
store = store_mod.open_store(specs.StoreSpec.from_dict(json.loads(os.environ['STORE_SPEC'])))
calls = {}
if store.driver == 's3':
    def count(event_name=None, **kwargs):
        name = event_name.rsplit('.', 1)[-1]
        calls[name] = calls.get(name, 0) + 1
    store.client.meta.events.register('before-call.s3', count)
writer = codec.HashingReader(Seeded(size, 20240501))
confirmed = store.put(key, writer, size=size if known else None)
info = store.stat(key)
reader = codec.HashingReader(store.open(key))
while reader.read(1024 * 1024):
    pass
reader.close()
store.close()
hwm = None
if os.path.exists('/proc/self/status'):
    with open('/proc/self/status') as handle:
        for line in handle:
            if line.startswith('VmHWM:'):
                hwm = int(line.split()[1]) / 1024.0
print(json.dumps({'written': writer.hexdigest(), 'written_size': writer.size,
                  'read': reader.hexdigest(), 'read_size': reader.size, 'stat_size': info.size,
                  'etag': info.etag, 'stat_sha256': info.sha256, 'calls': calls, 'confirmed': confirmed,
                  'maxrss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                  'vmhwm_mib': hwm}))
