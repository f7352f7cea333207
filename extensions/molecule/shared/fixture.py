# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Molecule fixture helper: free ports, an Anchore database, seeded artefacts, source counts.

    fixture.py ports N                                   JSON list of N free 127.0.0.1 ports
    fixture.py anchore-db --dsn DSN --name NAME --schema FILE   create database NAME with Anchore's tables, print its DSN
    fixture.py drop-db --dsn DSN --name NAME
    fixture.py seed --config FILE --section S --count N [--db-connect DSN] [--layout objects|anchore]
                                                         write N artefacts, print a manifest (id -> sha256)
    fixture.py count --config FILE --section S [--db-connect DSN]    number of objects in the store
    fixture.py drop-store --config FILE --section S      delete every object of the store (teardown)
"""

from __future__ import absolute_import, division, print_function

import argparse
import hashlib
import io
import json
import socket
import sys

from ansible_collections.storeshift.objstore.plugins.module_utils.codec import encode_stream
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import load_spec_from_config
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store


def free_ports(count):
    socks, ports = [], []
    for dummy in range(count):
        sock = socket.socket()
        sock.bind(('127.0.0.1', 0))
        socks.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    return ports


def _dsn_for(dsn, name):
    import re
    return re.sub(r'/[^/?]*(\?|$)', '/' + name + r'\1', dsn, count=1) if '://' in dsn else dsn + ' dbname=' + name


def anchore_db(dsn, name, schema):
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('SELECT 1 FROM pg_database WHERE datname = %s', (name,))
        if not cur.fetchone():
            cur.execute('CREATE DATABASE "%s"' % name)
    conn.close()
    target = _dsn_for(dsn, name)
    conn = psycopg2.connect(target)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('archive_metadata')")
        if cur.fetchone()[0] is None:
            with open(schema) as handle:
                cur.execute(handle.read())
    conn.close()
    return target


def drop_db(dsn, name):
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    conn.close()


def artefact(i):
    doc = {'bomFormat': 'CycloneDX', 'specVersion': '1.5', 'serialNumber': 'urn:uuid:%08d' % i,
           'components': [{'name': 'pkg-%d-%d' % (i, j), 'version': '1.%d' % j} for j in range(1 + i % 7)]}
    if i % 5 == 0:  # a few large, compressible ones
        doc['padding'] = 'x' * (150 * 1024)
    return json.dumps(doc, sort_keys=True).encode('utf-8')


def seed(args):
    spec = load_spec_from_config(args.config, args.section)
    store = open_store(spec, db_connect=args.db_connect)
    store.check_access(create_bucket=True)
    manifest = {}
    catalog = None
    if args.layout == 'anchore':
        import psycopg2
        from ansible_collections.storeshift.objstore.plugins.module_utils import anchore
        catalog = psycopg2.connect(args.db_connect)
    for i in range(args.count):
        data = artefact(i)
        digest = 'sha256:' + hashlib.sha256(('layer-%d' % i).encode()).hexdigest()
        if args.layout == 'objects':
            key = 'scanner/layers/%s/sbom.cdx.json' % digest
            stream, stored_size, _codec = encode_stream(io.BytesIO(data), len(data), spec.compression_enabled,
                                                        spec.min_size_kbytes)
            store.put(key, stream, size=stored_size)
            manifest[digest] = hashlib.sha256(data).hexdigest()
        else:
            user, bucket, archive_id = 'admin', ('analysis_archive' if i % 4 == 0 else 'analysis_data'), digest
            if bucket == 'analysis_archive':
                archive_id = digest + '.tar.gz'
            key, url = anchore.anchore_location(spec, user, bucket, archive_id)
            stream, compressed = anchore.encode_for_anchore(spec, io.BytesIO(data), len(data))
            stored = stream.read()
            store.put(key, io.BytesIO(stored), size=len(stored))
            with catalog, catalog.cursor() as cur:
                cur.execute('INSERT INTO archive_metadata (bucket, "archiveId", "userId", "documentName", content_url, '
                            'is_compressed, digest, size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) '
                            'ON CONFLICT DO NOTHING',
                            (bucket, archive_id, user, archive_id + '.json', url, compressed,
                             hashlib.md5(stored).hexdigest(), len(stored)))
            manifest['%s/%s/%s' % (user, bucket, archive_id)] = hashlib.sha256(data).hexdigest()
    store.close()
    if catalog is not None:
        catalog.close()
    return manifest


def count(args):
    spec = load_spec_from_config(args.config, args.section)
    store = open_store(spec, db_connect=args.db_connect)
    total = sum(1 for info in store.list('') if not info.key.startswith('storeshift-probe/'))
    store.close()
    return total


def drop_store(args):
    spec = load_spec_from_config(args.config, args.section)
    store = open_store(spec, db_connect=args.db_connect)
    keys = [info.key for info in store.list('')]
    for key in keys:
        store.delete(key)
    store.close()
    return len(keys)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest='cmd')
    p = sub.add_parser('ports')
    p.add_argument('n', type=int)
    p = sub.add_parser('anchore-db')
    p.add_argument('--dsn', required=True)
    p.add_argument('--name', required=True)
    p.add_argument('--schema', required=True)
    p = sub.add_parser('drop-db')
    p.add_argument('--dsn', required=True)
    p.add_argument('--name', required=True)
    for name in ('seed', 'count', 'drop-store'):
        p = sub.add_parser(name)
        p.add_argument('--config', required=True)
        p.add_argument('--section', required=True)
        p.add_argument('--db-connect')
        p.add_argument('--count', type=int, default=20)
        p.add_argument('--layout', default='objects', choices=['objects', 'anchore'])
    args = parser.parse_args()
    if args.cmd == 'ports':
        out = free_ports(args.n)
    elif args.cmd == 'anchore-db':
        out = anchore_db(args.dsn, args.name, args.schema)
    elif args.cmd == 'drop-db':
        drop_db(args.dsn, args.name)
        out = 'dropped'
    elif args.cmd == 'seed':
        out = seed(args)
    elif args.cmd == 'count':
        out = count(args)
    else:
        out = drop_store(args)
    json.dump(out, sys.stdout)
    return 0


if __name__ == '__main__':
    sys.exit(main())
