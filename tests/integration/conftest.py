# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the integration tests against the local stack (`make stack-up`).

The stack writes ``<repo>/.stack/env``; these fixtures read it (the process
environment is not needed). Store fixtures return *spec dicts* in Anchore's
shape, each on a fresh, uniquely named bucket/directory/database, so tests
can run in parallel (pytest-xdist) and leave nothing behind:

    {'storage_driver': {'name': 's3', 'config': {...}},
     'compression': {'enabled': False, 'min_size_kbytes': 100}}
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK_DIR = os.path.join(REPO, '.stack')
ENV_FILE = os.path.join(STACK_DIR, 'env')
ANCHORE_SCHEMA = os.path.join(REPO, 'tests', 'stack', 'anchore_schema.sql')
COLLECTIONS = os.path.join(REPO, '.build', 'collections')

for _path in (COLLECTIONS, os.path.join(REPO, 'tests', 'stack')):
    if os.path.isdir(_path) and _path not in sys.path:
        sys.path.insert(0, _path)


def read_stack_env(path=ENV_FILE):
    """The ``export NAME=value`` lines of .stack/env as a dict (PATH is left out)."""
    values = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            words = shlex.split(line)
            if words and words[0] == 'export':
                words = words[1:]
            for word in words:
                name, sep, value = word.partition('=')
                if sep and name != 'PATH':
                    values[name] = value
    return values


def unique_name(prefix='t'):
    """A fresh S3-valid name: lowercase letters, digits and dashes, at most 63 characters."""
    return ('%s-%s' % (prefix, uuid.uuid4().hex))[:63].lower()


def _compression():
    return {'enabled': False, 'min_size_kbytes': 100}


# ---------------------------------------------------------------------------
# the stack
# ---------------------------------------------------------------------------

@pytest.fixture(scope='session')
def stack():
    """Dict of the values in .stack/env (OBJSTORE_*, PYTHONPATH, ANSIBLE_COLLECTIONS_PATH)."""
    if not os.path.exists(ENV_FILE):
        pytest.fail('%s is missing: the local test stack is not running; run `make stack-up` '
                    '(or .venv/bin/python tests/stack/stack.py up)' % ENV_FILE, pytrace=False)
    values = read_stack_env()
    missing = [name for name in ('OBJSTORE_PG_DSN', 'OBJSTORE_S3_URL', 'OBJSTORE_S3B_URL', 'OBJSTORE_RUSTFS_URL')
               if not values.get(name)]
    if missing:
        pytest.fail('%s lacks %s: run `make stack-up` again' % (ENV_FILE, ', '.join(missing)), pytrace=False)
    return values


@pytest.fixture(scope='session')
def stack_env(stack):
    """os.environ plus the stack's variables and the venv on PATH: for subprocesses (ansible-playbook)."""
    env = dict(os.environ)
    env.update(stack)
    env['PATH'] = os.path.join(REPO, '.venv', 'bin') + os.pathsep + env.get('PATH', '')
    return env


@pytest.fixture(scope='session')
def secrets_of_stack(stack):
    """Every secret value of the stack: none may appear in any output."""
    names = ('OBJSTORE_PG_PASSWORD', 'OBJSTORE_S3_SECRET_KEY', 'OBJSTORE_S3B_SECRET_KEY', 'OBJSTORE_RUSTFS_API_KEY')
    return [stack[name] for name in names if stack.get(name)]


# ---------------------------------------------------------------------------
# S3 (two independent SeaweedFS servers, A and B)
# ---------------------------------------------------------------------------

def _s3_settings(stack, which):
    suffix = {'a': 'S3', 'b': 'S3B'}[which]
    return {'url': stack['OBJSTORE_%s_URL' % suffix],
            'access_key': stack['OBJSTORE_%s_ACCESS_KEY' % suffix],
            'secret_key': stack['OBJSTORE_%s_SECRET_KEY' % suffix],
            'region': stack.get('OBJSTORE_%s_REGION' % suffix) or stack.get('OBJSTORE_S3_REGION') or 'us-east-1'}


@pytest.fixture(scope='session')
def s3_client_factory(stack):
    """``make(which='a'|'b', url=None, **botocore_config)`` -> a boto3 S3 client for server A or B."""
    import boto3
    from botocore.config import Config

    def make(which='a', url=None, verify=None, **config):
        settings = _s3_settings(stack, which)
        config.setdefault('s3', {'addressing_style': 'path'})
        config.setdefault('retries', {'max_attempts': 2, 'mode': 'standard'})
        return boto3.client('s3', endpoint_url=url or settings['url'], aws_access_key_id=settings['access_key'],
                            aws_secret_access_key=settings['secret_key'], region_name=settings['region'],
                            verify=verify, config=Config(**config))
    return make


@pytest.fixture(scope='session')
def s3_client(s3_client_factory):
    return s3_client_factory('a')


@pytest.fixture(scope='session')
def s3b_client(s3_client_factory):
    return s3_client_factory('b')


