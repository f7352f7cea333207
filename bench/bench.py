# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: objstore_migrate against rclone and the sequential loop, in one run.

    .venv/bin/python bench/bench.py                 # the full benchmark (stack must be up: make stack-up)
    .venv/bin/python bench/bench.py --smoke         # tiny data sets, every code path, no speed assertion
    .venv/bin/python bench/bench.py --runs 5 --cases s3_small,resume

Every contender runs as its own child process; the parent polls the child's
process tree with psutil for the peak RSS (sum over the tree) and takes the
CPU seconds (user + sys) of the tree from ``getrusage(RUSAGE_CHILDREN)``.
Contenders of a case alternate (A B C A B C ...), after one uncounted warm-up
run of the first (the first run on an idle stack costs its servers more), and
the table shows medians.
Each run writes into a fresh destination bucket (and a fresh ledger), which
is emptied and dropped afterwards; sources are generated once per bench run
in fresh buckets / a fresh database and dropped at the end.

Results: ``bench/results/<timestamp>.md`` (table, machine, commands) and
``bench/results/<timestamp>.json`` (every single run).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_COLLECTIONS: another tree laid out as ansible_collections/storeshift/objstore (to compare a change)
COLLECTIONS = os.environ.get('BENCH_COLLECTIONS') or os.path.join(REPO, '.build', 'collections')
ENV_FILE = os.path.join(REPO, '.stack', 'env')
RESULTS = os.path.join(REPO, 'bench', 'results')
PYTHON = sys.executable
SELF = os.path.abspath(__file__)
KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB

if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

FULL = {
    'small_n': 5000, 'small_size': 16 * KIB,
    'small10k_n': 10000,
    'large_n': 40, 'large_size': 32 * MIB,
    'huge_size': GIB,
    'db_rows': 5000, 'db_size': 16 * KIB,
    'resume_n': 5000, 'resume_rate': None,
    'runs': 3, 'workers': 32,
    # Large objects: 5 runs (a run of 40 x 32 MiB moves by +-15 % here, whoever copies: a median of 3 is too
    # close to one run's luck).
    'large_runs': 5,
}
SMOKE = {
    'small_n': 50, 'small_size': 16 * KIB,
    'small10k_n': 60,
    'large_n': 2, 'large_size': 1 * MIB,
    'huge_size': 12 * MIB,        # above the multipart threshold: the streaming path
    'db_rows': 50, 'db_size': 16 * KIB,
    'resume_n': 200, 'resume_rate': 100.0,  # throttled so the kill lands mid-run
    'runs': 1, 'workers': 8, 'large_runs': 1,
}
CASES = ('s3_small', 's3_small_10k', 's3_large', 's3_huge', 'db_s3', 's3_rustfs', 'resume')
PLAYBOOK = """---
- name: objstore_migrate benchmark run
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Migrate
      storeshift.objstore.objstore_migrate:
        source: "{{ bench_source }}"
        dest: "{{ bench_dest }}"
        workers: "{{ bench_workers }}"
        ledger: "{{ bench_ledger }}"
        migration_id: "{{ bench_migration_id }}"
"""


# ---------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------

