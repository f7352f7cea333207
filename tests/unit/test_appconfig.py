# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for module_utils/appconfig.py (the text-level config swap)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest
import yaml

from ansible_collections.storeshift.objstore.plugins.module_utils import appconfig
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import load_spec_from_config

ANCHORE = """\
# Anchore Enterprise config (catalog host)
service_dir: ${ANCHORE_SERVICE_DIR}
log_level: 'INFO'   # keep INFO
credentials:
  database:
    db_connect: 'postgresql://anchore:s3cr3t@db:5432/anchore'
services:
  apiext:
    enabled: true
    port: 8228
  catalog:
    enabled: true
    cycle_timers:
      image_watcher: 3600
    # object store: where documents live
    object_store:
      compression:
        enabled: false
        min_size_kbytes: 100
      storage_driver:
        name: db
        config: {}
    # trailing comment that belongs to the next key
    event_log:
      notification:
        enabled: false
  simplequeue:
    enabled: true
"""

S3 = {'compression': {'enabled': True, 'min_size_kbytes': 100},
      'storage_driver': {'name': 's3', 'config': {'url': 'http://127.0.0.1:9000', 'bucket': 'anchore',
                                                  'access_key': 'AKIDEXAMPLE', 'secret_key': 'wJalrXUtnFEMI'}}}
RUSTFS = {'storage_driver': {'name': 'rustfs', 'config': {'endpoint': 'http://rustfs:8080', 'bucket': 'scanner-artifacts',
                                                          'timeout_seconds': 30, 'api_key_header': 'X-API-Key',
                                                          'api_key': 'topsecret'}}}


def lines_outside(text, start_marker, end_marker):
    """Lines of ``text`` outside the [start_marker, end_marker) region."""
    lines = text.splitlines(True)
    start = next(i for i, line in enumerate(lines) if start_marker in line)
    end = next(i for i, line in enumerate(lines) if end_marker in line and i > start)
    return lines[:start + 1], lines[end:]


def test_anchore_object_store_replaced_rest_byte_identical():
    result = appconfig.plan('/x/config.yaml', 'anchore', 'object_store', S3, text=ANCHORE)
    assert result['changed']
    after = result['after']
    head_b, tail_b = lines_outside(ANCHORE, '    object_store:', '# trailing comment')
    head_a, tail_a = lines_outside(after, '    object_store:', '# trailing comment')
    assert head_a == head_b
    assert tail_a == tail_b
    doc = yaml.safe_load(after)
    assert doc['services']['catalog']['object_store'] == S3
    assert result['old']['storage_driver']['name'] == 'db'


def test_idempotent_no_change():
    first = appconfig.plan('/x/config.yaml', 'anchore', 'object_store', S3, text=ANCHORE)
    second = appconfig.plan('/x/config.yaml', 'anchore', 'object_store', S3, text=first['after'])
    assert not second['changed']
    assert second['after'] == first['after']


def test_roundtrip_back_to_original_value_keeps_other_bytes():
    first = appconfig.plan('/x/config.yaml', 'anchore', 'object_store', S3, text=ANCHORE)
    back = appconfig.plan('/x/config.yaml', 'anchore', 'object_store',
                          {'compression': {'enabled': False, 'min_size_kbytes': 100},
                           'storage_driver': {'name': 'db', 'config': {}}}, text=first['after'])
    assert back['changed']
    assert yaml.safe_load(back['after']) == yaml.safe_load(ANCHORE)


def test_analysis_archive_added_when_missing():
    spec = dict(S3, enabled=True)
    result = appconfig.plan('/x/config.yaml', 'anchore', 'analysis_archive', spec, text=ANCHORE)
    doc = yaml.safe_load(result['after'])
    assert doc['services']['catalog']['analysis_archive'] == spec
    assert doc['services']['catalog']['object_store']['storage_driver']['name'] == 'db'
    assert result['after'].startswith(ANCHORE.split('  simplequeue:', maxsplit=1)[0])
    assert result['after'].endswith('  simplequeue:\n    enabled: true\n')
    assert result['old'] is None