def _drop_bucket(client, bucket):
    try:
        paginator = client.get_paginator('list_objects_v2')
        for page in paginator.paginate(Bucket=bucket):
            keys = [{'Key': obj['Key']} for obj in page.get('Contents', [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={'Objects': keys, 'Quiet': True})
        client.delete_bucket(Bucket=bucket)
    except Exception:  # noqa: BLE001 - cleanup is best effort (the test may have removed it)
        pass


def _make_s3_spec(stack, client, which):
    bucket = unique_name('t')
    client.create_bucket(Bucket=bucket)
    config = dict(_s3_settings(stack, which), bucket=bucket)
    return bucket, {'storage_driver': {'name': 's3', 'config': config}, 'compression': _compression()}


@pytest.fixture
def s3_spec(stack, s3_client):
    """Spec of a fresh bucket on S3 server A (deleted with its objects afterwards)."""
    bucket, spec = _make_s3_spec(stack, s3_client, 'a')
    yield spec
    _drop_bucket(s3_client, bucket)


@pytest.fixture
def s3b_spec(stack, s3b_client):
    """Spec of a fresh bucket on S3 server B (deleted with its objects afterwards)."""
    bucket, spec = _make_s3_spec(stack, s3b_client, 'b')
    yield spec
    _drop_bucket(s3b_client, bucket)


# ---------------------------------------------------------------------------
# RustFS reference server
# ---------------------------------------------------------------------------

class RustfsApi(object):
    """Tiny requests-based helper for the RustFS API (tests' own use, not the driver)."""

    def __init__(self, url, header, key, verify=True):
        import requests
        self.url = url.rstrip('/')
        self.header = header
        self.key = key
        # Passed on every call: requests lets REQUESTS_CA_BUNDLE override Session.verify.
        self.verify = verify
        self.session = requests.Session()
        if header:
            self.session.headers[header] = key

    def request(self, method, url, **kwargs):
        kwargs.setdefault('verify', self.verify)
        kwargs.setdefault('timeout', 60)
        return self.session.request(method, url, **kwargs)

    def bucket_url(self, bucket):
        from urllib.parse import quote
        return '%s/api/v1/buckets/%s' % (self.url, quote(bucket, safe=''))

    def object_url(self, bucket, key):
        from urllib.parse import quote
        return '%s/objects/%s' % (self.bucket_url(bucket), quote(key, safe='/'))

    def create_bucket(self, bucket):
        response = self.request('PUT', self.bucket_url(bucket))
        response.raise_for_status()
        return response

    def put(self, bucket, key, data, **headers):
        return self.request('PUT', self.object_url(bucket, key), data=data, headers=headers)

    def get(self, bucket, key):
        return self.request('GET', self.object_url(bucket, key))

    def head(self, bucket, key):
        return self.request('HEAD', self.object_url(bucket, key))

    def delete(self, bucket, key):
        return self.request('DELETE', self.object_url(bucket, key))

    def list_page(self, bucket, prefix='', limit=None, token=None):
        params = {'prefix': prefix}
        if limit:
            params['limit'] = limit
        if token:
            params['continuation_token'] = token
        response = self.request('GET', self.bucket_url(bucket) + '/objects', params=params)
        response.raise_for_status()
        return response.json()

    def list_keys(self, bucket, prefix=''):
        keys, token = [], None
        while True:
            page = self.list_page(bucket, prefix, token=token)
            keys.extend(obj['key'] for obj in page['objects'])
            token = page['next_continuation_token']
            if not page['is_truncated']:
                return keys

    def drop_bucket(self, bucket):
        """Best effort: delete every object (retained ones stay) and the bucket."""
        try:
            for key in self.list_keys(bucket):
                self.delete(bucket, key)
            self.request('DELETE', self.bucket_url(bucket))
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture(scope='session')
def rustfs_api_factory():
    """``make(url, header, key)`` -> a RustfsApi helper (``.session`` is a requests.Session)."""
    return RustfsApi


@pytest.fixture
def unique():
    """``unique(prefix='t')`` -> a fresh S3-valid lowercase name."""
    return unique_name


@pytest.fixture(scope='session')
def rustfs_api(stack):
    api = RustfsApi(stack['OBJSTORE_RUSTFS_URL'], stack.get('OBJSTORE_RUSTFS_API_KEY_HEADER'),
                    stack.get('OBJSTORE_RUSTFS_API_KEY'))
    yield api
    api.session.close()


@pytest.fixture
def rustfs_spec(stack, rustfs_api):
    """Spec of a fresh bucket on the RustFS reference server (emptied and deleted afterwards)."""
    bucket = unique_name('t')
    rustfs_api.create_bucket(bucket)
    config = {'endpoint': stack['OBJSTORE_RUSTFS_URL'], 'bucket': bucket}
    if stack.get('OBJSTORE_RUSTFS_API_KEY_HEADER'):
        config['api_key_header'] = stack['OBJSTORE_RUSTFS_API_KEY_HEADER']
        config['api_key'] = stack['OBJSTORE_RUSTFS_API_KEY']
    yield {'storage_driver': {'name': 'rustfs', 'config': config}, 'compression': _compression()}
    rustfs_api.drop_bucket(bucket)


# ---------------------------------------------------------------------------
# local filesystem
# ---------------------------------------------------------------------------

@pytest.fixture
def localfs_spec(tmp_path):
    directory = tmp_path / 'localfs-store'
    directory.mkdir()
    return {'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': str(directory)}},
            'compression': _compression()}


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