def read_env(path=ENV_FILE):
    if not os.path.exists(path):
        raise SystemExit('bench: %s is missing: start the stack first (make stack-up)' % path)
    # The env file outlives the servers (a reboot, a killed session): ask the stack before seeding.
    status = subprocess.run([PYTHON, os.path.join(REPO, 'tests', 'stack', 'stack.py'), 'status'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    if status.returncode != 0:
        raise SystemExit('bench: the stack is not running (stack.py status below): start it with make stack-up\n'
                         + status.stdout.rstrip())
    env = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line.startswith('export '):
                continue
            name, _sep, value = line[len('export '):].partition('=')
            parts = shlex.split(value)
            env[name] = parts[0] if parts else ''
    return env


def child_env():
    env = dict(os.environ)
    env['PYTHONPATH'] = COLLECTIONS + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    env['ANSIBLE_COLLECTIONS_PATH'] = COLLECTIONS
    env['PATH'] = os.path.dirname(PYTHON) + os.pathsep + env.get('PATH', '')
    env['ANSIBLE_LOCALHOST_WARNING'] = 'False'
    env['ANSIBLE_INVENTORY_UNPARSED_WARNING'] = 'False'
    env['ANSIBLE_NOCOLOR'] = '1'
    env['ANSIBLE_RETRY_FILES_ENABLED'] = 'False'
    return env


class Stack(object):
    def __init__(self, env):
        self.env = env
        self.s3 = {}
        for which, suffix in (('a', 'S3'), ('b', 'S3B')):
            self.s3[which] = {'url': env['OBJSTORE_%s_URL' % suffix],
                              'access_key': env['OBJSTORE_%s_ACCESS_KEY' % suffix],
                              'secret_key': env['OBJSTORE_%s_SECRET_KEY' % suffix],
                              'region': env.get('OBJSTORE_%s_REGION' % suffix) or 'us-east-1'}
        self.rustfs = {'endpoint': env['OBJSTORE_RUSTFS_URL'], 'api_key_header': env['OBJSTORE_RUSTFS_API_KEY_HEADER'],
                       'api_key': env['OBJSTORE_RUSTFS_API_KEY']}
        self.pg_dsn = env['OBJSTORE_PG_DSN']
        self.pg_super = env.get('OBJSTORE_PG_SUPERUSER_DSN')

    def client(self, which):
        import boto3
        from botocore.config import Config
        s = self.s3[which]
        return boto3.client('s3', endpoint_url=s['url'], aws_access_key_id=s['access_key'],
                            aws_secret_access_key=s['secret_key'], region_name=s['region'],
                            config=Config(s3={'addressing_style': 'path'}, max_pool_connections=64,
                                          retries={'max_attempts': 3, 'mode': 'standard'}))

    def s3_spec(self, which, bucket, create=False):
        config = dict(self.s3[which], bucket=bucket)
        if create:
            config['create_bucket'] = True
        return {'storage_driver': {'name': 's3', 'config': config}, 'compression': {'enabled': False}}

    def rustfs_spec(self, bucket):
        return {'storage_driver': {'name': 'rustfs', 'config': dict(self.rustfs, bucket=bucket)},
                'compression': {'enabled': False}}

    def dsn_for(self, dbname):
        from urllib.parse import urlsplit, urlunsplit
        parts = urlsplit(self.pg_dsn)
        return urlunsplit((parts.scheme, parts.netloc, '/' + dbname, parts.query, parts.fragment))

    # -- rustfs helpers -----------------------------------------------------
    def rustfs_session(self):
        import requests
        session = requests.Session()
        session.trust_env = False
        session.headers[self.rustfs['api_key_header']] = self.rustfs['api_key']
        return session

    def rustfs_bucket_url(self, bucket):
        return '%s/api/v1/buckets/%s' % (self.rustfs['endpoint'].rstrip('/'), bucket)


def unique(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:10])


# ---------------------------------------------------------------------------
# data sets
# ---------------------------------------------------------------------------

class RandomStream(object):
    """``size`` pseudo-random bytes, read in chunks (a 1 GiB object never sits in memory)."""

    def __init__(self, size, seed):
        self.left = size
        self.counter = 0
        self.seed = seed
        self.block = os.urandom(MIB)

    def read(self, size=-1):
        if self.left <= 0:
            return b''
        if size is None or size < 0 or size > self.left:
            size = self.left
        parts = []
        got = 0
        while got < size:
            # vary every MiB so that no store can deduplicate blocks
            self.counter += 1
            head = hashlib.sha256(b'%s-%d' % (self.seed.encode(), self.counter)).digest()
            part = (head + self.block[len(head):])[:min(MIB, size - got)]
            parts.append(part)
            got += len(part)
        self.left -= size
        return b''.join(parts)


def s3_seed(stack, which, bucket, count, size, prefix='bench/', workers=32):
    client = stack.client(which)
    client.create_bucket(Bucket=bucket)
    if size >= 8 * MIB:
        from boto3.s3.transfer import TransferConfig
        cfg = TransferConfig(multipart_threshold=64 * MIB, multipart_chunksize=64 * MIB, max_concurrency=4)

        def one(index):
            client.upload_fileobj(RandomStream(size, '%s-%d' % (bucket, index)), bucket,
                                  '%s%06d.bin' % (prefix, index), Config=cfg)
        workers = 2 if size >= 256 * MIB else 4
    else:
        def one(index):
            client.put_object(Bucket=bucket, Key='%s%06d.bin' % (prefix, index), Body=os.urandom(size))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(count)))
    return count


def s3_count(stack, which, bucket):
    client = stack.client(which)
    count = total = 0
    for page in client.get_paginator('list_objects_v2').paginate(Bucket=bucket):
        for item in page.get('Contents') or ():
            count += 1
            total += item['Size']
    return count, total


def s3_drop(stack, which, bucket):
    """Delete ``bucket`` and what it holds. SeaweedFS deletes a bucket that is not empty at once, with its
    volumes; deleting the objects first would queue the deletion of every chunk, and chunks whose volume
    went with the bucket before the queue reached them are retried for the rest of the server's life (in
    bursts once a minute, growing with every run: server CPU inside later contenders' runs). Other servers
    answer BucketNotEmpty: the objects go first."""
    client = stack.client(which)
    try:
        client.delete_bucket(Bucket=bucket)
        return
    except Exception as exc:  # noqa: BLE001 - BucketNotEmpty elsewhere: delete the objects first
        if 'NoSuchBucket' in str(exc):
            return
    try:
        for page in client.get_paginator('list_objects_v2').paginate(Bucket=bucket):
            keys = [{'Key': obj['Key']} for obj in page.get('Contents') or ()]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={'Objects': keys, 'Quiet': True})
        client.delete_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - best effort cleanup
        if 'NoSuchBucket' not in str(exc):
            say('cleanup of %s on s3%s: %s' % (bucket, which, exc))


def rustfs_create(stack, bucket):
    session = stack.rustfs_session()
    session.put(stack.rustfs_bucket_url(bucket), timeout=30).raise_for_status()


def rustfs_count(stack, bucket):
    session = stack.rustfs_session()
    count = total = 0
    token = None
    while True:
        params = {'limit': 1000}
        if token:
            params['continuation_token'] = token
        page = session.get(stack.rustfs_bucket_url(bucket) + '/objects', params=params, timeout=60).json()
        for item in page.get('objects') or ():
            count += 1
            total += int(item.get('size') or 0)
        token = page.get('next_continuation_token')
        if not page.get('is_truncated') or not token:
            return count, total


def rustfs_drop(stack, bucket):
    from urllib.parse import quote
    session = stack.rustfs_session()
    base = stack.rustfs_bucket_url(bucket)
    try:
        while True:
            page = session.get(base + '/objects', params={'limit': 1000}, timeout=60).json()
            keys = [item['key'] for item in page.get('objects') or ()]
            if not keys:
                break

            def one(key):
                session.delete('%s/objects/%s' % (base, quote(key, safe='/')), timeout=30)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, keys))
        session.delete(base, timeout=30)
    except Exception as exc:  # noqa: BLE001 - best effort cleanup
        say('cleanup of rustfs bucket %s: %s' % (bucket, exc))


