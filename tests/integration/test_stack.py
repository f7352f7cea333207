# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Quick real checks of the local test stack (`make stack-up`) and of its tools."""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

def test_postgres_answers(pg_dsn):
    import psycopg2
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT current_user, current_database(), '
                        "(SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user), inet_server_addr()::text")
            user, database, createdb, addr = cur.fetchone()
    finally:
        conn.close()
    assert (user, database, createdb) == ('objstore', 'objstore', True)
    assert addr.startswith('127.0.0.1')


def test_fresh_db_is_empty_and_usable(fresh_db):
    import psycopg2
    conn = psycopg2.connect(fresh_db)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            assert cur.fetchone()[0] == 0
            cur.execute('CREATE TABLE t (id int)')
    finally:
        conn.close()


def test_postgres_rejects_a_wrong_password(stack):
    import psycopg2
    dsn = stack['OBJSTORE_PG_DSN'].replace(':%s@' % stack['OBJSTORE_PG_PASSWORD'], ':wrong@')
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(dsn, connect_timeout=5)


# ---------------------------------------------------------------------------
# S3: two independent servers
# ---------------------------------------------------------------------------

def test_both_s3_servers_answer_and_are_independent(s3_spec, s3_client, s3b_client):
    bucket = s3_spec['storage_driver']['config']['bucket']
    s3_client.put_object(Bucket=bucket, Key='dir/hello world ü', Body=b'hello')
    body = s3_client.get_object(Bucket=bucket, Key='dir/hello world ü')['Body'].read()
    assert body == b'hello'
    names_a = [b['Name'] for b in s3_client.list_buckets()['Buckets']]
    names_b = [b['Name'] for b in s3b_client.list_buckets()['Buckets']]
    assert bucket in names_a
    assert bucket not in names_b


def test_s3_credentials_are_per_server(stack, s3_client_factory):
    from botocore.exceptions import ClientError
    # Server B's keys against server A's URL must be refused.
    client = s3_client_factory('b', url=stack['OBJSTORE_S3_URL'], retries={'total_max_attempts': 1})
    with pytest.raises(ClientError) as info:
        client.list_buckets()
    assert info.value.response['Error']['Code'] in ('InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied')


def test_s3b_spec_multipart_upload(s3b_spec, s3b_client):
    bucket = s3b_spec['storage_driver']['config']['bucket']
    from boto3.s3.transfer import TransferConfig
    import io
    data = bytes(range(256)) * (6 * 1024 * 1024 // 256 + 7)
    config = TransferConfig(multipart_threshold=5 * 2 ** 20, multipart_chunksize=5 * 2 ** 20)
    s3b_client.upload_fileobj(io.BytesIO(data), bucket, 'big', Config=config)
    assert s3b_client.get_object(Bucket=bucket, Key='big')['Body'].read() == data


# ---------------------------------------------------------------------------
# RustFS reference server
# ---------------------------------------------------------------------------

def _bucket(spec):
    return spec['storage_driver']['config']['bucket']


def test_rustfs_put_get_head_delete(rustfs_spec, rustfs_api):
    bucket = _bucket(rustfs_spec)
    key = 'a dir/ünïcode key/x+y%z.json'
    data = b'{"hello": "world"}'
    put = rustfs_api.put(bucket, key, data)
    assert put.status_code == 201, put.text
    digest = hashlib.sha256(data).hexdigest()
    assert put.json() == {'key': key, 'size': len(data), 'sha256': digest}
    assert put.headers['ETag']
    got = rustfs_api.get(bucket, key)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers['Content-Length'] == str(len(data))
    assert got.headers['X-RustFS-Sha256'] == digest
    assert 'X-RustFS-Immutable' not in got.headers
    head = rustfs_api.head(bucket, key)
    assert head.status_code == 200 and head.content == b''
    assert head.headers['Content-Length'] == str(len(data))
    assert head.headers['X-RustFS-Sha256'] == digest
    assert rustfs_api.delete(bucket, key).status_code == 204
    missing = rustfs_api.get(bucket, key)
    assert missing.status_code == 404 and missing.json() == {'error': 'object not found'}
    assert rustfs_api.delete(bucket, key).status_code == 404
    assert rustfs_api.head(bucket, key).status_code == 404


def test_rustfs_buckets(rustfs_api, unique):
    bucket = unique('t')
    url = rustfs_api.bucket_url(bucket)
    assert rustfs_api.request('HEAD', url).status_code == 404
    assert rustfs_api.request('PUT', url).status_code == 201
    assert rustfs_api.request('PUT', url).status_code == 200
    assert rustfs_api.request('HEAD', url).status_code == 200
    assert rustfs_api.put(bucket, 'k', b'x').status_code == 201
    busy = rustfs_api.request('DELETE', url)
    assert busy.status_code == 409
    assert rustfs_api.delete(bucket, 'k').status_code == 204
    assert rustfs_api.request('DELETE', url).status_code == 204
    assert rustfs_api.request('HEAD', url).status_code == 404
    missing = rustfs_api.put(bucket, 'k', b'x')
    assert missing.status_code == 404 and missing.json() == {'error': 'bucket not found'}


def test_rustfs_listing_paginates_in_lexicographic_order(rustfs_spec, rustfs_api):
    bucket = _bucket(rustfs_spec)
    keys = ['p/%04d/obj-%d' % (i % 97, i) for i in range(2500)]
    keys += ['p', 'p-', 'p/', 'p//x', 'q/ä', 'q/z', 'o']

    def put(key):
        response = rustfs_api.put(bucket, key, key.encode('utf-8'))
        assert response.status_code == 201, (key, response.text)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))

    pages, listed, token = 0, [], None
    while True:
        page = rustfs_api.list_page(bucket, prefix='p/', limit=1000, token=token)
        pages += 1
        listed.extend(obj['key'] for obj in page['objects'])
        if not page['is_truncated']:
            assert page['next_continuation_token'] is None
            break
        token = page['next_continuation_token']
        assert token == page['objects'][-1]['key']
    expected = sorted(k for k in keys if k.startswith('p/'))
    assert listed == expected
    assert len(expected) == 2502 and pages == 3
    everything = rustfs_api.list_keys(bucket)
    assert everything == sorted(keys)
    sample = rustfs_api.list_page(bucket, prefix='q/', limit=5)
    assert [o['key'] for o in sample['objects']] == ['q/z', 'q/ä']
    obj = sample['objects'][0]
    assert obj['size'] == 3 and obj['sha256'] == hashlib.sha256(b'q/z').hexdigest()
    assert re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d', obj['last_modified'])
    over = rustfs_api.request('GET', rustfs_api.bucket_url(bucket) + '/objects', params={'limit': 5000})
    assert len(over.json()['objects']) == 1000 and over.json()['is_truncated'] is True


