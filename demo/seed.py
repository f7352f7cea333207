# -*- coding: utf-8 -*-
"""Seed the demo: buckets on the local stack, sample scanner artefacts, an Anchore database.

Writes demo/.work/stores.yml (Ansible vars: the demo's store specs) and prints nothing secret.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = os.path.join(HERE, '.work')
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from conftest import read_stack_env  # noqa: E402  (the stack's env reader)

from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec  # noqa: E402
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store  # noqa: E402

ARTEFACTS = int(os.environ.get('DEMO_ARTEFACTS', '2000'))


def anchore_tables(dsn):
    """The demo database plays Anchore's: give it Anchore's tables once."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.archive_metadata')")
            if cur.fetchone()[0] is None:
                with open(os.path.join(REPO, 'tests', 'stack', 'anchore_schema.sql')) as handle:
                    cur.execute(handle.read())
    finally:
        conn.close()


def main():
    env = read_stack_env()
    anchore_tables(env['OBJSTORE_PG_DSN'])
    os.makedirs(WORK, exist_ok=True)
    run = uuid.uuid4().hex[:8]
    stores = {
        'demo_minio': {'storage_driver': {'name': 's3', 'config': {
            'url': env['OBJSTORE_S3_URL'], 'access_key': env['OBJSTORE_S3_ACCESS_KEY'],
            'secret_key': env['OBJSTORE_S3_SECRET_KEY'], 'region': env['OBJSTORE_S3_REGION'],
            'bucket': 'scanner-artifacts-%s' % run, 'create_bucket': True}}},
        'demo_rustfs': {'storage_driver': {'name': 'rustfs', 'config': {
            'endpoint': env['OBJSTORE_RUSTFS_URL'], 'bucket': 'scanner-artifacts-%s' % run,
            'api_key_header': env['OBJSTORE_RUSTFS_API_KEY_HEADER'], 'api_key': env['OBJSTORE_RUSTFS_API_KEY']}},
            'compression': {'enabled': True, 'min_size_kbytes': 4}},
        'demo_localfs': {'storage_driver': {'name': 'localfs', 'config': {
            'archive_data_dir': os.path.join(WORK, 'localfs-%s' % run)}}},
        'demo_db': {'storage_driver': {'name': 'db2', 'config': {}}},
    }
    source = open_store(StoreSpec.from_dict(stores['demo_minio']))
    source.check_access(create_bucket=True)
    dest = open_store(StoreSpec.from_dict(stores['demo_rustfs']))
    dest.check_access(create_bucket=True)

    def artefact(index):
        digest = hashlib.sha256(b'layer-%d' % index).hexdigest()
        body = json.dumps({'bomFormat': 'CycloneDX', 'specVersion': '1.5', 'serialNumber': 'urn:uuid:%s' % uuid.uuid4(),
                           'components': [{'name': 'pkg-%d-%d' % (index, n), 'version': '1.%d' % n}
                                          for n in range(20 + index % 200)]}).encode()
        source.put('scanner/layers/sha256:%s/sbom.cdx.json' % digest, io.BytesIO(body), size=len(body))
        return len(body)

    with ThreadPoolExecutor(16) as pool:
        total = sum(pool.map(artefact, range(ARTEFACTS)))
    with open(os.path.join(WORK, 'stores.yml'), 'w') as handle:
        json.dump(dict(stores, demo_db_connect=env['OBJSTORE_PG_DSN'], demo_ledger=os.path.join(WORK, 'ledger.sqlite'),
                       demo_report=os.path.join(WORK, 'verify-report.json')), handle, indent=2)
    os.chmod(os.path.join(WORK, 'stores.yml'), 0o600)
    where = StoreSpec.from_dict(stores['demo_minio']).describe()
    print('seeded %d scanner SBOMs (%.1f MiB) into %s' % (ARTEFACTS, total / 1048576.0, where))


if __name__ == '__main__':
    main()