def pg_create_db(stack, dbname, rows, size):
    """A fresh database with Anchore's schema and ``rows`` rows in object_storage (db2 layout)."""
    import psycopg2
    admin = psycopg2.connect(stack.pg_super or stack.pg_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute('CREATE DATABASE %s OWNER objstore' % dbname)
    admin.close()
    dsn = stack.dsn_for(dbname)
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        with open(os.path.join(REPO, 'tests', 'stack', 'anchore_schema.sql')) as handle:
            cur.execute(handle.read())
        now = int(time.time())
        batch = []
        for index in range(rows):
            batch.append(('admin', 'analysis_data', 'sha256-%06d' % index, '', psycopg2.Binary(os.urandom(size)),
                          now, now))
            if len(batch) >= 500 or index == rows - 1:
                cur.executemany('INSERT INTO object_storage ("userId", bucket, key, version, content, created_at, '
                                'last_updated) VALUES (%s, %s, %s, %s, %s, %s, %s)', batch)
                batch = []
    conn.close()
    return dsn


def pg_drop_db(stack, dbname):
    import psycopg2
    try:
        admin = psycopg2.connect(stack.pg_super or stack.pg_dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS %s' % dbname)
        admin.close()
    except Exception as exc:  # noqa: BLE001 - best effort cleanup
        say('cleanup of database %s: %s' % (dbname, exc))


# ---------------------------------------------------------------------------
# measuring one child process tree
# ---------------------------------------------------------------------------

def server_cpu_seconds(servers=None):
    """CPU seconds (user + sys) spent so far by the stack's servers (they share the cores with the copier):
    all of them, or those named in ``servers`` (``s3a``, ``s3b``, ``postgres``, ``rustfs``)."""
    import psutil
    total = 0.0
    pids = os.path.join(os.path.dirname(ENV_FILE), 'pids')
    names = ['%s.pid' % server for server in servers] if servers else \
        sorted(os.listdir(pids)) if os.path.isdir(pids) else ()
    for name in names:
        try:
            with open(os.path.join(pids, name)) as handle:
                proc = psutil.Process(int(handle.read().split()[0]))
            for member in [proc] + proc.children(recursive=True):
                times = member.cpu_times()
                total += times.user + times.system
        except (ValueError, IndexError, OSError, psutil.Error):
            continue
    return total


def settle(quiet=0.1, window=0.5, limit=20.0):
    """Write dirty pages out, then wait until the stack's servers are quiet (under ``quiet`` of a core
    over ``window`` seconds), at most ``limit`` seconds. Neither may land in the next contender's run:
    the kernel writes a seeded data set out about 30 s after it was written (1.3 GiB at about 90 MiB/s
    here, during whichever run comes then), and a dropped bucket's volumes are deleted in the
    background."""
    os.sync()
    deadline = time.monotonic() + limit
    last = server_cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(window)
        now = server_cpu_seconds()
        if now - last < quiet * window:
            return
        last = now


def measure(argv, env, workdir, on_poll=None, poll=0.05):
    """Run ``argv``; returns dict(rc, wall_s, cpu_s, server_cpu_s, peak_rss, maxrss_single, stdout, stderr, killed)."""
    import psutil
    out_path = os.path.join(workdir, 'out-%s.txt' % uuid.uuid4().hex[:8])
    err_path = out_path.replace('out-', 'err-')
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = server_cpu_seconds()
    started = time.perf_counter()
    with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=workdir)
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            root = None
        peak = 0
        killed = False
        while proc.poll() is None:
            rss = 0
            if root is not None:
                try:
                    tree = [root] + root.children(recursive=True)
                except psutil.NoSuchProcess:
                    tree = []
                for member in tree:
                    try:
                        rss += member.memory_info().rss
                    except psutil.Error:
                        pass
            peak = max(peak, rss)
            if on_poll is not None and not killed and on_poll(proc):
                killed = True
            time.sleep(poll)
        rc = proc.wait()
    wall = time.perf_counter() - started
    server_cpu = server_cpu_seconds() - server_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(out_path, 'rb') as handle:
        stdout = handle.read().decode('utf-8', 'replace')
    with open(err_path, 'rb') as handle:
        stderr = handle.read().decode('utf-8', 'replace')
    os.unlink(out_path)
    os.unlink(err_path)
    return {'rc': rc, 'wall_s': wall, 'cpu_s': cpu, 'server_cpu_s': server_cpu,
            'peak_rss': max(peak, after.ru_maxrss * 1024 if peak == 0 else 0),
            'maxrss_single': after.ru_maxrss * 1024, 'stdout': stdout, 'stderr': stderr, 'killed': killed}


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


# ---------------------------------------------------------------------------
# child entry points (run as ``bench.py _engine JSON`` etc.)
# ---------------------------------------------------------------------------

def child_engine(job):
    from ansible_collections.storeshift.objstore.plugins.module_utils.engine import MigrationOptions, Migrator
    from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec
    options = MigrationOptions(workers=job['workers'], max_objects_per_second=job.get('rate'),
                               verify_writes=True, verify_method=job.get('verify_method', 'auto'))
    migrator = Migrator(StoreSpec.from_dict(job['source']), StoreSpec.from_dict(job['dest']), options,
                        ledger_location=job['ledger'], db_connect=job.get('db_connect'),
                        migration_id=job.get('migration_id'), resume=job.get('resume', False))
    summary = migrator.run()
    names = ('run_state', 'objects_total', 'objects_copied', 'objects_skipped', 'objects_failed',
             'copied_this_run', 'run_message')
    out = dict((k, summary.get(k)) for k in names)
    out['puts'] = migrator.puts
    out['write_verification'] = summary.get('write_verification')
    sys.stdout.write(json.dumps(out) + '\n')
    return 0 if summary.get('run_state') == 'complete' else 1


def _boto_client(s3):
    import boto3
    from botocore.config import Config
    return boto3.client('s3', endpoint_url=s3['url'], aws_access_key_id=s3['access_key'],
                        aws_secret_access_key=s3['secret_key'], region_name=s3['region'],
                        config=Config(s3={'addressing_style': 'path'}))


def _loop_put_s3(client, bucket, key, body, size):
    if size <= 8 * MIB:
        client.put_object(Bucket=bucket, Key=key, Body=body.read())
    else:
        client.upload_fileobj(body, bucket, key)  # streams in 8 MiB parts


def child_loop(job):
    """The old tools' approach: one object after the other, get then put, no read-back."""
    kind = job['kind']
    count = 0
    if kind in ('s3', 'rustfs'):
        src = _boto_client(job['src'])
        if kind == 's3':
            dst = _boto_client(job['dst'])
            dst.create_bucket(Bucket=job['dst_bucket'])
        else:
            import requests
            session = requests.Session()
            session.trust_env = False
            session.headers[job['rustfs']['api_key_header']] = job['rustfs']['api_key']
            base = '%s/api/v1/buckets/%s' % (job['rustfs']['endpoint'].rstrip('/'), job['dst_bucket'])
        for page in src.get_paginator('list_objects_v2').paginate(Bucket=job['src_bucket']):
            for item in page.get('Contents') or ():
                body = src.get_object(Bucket=job['src_bucket'], Key=item['Key'])['Body']
                if kind == 's3':
                    _loop_put_s3(dst, job['dst_bucket'], item['Key'], body, item['Size'])
                else:
                    response = session.put('%s/objects/%s' % (base, item['Key']), data=body.read(), timeout=60)
                    response.raise_for_status()
                count += 1
    elif kind == 'db':
        import psycopg2
        dst = _boto_client(job['dst'])
        dst.create_bucket(Bucket=job['dst_bucket'])
        conn = psycopg2.connect(job['db_connect'])
        with conn.cursor() as cur:
            cur.execute('SELECT "userId", bucket, key FROM object_storage ORDER BY 1, 2, 3')
            keys = cur.fetchall()
        for user, bucket, key in keys:
            with conn.cursor() as cur:
                cur.execute('SELECT content FROM object_storage WHERE "userId" = %s AND bucket = %s AND key = %s',
                            (user, bucket, key))
                data = bytes(cur.fetchone()[0])
            conn.rollback()
            dst.put_object(Bucket=job['dst_bucket'], Key='%s/%s/%s' % (user, bucket, key), Body=data)
            count += 1
        conn.close()
    sys.stdout.write(json.dumps({'copied': count}) + '\n')
    return 0


# ---------------------------------------------------------------------------
# contenders
# ---------------------------------------------------------------------------

class Bench(object):
    def __init__(self, args, sizes):
        self.args = args
        self.sizes = sizes
        self.stack = Stack(read_env())
        self.env = child_env()
        self.tag = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dt%H%M%S')
        self.workdir = tempfile.mkdtemp(prefix='objstore-bench-')
        os.chmod(self.workdir, 0o700)
        self.rclone_conf = os.path.join(self.workdir, 'rclone.conf')
        self.write_rclone_conf()
        self.playbook = os.path.join(self.workdir, 'migrate.yml')
        with open(self.playbook, 'w') as handle:
            handle.write(PLAYBOOK)
        self.runs = []          # every single run
        self.warmups = []       # each case's uncounted first run
        self.commands = {}      # contender -> command template
        self.cleanup = []       # (callable, args)
        self.resume = None

    def write_rclone_conf(self):
        lines = []
        for name, which in (('srca', 'a'), ('dstb', 'b')):
            s = self.stack.s3[which]
            lines += ['[%s]' % name, 'type = s3', 'provider = SeaweedFS', 'access_key_id = %s' % s['access_key'],
                      'secret_access_key = %s' % s['secret_key'], 'region = %s' % s['region'],
                      'endpoint = %s' % s['url'], 'force_path_style = true', '']
        fd = os.open(self.rclone_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as handle:
            handle.write('\n'.join(lines))

    # -- one run of one contender --------------------------------------------------
    def run_engine(self, case, source, dest, workers, db_connect=None, verify_method='auto'):
        ledger = os.path.join(self.workdir, 'ledger-%s.sqlite' % uuid.uuid4().hex[:8])
        job = {'source': source, 'dest': dest, 'workers': workers, 'ledger': ledger, 'db_connect': db_connect,
               'verify_method': verify_method}
        job_path = self._job_file(job)
        name = 'engine' if verify_method == 'auto' else 'engine-' + verify_method
        self.commands[name] = ('python bench/bench.py _engine JOB.json   # Migrator(source, dest, '
                               'MigrationOptions(workers=%d, verify_writes=True, verify_method=%r), '
                               'ledger=<fresh sqlite>).run()' % (workers, verify_method))
        result = measure([PYTHON, SELF, '_engine', job_path], self.env, self.workdir)
        info = last_json(result['stdout']) or {}
        result['detail'] = info
        result['ok'] = result['rc'] == 0 and info.get('run_state') == 'complete'
        os.unlink(job_path)
        for path in (ledger, ledger + '-wal', ledger + '-shm'):
            if os.path.exists(path):
                os.unlink(path)
        return result

    def run_playbook(self, case, source, dest, workers):
        ledger = os.path.join(self.workdir, 'ledger-%s.sqlite' % uuid.uuid4().hex[:8])
        extra = {'bench_source': source, 'bench_dest': dest, 'bench_workers': workers, 'bench_ledger': ledger,
                 'bench_migration_id': unique('bench'), 'ansible_python_interpreter': PYTHON}
        vars_path = self._job_file(extra)
        argv = [os.path.join(os.path.dirname(PYTHON), 'ansible-playbook'), '-i', 'localhost,', self.playbook,
                '-e', '@' + vars_path]
        self.commands['ansible-playbook'] = ('ansible-playbook -i localhost, migrate.yml -e @vars.json   '
                                             '# one task: storeshift.objstore.objstore_migrate, workers=%d' % workers)
        result = measure(argv, self.env, self.workdir)
        result['ok'] = result['rc'] == 0
        if not result['ok']:
            say('ansible-playbook failed:\n%s' % (result['stdout'][-3000:] + result['stderr'][-2000:]))
        os.unlink(vars_path)
        for path in (ledger, ledger + '-wal', ledger + '-shm'):
            if os.path.exists(path):
                os.unlink(path)
        return result

    def run_rclone(self, src_bucket, dst_bucket, tuned):
        argv = ['rclone', 'copy', 'srca:%s' % src_bucket, 'dstb:%s' % dst_bucket, '--config', self.rclone_conf]
        if tuned:
            argv += ['--transfers', '32', '--checkers', '32']
        name = 'rclone-tuned' if tuned else 'rclone-default'
        self.commands[name] = ' '.join(['rclone', 'copy', 'srca:SRC', 'dstb:DST', '--config', 'rclone.conf']
                                       + (['--transfers', '32', '--checkers', '32'] if tuned else []))
        result = measure(argv, self.env, self.workdir)
        result['ok'] = result['rc'] == 0
        if not result['ok']:
            say('rclone failed: %s' % result['stderr'][-2000:])
        return result

    def run_loop(self, job):
        job_path = self._job_file(job)
        self.commands['loop-%s' % job['kind']] = 'python bench/bench.py _loop JOB.json   # %s' % {
            's3': 'sequential boto3 get_object + put_object (upload_fileobj above 8 MiB)',
            'db': 'sequential psycopg2 SELECT content + boto3 put_object',
            'rustfs': 'sequential boto3 get_object + requests PUT'}[job['kind']]
        result = measure([PYTHON, SELF, '_loop', job_path], self.env, self.workdir)
        result['ok'] = result['rc'] == 0
        if not result['ok']:
            say('loop failed: %s' % result['stderr'][-2000:])
        os.unlink(job_path)
        return result

    def _job_file(self, job):
        path = os.path.join(self.workdir, 'job-%s.json' % uuid.uuid4().hex[:8])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as handle:
            json.dump(job, handle)
        return path

    # -- a case: alternate the contenders -------------------------------------
    def case(self, name, objects, nbytes, contenders, check, drop, runs=None):
        """``contenders``: [(label, fn(dst) -> result)]; ``check(dst)`` -> (count, bytes); ``drop(dst)``.

        One uncounted warm-up run of the first contender comes first (not in a smoke run): the run after
        a seeding and an idle stack cost the destination server about 1.5 CPU seconds more in system
        time than the runs after it (40 x 32 MiB), and that run was always the first contender's."""
        runs = runs or self.sizes['runs']
        say('case %s: %d objects, %.1f MiB, contenders %s' % (name, objects, nbytes / MIB,
                                                              ', '.join(c[0] for c in contenders)))
        if not self.args.smoke:
            self.warmups.append(self._one_run(name, objects, nbytes, contenders[0], check, drop, None))
        for rep in range(runs):
            for contender in contenders:
                self.runs.append(self._one_run(name, objects, nbytes, contender, check, drop, rep))

    def _one_run(self, name, objects, nbytes, contender, check, drop, rep):
        """One run of one contender into a fresh destination; ``rep`` None: the uncounted warm-up."""
        label, fn = contender
        dst = unique('bd-%s' % name.replace('_', ''))[:63]
        settle(limit=2.0 if self.args.smoke else 20.0)
        result = fn(dst)
        count, total = check(dst)
        result.pop('stdout', None)
        result.pop('stderr', None)
        result.update({'case': name, 'contender': label, 'rep': rep, 'objects': objects, 'bytes': nbytes,
                       'dest_objects': count, 'dest_bytes': total})
        if count != objects or total != nbytes:
            result['ok'] = False
            say('  %s: destination holds %d objects / %d bytes, expected %d / %d'
                % (label, count, total, objects, nbytes))
        drop(dst)
        say('  %-6s %-16s %7.2f s  %8.1f obj/s  %7.1f MiB/s  cpu %6.2f s  server cpu %6.2f s  rss %6.1f MiB%s'
            % ('warmup' if rep is None else 'run %d' % (rep + 1), label, result['wall_s'], objects / result['wall_s'],
               nbytes / MIB / result['wall_s'], result['cpu_s'], result['server_cpu_s'], result['peak_rss'] / MIB,
               '' if result['ok'] else '  FAILED'))
        return result

    def s3_case(self, name, src_bucket, objects, nbytes, with_playbook=False, with_engine=True, loop=True,
                rclone_default=True, with_readback=True, runs=None):
        st = self.stack
        src_spec = st.s3_spec('a', src_bucket)
        workers = self.sizes['workers']
        contenders = []
        if with_engine:
            contenders.append(('engine', lambda dst: self.run_engine(name, src_spec, st.s3_spec('b', dst, True),
                                                                     workers)))
        if with_readback:
            # The same engine proving every write by reading it back instead of by the server's checksum.
            contenders.append(('engine-readback', lambda dst: self.run_engine(
                name, src_spec, st.s3_spec('b', dst, True), workers, verify_method='readback')))
        if with_playbook:
            contenders.append(('ansible-playbook', lambda dst: self.run_playbook(
                name, src_spec, st.s3_spec('b', dst, True), workers)))
        contenders.append(('rclone-tuned', lambda dst: self.run_rclone(src_bucket, dst, True)))
        if rclone_default:
            contenders.append(('rclone-default', lambda dst: self.run_rclone(src_bucket, dst, False)))
        if loop:
            contenders.append(('loop', lambda dst: self.run_loop({
                'kind': 's3', 'src': st.s3['a'], 'dst': st.s3['b'], 'src_bucket': src_bucket, 'dst_bucket': dst})))
        self.case(name, objects, nbytes, contenders, lambda dst: s3_count(st, 'b', dst),
                  lambda dst: s3_drop(st, 'b', dst), runs=runs)

    # -- the cases ---------------------------------------------------------------
    def source_bucket(self, label, count, size):
        bucket = unique('bs-%s-%s' % (self.tag[-6:], label))
        say('seeding s3a bucket %s: %d x %d bytes' % (bucket, count, size))
        started = time.time()
        s3_seed(self.stack, 'a', bucket, count, size)
        say('  seeded in %.1f s' % (time.time() - started))
        self.cleanup.append((s3_drop, (self.stack, 'a', bucket)))
        return bucket

    def do_s3_small(self):
        n, size = self.sizes['small_n'], self.sizes['small_size']
        bucket = self.small_bucket()
        self.s3_case('s3_small', bucket, n, n * size)

    def small_bucket(self):
        if getattr(self, '_small_bucket', None) is None:
            self._small_bucket = self.source_bucket('small', self.sizes['small_n'], self.sizes['small_size'])
        return self._small_bucket

    def do_s3_small_10k(self):
        n, size = self.sizes['small10k_n'], self.sizes['small_size']
        bucket = self.source_bucket('small10k', n, size)
        self.s3_case('s3_small_10k', bucket, n, n * size, with_playbook=True, loop=False, rclone_default=False,
                     with_readback=False)

    def do_s3_large(self):
        n, size = self.sizes['large_n'], self.sizes['large_size']
        bucket = self.source_bucket('large', n, size)
        self.s3_case('s3_large', bucket, n, n * size, runs=self.sizes['large_runs'])

    def do_s3_huge(self):
        size = self.sizes['huge_size']
        bucket = self.source_bucket('huge', 1, size)
        self.s3_case('s3_huge', bucket, 1, size, runs=self.sizes['large_runs'])

    def do_db_s3(self):
        st = self.stack
        rows, size = self.sizes['db_rows'], self.sizes['db_size']
        dbname = 'bench_%s_%s' % (self.tag, uuid.uuid4().hex[:6])
        say('seeding database %s: %d rows x %d bytes in object_storage' % (dbname, rows, size))
        dsn = pg_create_db(st, dbname, rows, size)
        self.cleanup.append((pg_drop_db, (st, dbname)))
        src_spec = {'storage_driver': {'name': 'db2', 'config': {}}, 'compression': {'enabled': False}}
        workers = self.sizes['workers']
        contenders = [
            ('engine', lambda dst: self.run_engine('db_s3', src_spec, st.s3_spec('b', dst, True), workers,
                                                   db_connect=dsn)),
            ('engine-readback', lambda dst: self.run_engine('db_s3', src_spec, st.s3_spec('b', dst, True), workers,
                                                            db_connect=dsn, verify_method='readback')),
            ('loop', lambda dst: self.run_loop({'kind': 'db', 'db_connect': dsn, 'dst': st.s3['b'],
                                                'dst_bucket': dst})),
        ]
        self.case('db_s3', rows, rows * size, contenders, lambda dst: s3_count(st, 'b', dst),
                  lambda dst: s3_drop(st, 'b', dst))

    def do_s3_rustfs(self):
        st = self.stack
        n, size = self.sizes['small_n'], self.sizes['small_size']
        bucket = self.small_bucket()
        src_spec = st.s3_spec('a', bucket)
        workers = self.sizes['workers']

        def engine(dst):
            rustfs_create(st, dst)
            return self.run_engine('s3_rustfs', src_spec, st.rustfs_spec(dst), workers)

        def loop(dst):
            rustfs_create(st, dst)
            return self.run_loop({'kind': 'rustfs', 'src': st.s3['a'], 'src_bucket': bucket, 'dst_bucket': dst,
                                  'rustfs': st.rustfs})
        self.case('s3_rustfs', n, n * size, [('engine', engine), ('loop', loop)],
                  lambda dst: rustfs_count(st, dst), lambda dst: rustfs_drop(st, dst))

    def do_resume(self):
        """kill -9 the engine at >= 50 % (by the ledger), resume, count objects copied twice."""
        st = self.stack
        n = self.sizes['resume_n']
        size = self.sizes['small_size']
        bucket = self.small_bucket() if n == self.sizes['small_n'] else self.source_bucket('resume', n, size)
        dst = unique('bd-resume')
        ledger = os.path.join(self.workdir, 'ledger-resume.sqlite')
        migration_id = unique('resume')
        job = {'source': st.s3_spec('a', bucket), 'dest': st.s3_spec('b', dst, True), 'workers': self.sizes['workers'],
               'ledger': ledger, 'migration_id': migration_id, 'rate': self.sizes['resume_rate']}
        say('case resume: %d objects, kill -9 at >= 50 %% done' % n)
        job_path = self._job_file(job)
        state = {'done_at_kill': None}

        def done_count():
            try:
                conn = sqlite3.connect('file:%s?mode=ro' % ledger, uri=True, timeout=1)
                try:
                    row = conn.execute("SELECT count(*) FROM storeshift_objects WHERE migration_id = ? AND state IN "
                                       "('copied', 'skipped', 'deleted')", (migration_id,)).fetchone()
                finally:
                    conn.close()
                return row[0]
            except sqlite3.Error:
                return 0

        def on_poll(proc):
            done = done_count()
            if done >= n / 2:
                os.kill(proc.pid, signal.SIGKILL)
                state['done_at_kill'] = done
                return True
            return False

        first = measure([PYTHON, SELF, '_engine', job_path], self.env, self.workdir, on_poll=on_poll, poll=0.02)
        done_before = done_count()   # what the ledger holds after the kill (the resumed run trusts exactly this)
        job['resume'] = True
        job['rate'] = None
        with open(job_path, 'w') as handle:
            json.dump(job, handle)
        second = measure([PYTHON, SELF, '_engine', job_path], self.env, self.workdir)
        info = last_json(second['stdout']) or {}
        puts = info.get('puts')
        count, total = s3_count(st, 'b', dst)
        not_done = n - done_before
        # objects finished but not yet recorded when killed are found equal at the destination (no PUT):
        # PUTs can be fewer than the objects left, never count that as negative re-copies.
        recopies = max(0, puts - not_done) if puts is not None else None
        self.resume = {'objects': n, 'killed': first['killed'], 'first_rc': first['rc'],
                       'done_at_kill': state['done_at_kill'], 'done_in_ledger_after_kill': done_before,
                       'resumed_puts': puts, 'resumed_state': info.get('run_state'),
                       'recopies': recopies,
                       'recopy_percent_of_done': (100.0 * recopies / done_before) if recopies is not None and
                       done_before else None,
                       'dest_objects': count, 'ok': info.get('run_state') == 'complete' and count == n}
        say('  killed=%s done at kill %s, ledger done %d, resumed PUTs %s, re-copies %s (%s %% of done)'
            % (first['killed'], state['done_at_kill'], done_before, puts, recopies,
               '%.2f' % self.resume['recopy_percent_of_done'] if self.resume['recopy_percent_of_done'] is not None
               else '-'))
        os.unlink(job_path)
        s3_drop(st, 'b', dst)

    # -- everything ---------------------------------------------------------------
    def run(self, cases):
        started = time.time()
        try:
            for name in cases:
                getattr(self, 'do_' + name)()
        finally:
            for fn, args in reversed(self.cleanup):
                fn(*args)
            self.cleanup = []
        self.elapsed = time.time() - started
        return self.report()

    # -- report -------------------------------------------------------------------
    def medians(self):
        table = {}
        for run in self.runs:
            table.setdefault((run['case'], run['contender']), []).append(run)
        out = {}
        for key, runs in table.items():
            good = [r for r in runs if r['ok']] or runs
            wall = statistics.median(r['wall_s'] for r in good)
            out[key] = {'runs': len(runs), 'ok': all(r['ok'] for r in runs), 'wall_s': wall,
                        'obj_s': good[0]['objects'] / wall, 'mib_s': good[0]['bytes'] / MIB / wall,
                        'cpu_s': statistics.median(r['cpu_s'] for r in good),
                        'server_cpu_s': statistics.median(r.get('server_cpu_s', 0.0) for r in good),
                        'peak_rss_mib': max(r['peak_rss'] for r in good) / MIB,
                        'walls': [round(r['wall_s'], 2) for r in runs],
                        'write_verification': sorted(set((r.get('detail') or {}).get('write_verification') or '-'
                                                         for r in runs))}
        return out

    def report(self):
        med = self.medians()
        cases = []
        for run in self.runs:
            if run['case'] not in cases:
                cases.append(run['case'])
        lines = ['| case | contender | runs | median s | obj/s | MiB/s | CPU s | server CPU s | peak RSS MiB | '
                 '× rclone tuned | × loop | wall times s | writes proven by |',
                 '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
        for case in cases:
            contenders = [k[1] for k in med if k[0] == case]
            tuned = med.get((case, 'rclone-tuned'))
            loop = med.get((case, 'loop'))
            for name in contenders:
                m = med[(case, name)]
                lines.append('| %s | %s | %d | %.2f | %.1f | %.1f | %.2f | %.2f | %.1f | %s | %s | %s | %s |' % (
                    case, name + ('' if m['ok'] else ' (FAILED)'), m['runs'], m['wall_s'], m['obj_s'], m['mib_s'],
                    m['cpu_s'], m['server_cpu_s'], m['peak_rss_mib'],
                    '%.2f' % (tuned['wall_s'] / m['wall_s']) if tuned else '-',
                    '%.2f' % (loop['wall_s'] / m['wall_s']) if loop else '-',
                    ' '.join('%.2f' % w for w in m['walls']), ', '.join(m['write_verification'])))
        targets = self.targets(med)
        machine = machine_info()
        large_runs = ('' if self.sizes['large_runs'] == self.sizes['runs']
                      else ' (%d for s3_large and s3_huge)' % self.sizes['large_runs'])
        text = ['# Benchmark results %s%s' % (self.tag, ' (smoke: tiny data sets, numbers mean nothing)'
                                              if self.args.smoke else ''), '',
                'Total bench time %.0f s; %d run(s) per contender%s, alternating, '
                'after one uncounted warm-up run of each case\'s first contender%s; medians.' % (
                    self.elapsed, self.sizes['runs'], large_runs, ' (none in a smoke run)'
                    if self.args.smoke else ''), '',
                '## Results', ''] + lines + ['']
        if self.resume:
            r = self.resume
            text += ['## Resume after kill -9', '',
                     '| objects | killed | ledger done at kill | PUTs in resumed run | re-copies | % of done | '
                     'complete |', '|---|---|---|---|---|---|---|',
                     '| %d | %s | %d | %s | %s | %s | %s |' % (
                         r['objects'], r['killed'], r['done_in_ledger_after_kill'], r['resumed_puts'], r['recopies'],
                         '%.2f' % r['recopy_percent_of_done'] if r['recopy_percent_of_done'] is not None else '-',
                         r['ok']), '']
        text += ['## Targets', '', '| target | measured | met |', '|---|---|---|']
        for name, measured, met in targets:
            text.append('| %s | %s | %s |' % (name, measured, {True: 'yes', False: '**no**', None: '-'}[met]))
        text += ['', '## Machine', '']
        for key, value in machine.items():
            text.append('- %s: %s' % (key, value))
        text += ['', '## Commands', '', '```',
                 '%s %s' % (os.path.relpath(PYTHON, REPO), ' '.join(['bench/bench.py'] + self.argv_tail())), '']
        for name, cmd in sorted(self.commands.items()):
            text.append('%-18s %s' % (name + ':', cmd))
        text += ['```', '', 'Sizes: %s' % json.dumps(self.sizes, sort_keys=True), '']
        os.makedirs(RESULTS, exist_ok=True)
        base = os.path.join(RESULTS, '%s%s' % (self.tag, '-smoke' if self.args.smoke else ''))
        with open(base + '.md', 'w') as handle:
            handle.write('\n'.join(text))
        with open(base + '.json', 'w') as handle:
            json.dump({'runs': self.runs, 'warmups': self.warmups, 'resume': self.resume, 'machine': machine,
                       'sizes': self.sizes,
                       'medians': dict(('%s/%s' % k, v) for k, v in med.items()),
                       'targets': targets}, handle, indent=1, default=str)
        sys.stdout.write('\n'.join(text) + '\n')
        say('results: %s.md' % os.path.relpath(base, REPO))
        failed = [r for r in self.runs if not r['ok']]
        if self.resume is not None and not self.resume['ok']:
            failed.append(self.resume)
        return 1 if failed else 0

    def argv_tail(self):
        tail = []
        if self.args.smoke:
            tail.append('--smoke')
        if self.args.runs:
            tail += ['--runs', str(self.args.runs)]
        if self.args.cases:
            tail += ['--cases', self.args.cases]
        return tail

    def targets(self, med):
        out = []

        def ratio(case, a, b):
            x, y = med.get((case, a)), med.get((case, b))
            if not x or not y:
                return None
            return y['wall_s'] / x['wall_s']

        r = ratio('s3_small', 'engine', 'rclone-tuned')
        out.append(('S3→S3 16 KiB: engine ≥ 1.0× rclone tuned (SHA-256 verification on)',
                    '%.2f×' % r if r else '-', r >= 1.0 if r else None))
        r = ratio('s3_small_10k', 'ansible-playbook', 'rclone-tuned')
        out.append(('S3→S3 16 KiB, 10,000 objects through ansible-playbook ≥ 0.9× rclone tuned',
                    '%.2f×' % r if r else '-', r >= 0.9 if r else None))
        for case in ('s3_large', 's3_huge'):
            a, b = ratio(case, 'engine', 'rclone-tuned'), ratio(case, 'engine', 'rclone-default')
            # against the better (faster) rclone setting: the smaller of the two ratios
            best = min(x for x in (a, b) if x) if (a or b) else None
            out.append(('%s: engine ≥ 1.0× the better rclone setting' % case,
                        '{0:.2f}×'.format(best) if best else '-', best >= 1.0 if best else None))
        r = ratio('db_s3', 'engine', 'loop')
        out.append(('db→S3: engine ≥ 4× the sequential loop', '%.2f×' % r if r else '-', r >= 4.0 if r else None))
        r = ratio('s3_rustfs', 'engine', 'loop')
        out.append(('S3→RustFS API: engine vs the sequential loop (no target)', '%.2f×' % r if r else '-', None))
        rss = [(k, v['peak_rss_mib']) for k, v in med.items() if k[1] in ('engine', 'ansible-playbook')]
        if rss:
            worst = max(rss, key=lambda kv: kv[1])
            out.append(('peak RSS ≤ 200 MiB in every case (engine and ansible-playbook process trees)',
                        'max %.1f MiB (%s/%s)' % (worst[1], worst[0][0], worst[0][1]), worst[1] <= 200))
        if self.resume:
            pct = self.resume['recopy_percent_of_done']
            out.append(('resume after kill -9: re-copies ≤ 1 % of the objects already done',
                        '%s re-copies (%s %%)' % (self.resume['recopies'], '%.2f' % pct if pct is not None else '-'),
                        (pct <= 1.0) if pct is not None else None))
        return out


def version_of(argv):
    import shutil
    path = os.path.dirname(PYTHON) + os.pathsep + os.environ.get('PATH', '')
    found = shutil.which(argv[0], path=path)
    if found is None:
        return 'unknown'
    try:
        return subprocess.run([found] + argv[1:], capture_output=True, text=True, timeout=20,
                              check=False).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return 'unknown'


def machine_info():
    import boto3
    import botocore
    info = {'nproc': os.cpu_count()}
    model = 'unknown'
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    info['cpu'] = model
    try:
        with open('/proc/meminfo') as handle:
            info['memory'] = '%.1f GiB' % (int(handle.readline().split()[1]) / 1024 / 1024)
    except OSError:
        pass
    info['os'] = platform.platform()
    info['python'] = platform.python_version()
    info['boto3'] = '%s (botocore %s)' % (boto3.__version__, botocore.__version__)
    info['rclone'] = version_of(['rclone', 'version'])
    info['seaweedfs'] = version_of(['weed', 'version'])
    try:
        import psycopg2
        info['psycopg2'] = psycopg2.__version__.split()[0]
    except ImportError:
        pass
    info['load average at end'] = ' '.join('%.2f' % x for x in os.getloadavg())
    return info


def say(message):
    sys.stderr.write('bench: %s\n' % message)
    sys.stderr.flush()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ('_engine', '_loop'):
        with open(argv[1]) as handle:
            job = json.load(handle)
        return child_engine(job) if argv[0] == '_engine' else child_loop(job)
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--smoke', action='store_true', help='tiny data sets, one run each (for make test)')
    parser.add_argument('--runs', type=int, help='runs per contender (default 3, smoke 1)')
    parser.add_argument('--cases', help='comma-separated subset of: %s' % ', '.join(CASES))
    parser.add_argument('--workers', type=int, help='engine workers (default 32, smoke 8)')
    args = parser.parse_args(argv)
    sizes = dict(SMOKE if args.smoke else FULL)
    if args.runs:
        sizes['runs'] = sizes['large_runs'] = args.runs
    if args.workers:
        sizes['workers'] = args.workers
    cases = [c.strip() for c in args.cases.split(',')] if args.cases else list(CASES)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error('unknown case(s): %s' % ', '.join(unknown))
    bench = Bench(args, sizes)
    try:
        return bench.run(cases)
    finally:
        import shutil
        shutil.rmtree(bench.workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
