# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""objstore_verify against the real test stack (no mocks).

Fixtures come from tests/integration/conftest.py. Pairs of stores are set
up with the store API (or the migration engine), then damaged in exactly
one way each, and the verifier must report exactly that.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import zlib

import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils import codec, specs, verify
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spec(data, compression=None):
    data = copy.deepcopy(data)
    if compression is not None:
        data['compression'] = compression
    return specs.StoreSpec.from_dict(data)


def _put(store, key, data):
    store.put(key, io.BytesIO(data), size=len(data))


def _payload(i):
    return (b'object %d ' % i) * (i % 7 + 1) + hashlib.sha256(b'%d' % i).digest()


def _fill(store, keys):
    for i, key in enumerate(keys):
        _put(store, key, _payload(i))


def _run(source, dest, db_connect=None, **options):
    return verify.Verifier(source, dest, verify.VerifyOptions(**options), db_connect=db_connect).run()


KEYS = ['admin/analysis_data/sha256:%04d' % i for i in range(24)] + ['admin/manifest_data/m-%02d' % i for i in range(6)]


# ---------------------------------------------------------------------------
# objects layout
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('dest_fixture', ['rustfs_spec', 'db2_spec'])
def test_detects_each_difference_exactly(request, s3_spec, dest_fixture, anchore_db, tmp_path):
    source_spec = _spec(s3_spec)
    dest_spec = _spec(request.getfixturevalue(dest_fixture))
    db = anchore_db if dest_spec.driver == 'db2' else None
    with open_store(source_spec) as source, open_store(dest_spec, db_connect=db) as dest:
        _fill(source, KEYS)
        _fill(dest, KEYS)
        equal = _run(source_spec, dest_spec, db_connect=db)
        assert equal['ok'], equal
        assert (equal['checked'], equal['matched'], equal['extra']) == (30, 30, 0)
        assert equal['summary'] == 'verified 30 objects: 30 matched, 0 missing, 0 mismatched, 0 extra'
        # db2 lists in column order, not UTF-8 order: it must be paired by look-ups, not merged.
        assert equal['strategy'] == ('merge' if dest_spec.driver == 'rustfs' else 'lookup')

        dest.delete(KEYS[3])                                      # deleted
        flipped = bytearray(_payload(5))
        flipped[4] ^= 0x01
        _put(dest, KEYS[5], bytes(flipped))                       # one byte flipped
        _put(dest, KEYS[7], _payload(7)[:-1])                     # truncated
        _put(dest, 'admin/analysis_data/zz-extra', b'extra')      # extra
        report = tmp_path / 'report.json'
        result = _run(source_spec, dest_spec, db_connect=db, report_path=str(report))
    assert not result['ok']
    assert (result['checked'], result['matched'], result['missing'], result['mismatched'], result['extra'],
            result['errors']) == (30, 27, 1, 2, 1, 0)
    assert result['missing_keys'] == [KEYS[3]]
    assert result['extra_keys'] == ['admin/analysis_data/zz-extra']
    assert dict((m['key'], m['reason']) for m in result['mismatched_keys']) == {KEYS[5]: 'sha256', KEYS[7]: 'size'}
    assert result['summary'] == 'verified 30 objects: 27 matched, 1 missing, 2 mismatched, 1 extra'
    saved = json.loads(report.read_text())
    assert saved['missing_keys'] == [KEYS[3]] and saved['mismatched'] == 2
    text = report.read_text()
    for secret in (source_spec.config.get('secret_key'), dest_spec.config.get('api_key')):
        if secret:
            assert secret not in text


def test_sample_same_seed_same_keys(s3_spec, s3b_spec):
    source_spec, dest_spec = _spec(s3_spec), _spec(s3b_spec)
    keys = ['s/%03d' % i for i in range(60)]
    with open_store(source_spec) as source:
        _fill(source, keys)

    def sampled(seed, sample='10'):
        # The destination is empty: every sampled key shows up as missing.
        result = _run(source_spec, dest_spec, mode='exists', sample=sample, seed=seed)
        assert result['checked'] == result['missing'] and not result['extra_checked']
        return result['missing_keys']

    first = sampled(1)
    assert len(first) == 10 and first == sampled(1)
    assert sampled(2) != first
    assert set(first) <= set(keys)
    assert first == sorted(first)
    percent = sampled(5, '25%')
    assert 5 <= len(percent) <= 30 and percent == sampled(5, '25%')