def test_bool_vs_int_difference_detected():
    text = ANCHORE.replace('enabled: false\n        min_size_kbytes', 'enabled: 0\n        min_size_kbytes')
    result = appconfig.plan('/x/config.yaml', 'anchore', 'object_store',
                            {'compression': {'enabled': False, 'min_size_kbytes': 100},
                             'storage_driver': {'name': 'db', 'config': {}}}, text=text)
    assert result['changed']


def test_inline_null_value_replaced():
    text = 'services:\n  catalog:\n    analysis_archive: null\n    other: 1\n'
    result = appconfig.plan('/x/c.yaml', 'anchore', 'analysis_archive', S3, text=text)
    doc = yaml.safe_load(result['after'])
    assert doc['services']['catalog']['analysis_archive'] == S3
    assert doc['services']['catalog']['other'] == 1
    assert result['after'].endswith('    other: 1\n')


def test_four_space_indent_and_crlf_preserved():
    text = ('services:\r\n    catalog:\r\n        object_store:\r\n            storage_driver:\r\n'
            '                name: db\r\n                config: {}\r\n    other: x\r\n')
    result = appconfig.plan('/x/c.yaml', 'anchore', 'object_store', S3, text=text)
    assert '\n' not in result['after'].replace('\r\n', '')
    assert '            storage_driver:\r\n' in result['after']
    assert yaml.safe_load(result['after'])['services']['catalog']['object_store'] == S3
    assert result['after'].endswith('    other: x\r\n')


def test_no_final_newline_kept():
    text = 'services:\n  catalog:\n    object_store:\n      storage_driver:\n        name: db'
    result = appconfig.plan('/x/c.yaml', 'anchore', 'object_store', S3, text=text)
    assert not result['after'].endswith('\n')
    assert yaml.safe_load(result['after'])['services']['catalog']['object_store'] == S3


def test_flow_style_parent_refused():
    text = 'services: {catalog: {object_store: {storage_driver: {name: db}}}}\n'
    with pytest.raises(ConfigError):
        appconfig.plan('/x/c.yaml', 'anchore', 'object_store', S3, text=text)


def test_invalid_store_refused():
    with pytest.raises(ConfigError):
        appconfig.plan('/x/c.yaml', 'anchore', 'object_store', {'storage_driver': {'name': 'nope'}}, text=ANCHORE)


def test_wrong_section_for_app():
    with pytest.raises(ConfigError):
        appconfig.plan('/x/c.yaml', 'anchore', 'artifact_store', S3, text=ANCHORE)
    with pytest.raises(ConfigError):
        appconfig.plan('/x/c.yaml', 'stellaops', 'object_store', RUSTFS, text='scanner: {}\n')


STELLA_YAML = """\
# StellaOps scanner
scanner:
  queue:
    kind: redis   # comment kept
  artifactStore:
    driver: minio
    endpoint: http://stellaops-minio:9000
    bucket: scanner-artifacts
    accessKey: stellaops
    secretKey: dev-minio-secret
  api:
    port: 8444
"""


def test_stellaops_yaml_to_rustfs(tmp_path):
    result = appconfig.plan('/x/s.yaml', 'stellaops', 'artifact_store', RUSTFS, text=STELLA_YAML)
    doc = yaml.safe_load(result['after'])
    assert doc['scanner']['artifactStore'] == {'driver': 'rustfs', 'endpoint': 'http://rustfs:8080',
                                               'bucket': 'scanner-artifacts', 'timeoutSeconds': 30,
                                               'apiKeyHeader': 'X-API-Key', 'apiKey': 'topsecret'}
    assert '    kind: redis   # comment kept\n' in result['after']
    assert result['after'].endswith('  api:\n    port: 8444\n')
    path = tmp_path / 'scanner.yaml'
    path.write_text(result['after'])
    spec = load_spec_from_config(str(path), 'artifact_store')
    assert spec.driver == 'rustfs' and spec.config['api_key'] == 'topsecret'