def test_rustfs_api_key(stack, rustfs_spec, rustfs_api_factory):
    bucket = _bucket(rustfs_spec)
    url = rustfs_api_factory(stack['OBJSTORE_RUSTFS_URL'], None, None).object_url(bucket, 'k')
    header = stack['OBJSTORE_RUSTFS_API_KEY_HEADER']
    missing = requests.put(url, data=b'x')
    assert missing.status_code == 401 and missing.json() == {'error': 'missing API key'}
    wrong = requests.get(url, headers={header: 'not-the-key'})
    assert wrong.status_code == 403 and wrong.json() == {'error': 'invalid API key'}
    assert requests.get(stack['OBJSTORE_RUSTFS_URL'] + '/health').json() == {'status': 'ok'}


def test_rustfs_immutability(rustfs_spec, rustfs_api):
    bucket = _bucket(rustfs_spec)
    assert rustfs_api.put(bucket, 'locked', b'v1', **{'X-RustFS-Immutable': 'true'}).status_code == 201
    head = rustfs_api.head(bucket, 'locked')
    assert head.headers['X-RustFS-Immutable'] == 'true'
    for response in (rustfs_api.put(bucket, 'locked', b'v2'), rustfs_api.delete(bucket, 'locked')):
        assert response.status_code == 409
        assert response.json()['error'].startswith('object is immutable until ')
    assert rustfs_api.get(bucket, 'locked').content == b'v1'


def test_rustfs_retention_expires(rustfs_spec, rustfs_api):
    bucket = _bucket(rustfs_spec)
    put = rustfs_api.put(bucket, 'kept', b'v1', **{'X-RustFS-Immutable': 'true', 'X-RustFS-Retain-Seconds': '1'})
    assert put.status_code == 201
    assert 'X-RustFS-Retain-Until' in rustfs_api.head(bucket, 'kept').headers
    again = rustfs_api.put(bucket, 'kept', b'v2')
    assert again.status_code == 409
    until = again.json()['error'].rsplit(' ', 1)[1]
    assert re.match(r'^\d{4}-\d\d-\d\dT', until)
    time.sleep(1.2)
    assert rustfs_api.put(bucket, 'kept', b'v2').status_code == 201
    assert rustfs_api.get(bucket, 'kept').content == b'v2'
    # retain-seconds without immutable: retained until expiry too
    assert rustfs_api.put(bucket, 'ret', b'x', **{'X-RustFS-Retain-Seconds': '1'}).status_code == 201
    assert rustfs_api.delete(bucket, 'ret').status_code == 409
    time.sleep(1.2)
    assert rustfs_api.delete(bucket, 'ret').status_code == 204