def test_zstd_dest_equals_zlib_source_and_ledger_digests(s3_spec, s3b_spec, tmp_path):
    from ansible_collections.storeshift.objstore.plugins.module_utils import engine
    source_spec = _spec(s3_spec, {'enabled': True, 'min_size_kbytes': 0})
    dest_spec = _spec(s3b_spec, {'enabled': True, 'min_size_kbytes': 0})
    contents = dict(('z/%02d' % i, (b'{"doc": %d, "pad": "%s"}' % (i, b'x' * (100 * i)))) for i in range(12))
    with open_store(source_spec) as source:
        for key, data in contents.items():
            _put(source, key, zlib.compress(data))
    ledger = str(tmp_path / 'l.sqlite')
    migrated = engine.Migrator(source_spec, dest_spec, engine.MigrationOptions(workers=4),
                               ledger_location=ledger).run()
    assert migrated['objects_copied'] == 12, migrated
    with open_store(dest_spec) as dest:
        raw = dest.open('z/05')
        try:
            assert codec.looks_zstd(raw.read(4))     # really zstd on the destination
        finally:
            raw.close()
    for mode in ('sha256', 'size'):
        result = _run(source_spec, dest_spec, mode=mode)
        assert result['ok'] and result['matched'] == 12, result
    # With the ledger's digests the source is not read again, but the result is the same.
    with_ledger = verify.Verifier(source_spec, dest_spec, verify.VerifyOptions(), ledger_location=ledger,
                                  migration_id=migrated['migration_id']).run()
    assert with_ledger['ok'] and with_ledger['ledger_digests_used'] == 12, with_ledger
    with open_store(dest_spec) as dest:
        stream, _size, _kind = codec.encode_stream(io.BytesIO(contents['z/03'] + b' '), None, True, 0)
        data = stream.read()
        _put(dest, 'z/03', data)
    with_ledger = verify.Verifier(source_spec, dest_spec, verify.VerifyOptions(), ledger_location=ledger,
                                  migration_id=migrated['migration_id']).run()
    assert (with_ledger['mismatched'], with_ledger['mismatched_keys'][0]['key']) == (1, 'z/03')


# ---------------------------------------------------------------------------
# anchore layout
# ---------------------------------------------------------------------------

def _md5(data):
    return hashlib.md5(data).hexdigest()


def test_anchore_pointer_and_digest(anchore_db, db2_spec, s3_spec):
    import psycopg2
    from ansible_collections.storeshift.objstore.plugins.module_utils import anchore
    source_spec, dest_spec = _spec(db2_spec), _spec(s3_spec)
    docs = [('admin', 'analysis_data', 'sha256:%02d' % i) for i in range(8)]
    rows = []
    with open_store(source_spec, db_connect=anchore_db) as source, open_store(dest_spec) as dest:
        for i, (user, bucket, archive_id) in enumerate(docs):
            data = json.dumps({'doc': i, 'pad': 'y' * i}).encode()
            source_key, source_url = anchore.anchore_location(source_spec, user, bucket, archive_id)
            dest_key, dest_url = anchore.anchore_location(dest_spec, user, bucket, archive_id)
            _put(source, source_key, data)
            _put(dest, dest_key, data)
            rows.append((bucket, archive_id, user, archive_id + '.json', dest_url, False, _md5(data), len(data)))
        # doc 2: still points at the source; doc 4: recorded digest wrong; doc 6: dest content differs from the
        # source but matches its (rewritten) row.
        rows[2] = rows[2][:4] + (anchore.anchore_location(source_spec, *docs[2])[1],) + rows[2][5:]
        rows[4] = rows[4][:6] + ('0' * 32,) + rows[4][7:]
        other = b'{"doc": 6, "pad": "zzzzzz"}'
        _put(dest, anchore.anchore_location(dest_spec, *docs[6])[0], other)
        rows[6] = rows[6][:6] + (_md5(other), len(other))
        conn = psycopg2.connect(anchore_db)
        try:
            with conn, conn.cursor() as cur:
                cur.executemany('INSERT INTO archive_metadata (bucket, "archiveId", "userId", "documentName", '
                                'content_url, is_compressed, digest, size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)',
                                rows)
        finally:
            conn.close()
    result = _run(source_spec, dest_spec, db_connect=anchore_db, layout='anchore', buckets=['analysis_data'])
    assert (result['checked'], result['matched'], result['mismatched'], result['missing']) == (8, 5, 3, 0), result
    reasons = dict((m['key'], m['reason']) for m in result['mismatched_keys'])
    assert reasons == {'admin/analysis_data/sha256:02': 'anchore pointer',
                       'admin/analysis_data/sha256:04': 'digest',
                       'admin/analysis_data/sha256:06': 'sha256'}
    # Other buckets select nothing.
    assert _run(source_spec, dest_spec, db_connect=anchore_db, layout='anchore', buckets=['nothing'])['checked'] == 0


# ---------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------

