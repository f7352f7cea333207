"""TLS: certificate validation is on by default for the s3 and rustfs drivers.

Servers: a private HTTPS RustFS reference server and S3 server A behind an HTTPS FaultProxy, both with
a certificate from a CA this test session creates (trustme; fixtures tls_ca, rustfs_https_spec,
s3_https_spec). Without ca_bundle the CA is unknown: ConnectError naming the certificate check.
"""
import copy
import io
import json
import os
import subprocess

import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConnectError

from helpers import store_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def no_ca_from_environment(monkeypatch):
    """A CA bundle from the environment would hide what the drivers do by default."""
    for name in ('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'AWS_CA_BUNDLE', 'SSL_CERT_FILE', 'SSL_CERT_DIR'):
        monkeypatch.delenv(name, raising=False)


def variant(spec, **changes):
    spec = copy.deepcopy(spec)
    config = spec['storage_driver']['config']
    config.pop('ca_bundle', None)
    config.update(changes)
    return spec


def round_trip(spec):
    store = store_of(spec)
    try:
        store.check_access()
        store.put('tls/probe.txt', io.BytesIO(b'over TLS'), size=8)
        stream = store.open('tls/probe.txt')
        try:
            assert stream.read() == b'over TLS'
        finally:
            stream.close()
        assert [info.key for info in store.list('tls/')] == ['tls/probe.txt']
        store.delete('tls/probe.txt')
    finally:
        store.close()


@pytest.fixture(params=['rustfs', 's3'])
def https_spec(request):
    return request.getfixturevalue('%s_https_spec' % request.param)


def test_default_validates_certificates(https_spec):
    spec = variant(https_spec)  # no ca_bundle, validate_certs not set
    config = spec['storage_driver']['config']
    assert config['endpoint' if 'endpoint' in config else 'url'].startswith('https://')
    with pytest.raises(ConnectError) as caught:
        round_trip(spec)
    message = str(caught.value)
    assert 'TLS certificate verification failed' in message, message
    assert caught.value.cause == 'TLS certificate verification failed'
    assert 'ca_bundle' in message  # the hint names the fix


def test_validate_certs_true_without_ca_still_fails(https_spec):
    with pytest.raises(ConnectError, match='certificate'):
        round_trip(variant(https_spec, validate_certs=True))


def test_ca_bundle_works(https_spec, tls_ca):
    assert https_spec['storage_driver']['config']['ca_bundle'] == tls_ca['ca_file']
    round_trip(https_spec)


def test_wrong_ca_bundle_fails(https_spec, tmp_path):
    trustme = pytest.importorskip('trustme')
    other = tmp_path / 'other-ca.pem'
    trustme.CA().cert_pem.write_to_path(str(other))
    with pytest.raises(ConnectError, match='TLS certificate verification failed'):
        round_trip(variant(https_spec, ca_bundle=str(other)))


def test_validate_certs_false_works_and_is_documented_insecure(https_spec, stack_env):
    round_trip(variant(https_spec, validate_certs=False))
    doc = subprocess.run(['ansible-doc', '--json', 'storeshift.objstore.objstore_migrate',
                          'storeshift.objstore.objstore_verify'], env=stack_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert doc.returncode == 0, doc.stderr
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'validate_certs' and isinstance(value, dict):
                    found.append(json.dumps(value.get('description')))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(json.loads(doc.stdout))
    assert len(found) >= 4 and all('insecure' in text for text in found), found