def test_rustfs_chunked_upload_and_expect_continue(stack, rustfs_spec, rustfs_api):
    bucket = _bucket(rustfs_spec)
    parts = [b'a' * 1000, b'b' * (3 * 1024 * 1024 + 17), b'', b'c']
    data = b''.join(parts)

    def body():
        for part in parts:
            if part:
                yield part
    put = rustfs_api.put(bucket, 'chunked/obj', body())
    assert put.status_code == 201, put.text
    assert put.json()['size'] == len(data)
    assert put.json()['sha256'] == hashlib.sha256(data).hexdigest()
    assert rustfs_api.get(bucket, 'chunked/obj').content == data

    # Expect: 100-continue by hand, then a second request on the same keep-alive connection.
    parsed = urllib.parse.urlsplit(stack['OBJSTORE_RUSTFS_URL'])
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    path = urllib.parse.urlsplit(rustfs_api.object_url(bucket, 'expect')).path
    headers = {rustfs_api.header: rustfs_api.key, 'Content-Length': '5', 'Expect': '100-continue'}
    conn.putrequest('PUT', path)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.sock.settimeout(5)
    interim = conn.sock.recv(64)
    assert interim.startswith(b'HTTP/1.1 100')
    conn.send(b'12345')
    response = conn.getresponse()
    assert response.status == 201
    response.read()
    conn.request('GET', path, headers={rustfs_api.header: rustfs_api.key})
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b'12345'
    conn.close()


def _metric(text, method, status):
    match = re.search(r'^rustfs_requests_total\{method="%s",status="%s"\} (\d+)$' % (method, status), text, re.M)
    return int(match.group(1)) if match else 0


def test_rustfs_metrics_count_requests(stack, rustfs_spec, rustfs_api):
    bucket = _bucket(rustfs_spec)
    metrics_url = stack['OBJSTORE_RUSTFS_URL'] + '/metrics'
    before = requests.get(metrics_url)
    assert before.status_code == 200 and before.headers['Content-Type'].startswith('text/plain')
    for i in range(3):
        assert rustfs_api.put(bucket, 'm%d' % i, b'x').status_code == 201
    after = requests.get(metrics_url).text
    # Other tests may run in parallel: at least our three.
    assert _metric(after, 'PUT', '201') >= _metric(before.text, 'PUT', '201') + 3


def test_rustfs_https_with_trustme(rustfs_https_spec, tls_ca, rustfs_api_factory):
    config = rustfs_https_spec['storage_driver']['config']
    api = rustfs_api_factory(config['endpoint'], config['api_key_header'], config['api_key'],
                             verify=config['ca_bundle'])
    assert api.put(config['bucket'], 'tls/key', b'secret bytes').status_code == 201
    assert api.get(config['bucket'], 'tls/key').content == b'secret bytes'
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(config['endpoint'] + '/health', timeout=10)   # system CAs do not know trustme's


# ---------------------------------------------------------------------------
# fault proxy
# ---------------------------------------------------------------------------

def test_fault_proxy_passes_s3_traffic_through(stack, s3_spec, s3_client_factory, fault_proxy):
    import io
    from boto3.s3.transfer import TransferConfig
    bucket = _bucket(s3_spec)
    proxy = fault_proxy(stack['OBJSTORE_S3_URL'], slowdown_rate=0.0, seed=1)
    client = s3_client_factory('a', url=proxy.url)
    client.put_object(Bucket=bucket, Key='through/proxy', Body=b'payload' * 1000)
    assert client.get_object(Bucket=bucket, Key='through/proxy')['Body'].read() == b'payload' * 1000
    assert client.head_object(Bucket=bucket, Key='through/proxy')['ContentLength'] == 7000
    data = b'm' * (11 * 1024 * 1024)
    client.upload_fileobj(io.BytesIO(data), bucket, 'through/multipart',
                          Config=TransferConfig(multipart_threshold=5 * 2 ** 20, multipart_chunksize=5 * 2 ** 20))
    assert client.get_object(Bucket=bucket, Key='through/multipart')['Body'].read() == data
    listed = client.list_objects_v2(Bucket=bucket, Prefix='through/')
    assert sorted(o['Key'] for o in listed['Contents']) == ['through/multipart', 'through/proxy']
    assert proxy.injected['forwarded'] >= 5
    assert proxy.injected['slowdown'] == proxy.injected['reset'] == 0