def _module(stack_env, args, check=False):
    command = [os.path.join(REPO, '.venv', 'bin', 'ansible'), 'localhost', '-m', 'storeshift.objstore.objstore_verify',
               '-a', json.dumps(args), '-o']
    if check:
        command.append('--check')
    env = dict(stack_env, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, '.build', 'collections'),
               ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1')
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    out = proc.stdout
    body = out[out.index('{'):] if '{' in out else '{}'
    return proc.returncode, json.loads(body), out + proc.stderr


def test_module_fails_with_counts_or_reports(stack_env, secrets_of_stack, s3_spec, rustfs_spec, tmp_path):
    source_spec, dest_spec = _spec(s3_spec), _spec(rustfs_spec)
    with open_store(source_spec) as source, open_store(dest_spec) as dest:
        _fill(source, KEYS[:5])
        _fill(dest, KEYS[:4])
    args = {'source': s3_spec, 'dest': rustfs_spec, 'report_path': str(tmp_path / 'r.json')}
    rc, result, text = _module(stack_env, args)
    assert rc != 0, text
    assert result['msg'] == 'verified 5 objects: 4 matched, 1 missing, 0 mismatched, 0 extra'
    assert result['missing_keys'] == [KEYS[4]] and result['changed'] is False
    assert (tmp_path / 'r.json').exists()
    rc, result, text = _module(stack_env, dict(args, fail_on_mismatch=False, report_path=str(tmp_path / 'c.json')),
                               check=True)
    assert rc == 0, text
    assert result['ok'] is False and result['missing'] == 1 and result['changed'] is False
    assert not (tmp_path / 'c.json').exists()        # check mode verifies but writes no report
    for secret in secrets_of_stack:
        assert secret not in text
    assert secrets_of_stack and all(secret not in (tmp_path / 'r.json').read_text() for secret in secrets_of_stack)


@pytest.mark.parametrize('extra, words', [
    ({'sample': 'abc'}, 'sample'),
    ({'sample': '150%'}, 'sample'),
    ({'workers': -1}, 'workers'),
    ({'report_path': 'relative.json'}, 'report_path'),
    ({'migration_id': '20240101T000000-abc'}, 'ledger'),
])
def test_module_bad_input(stack_env, localfs_spec, tmp_path, extra, words):
    other = {'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': str(tmp_path)}}}
    rc, result, text = _module(stack_env, dict({'source': localfs_spec, 'dest': other}, **extra))
    assert rc != 0, text
    assert words in result['msg'], result


# ---------------------------------------------------------------------------
# bounded memory
# ---------------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent('''
    import json, resource, sys
    from ansible_collections.storeshift.objstore.plugins.module_utils import specs, verify
    def spec(path):
        return specs.StoreSpec.from_dict({'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': path}},
                                          'compression': {'enabled': False, 'min_size_kbytes': 0}})
    result = verify.Verifier(spec(sys.argv[1]), spec(sys.argv[2]), verify.VerifyOptions(workers=8)).run()
    # VmHWM: peak RSS of this process image (ru_maxrss may carry the forking parent's peak over exec).
    with open('/proc/self/status') as handle:
        result['maxrss_kib'] = int([l.split()[1] for l in handle if l.startswith('VmHWM:')][0])
    result['ru_maxrss_kib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))
''')


def test_bounded_memory_10000_objects(tmp_path, stack_env):
    src, dst = tmp_path / 'src', tmp_path / 'dst'
    count = 10000
    big = os.urandom(1024 * 1024) * 24                     # one 24 MiB object, streamed
    for i in range(count):
        name = os.path.join('d%02d' % (i % 50), 'o%05d' % i)
        if i < 50:
            (src / ('d%02d' % i)).mkdir(parents=True)
            (dst / ('d%02d' % i)).mkdir(parents=True)
        (src / name).write_bytes(b'%d' % i * 64)
        os.link(str(src / name), str(dst / name))           # same bytes, another key path: cheap to set up
    (src / 'big').write_bytes(big)
    (dst / 'big').write_bytes(big)
    env = dict(stack_env, PYTHONPATH=os.path.join(REPO, '.build', 'collections'))
    proc = subprocess.run([sys.executable, '-c', MEMORY_SCRIPT, str(src), str(dst)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result['ok'] and result['checked'] == count + 1, result['summary']
    assert result['summary'] == 'verified 10,001 objects: 10,001 matched, 0 missing, 0 mismatched, 0 extra'
    print('verify of %d objects: peak RSS %d KiB, %.1f s' % (count + 1, result['maxrss_kib'], result['duration_s']))
    assert result['maxrss_kib'] < 150 * 1024, result['maxrss_kib']