@pytest.fixture(scope='session')
def pg_dsn(stack):
    """DSN of the stack's ``objstore`` database (role objstore, CREATEDB)."""
    return stack['OBJSTORE_PG_DSN']


def _dsn_for(dsn, dbname):
    return '%s/%s' % (dsn.rpartition('/')[0], dbname)


def _create_database(pg_dsn):
    import psycopg2
    name = unique_name('t').replace('-', '_')
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute('CREATE DATABASE "%s"' % name)
    finally:
        conn.close()
    return name


def _drop_database(pg_dsn, name):
    import psycopg2
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    except Exception:  # noqa: BLE001 - best effort
        pass
    finally:
        conn.close()


@pytest.fixture
def fresh_db(pg_dsn):
    """DSN of a new empty database (owner objstore), dropped after the test."""
    name = _create_database(pg_dsn)
    yield _dsn_for(pg_dsn, name)
    _drop_database(pg_dsn, name)


@pytest.fixture
def anchore_db(pg_dsn):
    """DSN of a new database holding Anchore's tables (tests/stack/anchore_schema.sql, when present)."""
    import psycopg2
    name = _create_database(pg_dsn)
    dsn = _dsn_for(pg_dsn, name)
    if os.path.exists(ANCHORE_SCHEMA):
        with open(ANCHORE_SCHEMA) as handle:
            sql = handle.read()
        conn = psycopg2.connect(dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()
    yield dsn
    _drop_database(pg_dsn, name)


@pytest.fixture
def db2_spec():
    """Spec of Anchore's ``db2`` driver (table object_storage); pass anchore_db as db_connect."""
    return {'storage_driver': {'name': 'db2', 'config': {}}, 'compression': _compression()}


@pytest.fixture
def db_spec():
    """Spec of Anchore's legacy ``db`` driver (table archive_document); pass anchore_db as db_connect."""
    return {'storage_driver': {'name': 'db', 'config': {}}, 'compression': _compression()}


# ---------------------------------------------------------------------------
# TLS material (trustme) and the fault proxy
# ---------------------------------------------------------------------------

@pytest.fixture(scope='session')
def tls_ca(tmp_path_factory):
    """A trustme CA with a server certificate for 127.0.0.1 and localhost.

    Returns a dict: ca (the trustme.CA), ca_file, cert_file, key_file (paths).
    """
    trustme = pytest.importorskip('trustme')
    ca = trustme.CA()
    cert = ca.issue_cert('127.0.0.1', 'localhost')
    directory = tmp_path_factory.mktemp('tls')
    ca_file = directory / 'ca.pem'
    cert_file = directory / 'server.pem'
    key_file = directory / 'server.key'
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return {'ca': ca, 'ca_file': str(ca_file), 'cert_file': str(cert_file), 'key_file': str(key_file)}


@pytest.fixture
def fault_proxy():
    """``start(upstream_url, **FaultProxy kwargs)`` -> a running FaultProxy, stopped after the test."""
    from faultproxy import FaultProxy
    proxies = []

    def start(upstream_url, **kwargs):
        proxy = FaultProxy(upstream_url, **kwargs).start()
        proxies.append(proxy)
        return proxy
    yield start
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def rustfs_https_spec(tmp_path, tls_ca):
    """Spec (with ca_bundle) of a fresh bucket on a private in-process HTTPS RustFS reference server."""
    import threading
    from rustfs_server import make_server
    server = make_server('127.0.0.1', 0, str(tmp_path / 'rustfs-tls'), 'X-API-Key', 'tls-test-key',
                         tls_ca['cert_file'], tls_ca['key_file'], quiet=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
    thread.start()
    url = 'https://127.0.0.1:%d' % server.server_address[1]
    api = RustfsApi(url, 'X-API-Key', 'tls-test-key', verify=tls_ca['ca_file'])
    bucket = unique_name('t')
    api.create_bucket(bucket)
    yield {'storage_driver': {'name': 'rustfs', 'config': {
        'endpoint': url, 'bucket': bucket, 'api_key_header': 'X-API-Key', 'api_key': 'tls-test-key',
        'ca_bundle': tls_ca['ca_file']}}, 'compression': _compression()}
    api.session.close()
    server.shutdown()
    server.server_close()


@pytest.fixture
def s3_https_spec(stack, s3_client, tls_ca, fault_proxy):
    """Spec (with ca_bundle) of a fresh bucket on S3 server A, reached over HTTPS through a
    fault-free FaultProxy (trustme certificate for 127.0.0.1)."""
    bucket, spec = _make_s3_spec(stack, s3_client, 'a')
    proxy = fault_proxy(stack['OBJSTORE_S3_URL'], tls_cert=tls_ca['cert_file'], tls_key=tls_ca['key_file'])
    spec['storage_driver']['config'].update(url=proxy.url, ca_bundle=tls_ca['ca_file'])
    yield spec
    _drop_bucket(s3_client, bucket)
