"""Small helpers shared by the integration tests (stores from spec dicts, seeding, comparing)."""
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.storeshift.objstore.plugins.module_utils import codec
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store


def spec_of(spec_dict, **compression):
    data = dict(spec_dict)
    if compression:
        data['compression'] = dict(data.get('compression') or {}, **compression)
    return StoreSpec.from_dict(data)


def store_of(spec_dict, db_connect=None):
    return open_store(spec_of(spec_dict), db_connect=db_connect)


def seed(spec_dict, count, size=512, prefix='scanner/layers/', db_connect=None, workers=16):
    """Write ``count`` random objects; returns {key: sha256 of content}."""
    store = store_of(spec_dict, db_connect)
    spec = spec_of(spec_dict)

    def one(index):
        key = '%s%05d/sbom.cdx.json' % (prefix, index)
        data = os.urandom(size + index % 7)
        stream, stored_size, _codec = codec.encode_stream(io.BytesIO(data), len(data), spec.compression_enabled,
                                                          spec.min_size_kbytes)
        if stored_size is None:
            stream = io.BytesIO(stream.read())
            stored_size = len(stream.getvalue())
        store.put(key, stream, size=stored_size)
        return key, hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(workers) as pool:
        result = dict(pool.map(one, range(count)))
    store.close()
    return result


def logical_digests(spec_dict, db_connect=None, prefix=''):
    """{key: sha256 of logical content} for every object of a store."""
    spec = spec_of(spec_dict)
    store = open_store(spec, db_connect=db_connect)
    keys = [info.key for info in store.list(prefix)]

    def one(key):
        raw = store.open(key)
        try:
            return key, codec.sha256_of_stream(codec.decode_stream(raw, spec.compression_enabled))[0]
        finally:
            raw.close()

    with ThreadPoolExecutor(16) as pool:
        result = dict(pool.map(one, keys))
    store.close()
    return result


def run_isolated_roundtrip(spec, size, key, known=True, env=None):
    """Run roundtrip_child.py in a process that does not inherit pytest's peak RSS.

    Linux keeps ru_maxrss across execve(), and a child forked from this (large) pytest
    process starts with pytest's high-water mark; /bin/sh forks the interpreter as a
    fresh process (it does not exec it in place: a command follows), so its
    ru_maxrss counts only its own memory.
    """
    import json
    import subprocess
    import sys
    child = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'roundtrip_child.py')
    command = ['/bin/sh', '-c', '"$0" "$1" "$2" "$3" "$4"; rc=$?; exit $rc', sys.executable, child,
               str(size), key, 'known' if known else 'unknown']
    env = dict(os.environ, STORE_SPEC=json.dumps(spec), **(env or {}))
    return subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300, check=False)


def sql(dsn, query, args=None, fetch=True):
    """Run one statement in its own transaction; the rows when ``fetch``."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            rows = cur.fetchall() if fetch else None
        conn.commit()
        return rows
    finally:
        conn.close()