STELLA_ENV = """\
# scanner environment
ASPNETCORE_URLS=http://+:8444
SCANNER__ARTIFACTSTORE__DRIVER=minio
SCANNER__ARTIFACTSTORE__ENDPOINT=http://stellaops-minio:9000
SCANNER__ARTIFACTSTORE__BUCKET=scanner-artifacts
SCANNER__ARTIFACTSTORE__ACCESSKEY=stellaops
SCANNER__ARTIFACTSTORE__SECRETKEY=dev-minio-secret
SCANNER__QUEUE__KIND=redis
"""


def test_stellaops_env_file(tmp_path):
    result = appconfig.plan('/x/scanner.env', 'stellaops', None, RUSTFS, text=STELLA_ENV)
    assert result['kind'] == 'env'
    after = result['after']
    assert after.startswith('# scanner environment\nASPNETCORE_URLS=http://+:8444\n'
                            'SCANNER__ARTIFACTSTORE__DRIVER=rustfs\n')
    assert 'ACCESSKEY' not in after and 'SECRETKEY' not in after
    assert after.endswith('SCANNER__QUEUE__KIND=redis\n')
    path = tmp_path / 'scanner.env'
    path.write_text(after)
    spec = load_spec_from_config(str(path), 'artifact_store')
    assert spec.driver == 'rustfs'
    assert spec.config == RUSTFS['storage_driver']['config']
    again = appconfig.plan(str(path), 'stellaops', None, RUSTFS, text=after)
    assert not again['changed']


def test_env_file_without_keys_gets_them_appended():
    result = appconfig.plan('/x/scanner.env', 'stellaops', None, RUSTFS, text='FOO=bar\n')
    assert result['after'].startswith('FOO=bar\nSCANNER__ARTIFACTSTORE__DRIVER=rustfs\n')


def test_mask_text():
    masked = appconfig.mask_text('a:\n  secret_key: abc\n  apiKey: "x"\n  password: p # c\n  url: http://u:pw@h/\n'
                                 'SCANNER__ARTIFACTSTORE__APIKEY=zzz\nSCANNER__ARTIFACTSTORE__BUCKET=b\n')
    assert 'abc' not in masked and '"x"' not in masked and 'p # c' not in masked and 'pw@' not in masked
    assert 'zzz' not in masked
    assert 'SCANNER__ARTIFACTSTORE__BUCKET=b' in masked
    assert masked.count(appconfig.MASK) == 5


def test_mask_data():
    assert appconfig.mask_data(S3)['storage_driver']['config']['secret_key'] == appconfig.MASK
    assert appconfig.mask_data(S3)['storage_driver']['config']['access_key'] == 'AKIDEXAMPLE'


def test_write_text_keeps_mode(tmp_path):
    path = tmp_path / 'config.yaml'
    path.write_text(ANCHORE)
    os.chmod(str(path), 0o640)
    result = appconfig.plan(str(path), 'anchore', 'object_store', S3)
    appconfig.write_text(str(path), result['after'])
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o640
    assert path.read_text() == result['after']
    assert not [p for p in os.listdir(str(tmp_path)) if p.startswith('.')]


def test_read_text_errors(tmp_path):
    with pytest.raises(ConfigError):
        appconfig.read_text('relative.yaml')
    with pytest.raises(ConfigError):
        appconfig.read_text(str(tmp_path / 'missing.yaml'))


def test_invalid_yaml_reported():
    with pytest.raises(ConfigError) as info:
        appconfig.plan('/x/c.yaml', 'anchore', 'object_store', S3, text='services: [\n')
    assert 'not valid YAML' in str(info.value)


def test_backup_keeps_extension_and_mode(tmp_path):
    path = tmp_path / 'scanner.env'
    path.write_text(STELLA_ENV)
    os.chmod(str(path), 0o600)
    first = appconfig.backup_file(str(path))
    second = appconfig.backup_file(str(path))
    assert first != second
    for copy in (first, second):
        assert copy.endswith('.env') and '.storeshift-' in copy
        assert stat.S_IMODE(os.stat(copy).st_mode) == 0o600
        with open(copy) as handle:
            assert handle.read() == STELLA_ENV