def test_fault_proxy_slowdown(stack, s3_spec, s3_client_factory, fault_proxy):
    from botocore.exceptions import ClientError
    bucket = _bucket(s3_spec)
    proxy = fault_proxy(stack['OBJSTORE_S3_URL'], slowdown_rate=1.0, seed=1)
    client = s3_client_factory('a', url=proxy.url, retries={'total_max_attempts': 1})
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key='slow', Body=b'x' * 100)
    assert info.value.response['Error']['Code'] == 'SlowDown'
    assert info.value.response['ResponseMetadata']['HTTPStatusCode'] == 503
    with pytest.raises(ClientError):
        client.get_object(Bucket=bucket, Key='slow')
    assert proxy.injected['slowdown'] == 2
    proxy.slowdown_rate = 0.0
    client.put_object(Bucket=bucket, Key='slow', Body=b'ok')
    assert client.get_object(Bucket=bucket, Key='slow')['Body'].read() == b'ok'


def test_fault_proxy_resets_and_delays(stack, rustfs_spec, rustfs_api, fault_proxy, rustfs_api_factory):
    bucket = _bucket(rustfs_spec)
    assert rustfs_api.put(bucket, 'k', b'value').status_code == 201
    proxy = fault_proxy(stack['OBJSTORE_RUSTFS_URL'], reset_rate=1.0)
    api = rustfs_api_factory(proxy.url, rustfs_api.header, rustfs_api.key)
    with pytest.raises(requests.exceptions.ConnectionError):
        api.get(bucket, 'k')
    assert proxy.injected['reset'] == 1
    proxy.set_rates(reset_rate=0.0, delay_rate=1.0, delay_seconds=0.3)
    started = time.monotonic()
    assert api.get(bucket, 'k').content == b'value'
    assert time.monotonic() - started >= 0.3
    assert proxy.injected['delay'] == 1
    proxy.set_rates(delay_rate=0.0, slowdown_rate=1.0)
    slow = api.get(bucket, 'k')
    assert slow.status_code == 503 and slow.json() == {'error': 'slow down'}
    proxy.set_rates(slowdown_rate=0.0, truncate_rate=1.0)
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        api.get(bucket, 'k').content
    assert proxy.injected['truncate'] == 1


def test_fault_proxy_forwards_chunked_bodies(stack, rustfs_spec, rustfs_api, fault_proxy, rustfs_api_factory):
    bucket = _bucket(rustfs_spec)
    proxy = fault_proxy(stack['OBJSTORE_RUSTFS_URL'])
    api = rustfs_api_factory(proxy.url, rustfs_api.header, rustfs_api.key)
    parts = [b'x' * 70000, b'y' * 5, b'z' * 300000]

    def body():
        yield from parts
    put = api.put(bucket, 'chunked', body())
    assert put.status_code == 201, put.text
    assert put.json()['size'] == sum(len(p) for p in parts)
    assert api.get(bucket, 'chunked').content == b''.join(parts)


def test_fault_proxy_https_in_front_of_plain_s3(s3_https_spec, s3_client_factory, tls_ca):
    config = s3_https_spec['storage_driver']['config']
    assert config['url'].startswith('https://')
    client = s3_client_factory('a', url=config['url'], verify=config['ca_bundle'])
    client.put_object(Bucket=config['bucket'], Key='over/tls', Body=b'tls body')
    assert client.get_object(Bucket=config['bucket'], Key='over/tls')['Body'].read() == b'tls body'


def test_fault_proxy_seed_is_reproducible(stack):
    from faultproxy import FaultProxy
    draws = []
    for dummy in range(2):
        proxy = FaultProxy(stack['OBJSTORE_RUSTFS_URL'], slowdown_rate=0.5, reset_rate=0.2, seed=42)
        draws.append([proxy._draw() for dummy in range(50)])
    assert draws[0] == draws[1]
    assert {'slowdown', 'reset', None} <= set(draws[0])


def test_servers_bind_loopback_only(stack):
    port = int(urllib.parse.urlsplit(stack['OBJSTORE_RUSTFS_URL']).port)
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    addresses.discard('127.0.0.1')
    addresses = {a for a in addresses if not a.startswith('127.')}
    for address in addresses:
        sock = socket.socket()
        sock.settimeout(1)
        try:
            assert sock.connect_ex((address, port)) != 0
        finally:
            sock.close()
