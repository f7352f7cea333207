import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import (
    StoreSpec,
    dsn_password,
    load_spec_from_config,
    redact_dsn,
    resolve_spec,
)

ANCHORE = """\
services:
  catalog:
    enabled: true
    object_store:
      compression:
        enabled: false
        min_size_kbytes: 100
      storage_driver:
        name: db
        config: {}
%s
"""

ARCHIVE_S3 = """\
    analysis_archive:
      enabled: true
      compression:
        enabled: False
        min_size_kbytes: 100
      storage_driver:
        name: 's3'
        config:
          access_key: 'MY_ACCESS_KEY'
          secret_key: 'MY_SECRET_KEY'
          url: 'https://S3-end-point.example.com'
          region: False
          bucket: 'anchorearchive'
          create_bucket: True
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_s3_spec_anchore_shape_region_false_is_unset():
    spec = StoreSpec.from_dict({'storage_driver': {'name': 's3', 'config': {
        'access_key': 'a', 'secret_key': 'supersecret', 'url': 'http://x:9000/', 'region': False, 'bucket': 'b'}}})
    assert spec.driver == 's3'
    assert 'region' not in spec.config
    assert spec.secrets() == ['supersecret']
    assert 'supersecret' not in str(spec.to_dict())
    assert 'supersecret' not in spec.describe()


@pytest.mark.parametrize('data, message', [
    ({'storage_driver': {'name': 'swift'}}, "unknown storage driver 'swift'"),
    ({'storage_driver': {'name': 's3', 'config': {}}}, 'non-empty bucket'),
    ({'storage_driver': {'name': 's3', 'config': {'bucket': ''}}}, 'non-empty bucket'),
    ({'storage_driver': {'name': 's3', 'config': {'bucket': 'b', 'access_key': 'a'}}}, 'both access_key and secret_key'),
    ({'storage_driver': {'name': 's3', 'config': {'bucket': 'b', 'colour': 'red'}}}, 'unknown s3 config keys: colour'),
    ({'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': 'relative/dir'}}}, 'absolute path'),
    ({'storage_driver': {'name': 'rustfs', 'config': {'endpoint': 'ftp://x', 'bucket': 'b'}}}, 'http:// or https://'),
    ({'storage_driver': {'name': 'rustfs', 'config': {
        'endpoint': 'http://x', 'bucket': 'b', 'api_key_header': 'X-K'}}}, 'api_key is empty'),
    ({'compression': {'enabled': True}}, 'storage_driver is missing'),
    ('not a mapping', 'must be a mapping'),
    ({'storage_driver': {'name': 'db'}, 'compression': {'enabled': 'maybe'}}, 'must be a boolean'),
])
def test_bad_specs_are_refused_with_a_clear_message(data, message):
    with pytest.raises(ConfigError) as info:
        StoreSpec.from_dict(data)
    assert message in str(info.value)


def test_anchore_object_store_and_analysis_archive_default(tmp_path):
    path = write(tmp_path, 'config.yaml', ANCHORE % '')
    assert load_spec_from_config(path).driver == 'db'
    # No analysis_archive section: Anchore falls back to the object store.
    assert load_spec_from_config(path, 'analysis_archive').driver == 'db'


def test_anchore_split_analysis_archive(tmp_path):
    path = write(tmp_path, 'config.yaml', ANCHORE % ARCHIVE_S3)
    archive = load_spec_from_config(path, 'analysis_archive')
    assert archive.driver == 's3' and archive.config['bucket'] == 'anchorearchive'
    assert archive.config['create_bucket'] is True


def test_anchore_legacy_archive_section(tmp_path):
    text = ANCHORE.replace('object_store:', 'archive:') % ''
    assert load_spec_from_config(write(tmp_path, 'c.yaml', text)).driver == 'db'


def test_stellaops_yaml_and_env_file(tmp_path):
    yaml_path = write(tmp_path, 'scanner.yaml', """\
scanner:
  artifactStore:
    driver: rustfs
    endpoint: http://stellaops-rustfs:8080
    bucket: scanner-artifacts
    timeoutSeconds: 30
    apiKeyHeader: X-API-Key
    apiKey: k-123456
""")
    spec = load_spec_from_config(yaml_path)
    assert spec.driver == 'rustfs'
    assert spec.config['timeout_seconds'] == 30 and spec.config['api_key'] == 'k-123456'
    env_path = write(tmp_path, 'scanner.conf', '# StellaOps scanner environment\nSCANNER__ARTIFACTSTORE__DRIVER=s3\n'
                     'SCANNER__ARTIFACTSTORE__ENDPOINT=http://minio:9000\n'
                     'SCANNER__ARTIFACTSTORE__BUCKET=scanner-artifacts\n'
                     'SCANNER__ARTIFACTSTORE__ACCESSKEY=stellaops\n'
                     'SCANNER__ARTIFACTSTORE__SECRETKEY="dev-minio-secret"\n')
    spec = load_spec_from_config(env_path, 'artifact_store')
    assert spec.driver == 's3' and spec.config['secret_key'] == 'dev-minio-secret'


@pytest.mark.parametrize('text, section, message', [
    ('services: [unclosed', None, 'not valid YAML'),
    ('- a\n- b\n', None, 'does not hold a YAML mapping'),
    ('services:\n  catalog: {}\n', None, 'has no object_store section'),
    (ANCHORE % '', 'nonsense', "unknown config section 'nonsense'"),
    ('scanner:\n  artifactStore:\n    driver: gcs\n', None, "unknown scanner.artifactStore driver 'gcs'"),
])
def test_bad_config_files(tmp_path, text, section, message):
    path = write(tmp_path, 'c.yaml', text)
    with pytest.raises(ConfigError) as info:
        load_spec_from_config(path, section)
    assert message in str(info.value)


def test_config_file_must_be_absolute_and_readable(tmp_path):
    with pytest.raises(ConfigError, match='absolute path'):
        load_spec_from_config('relative.yaml')
    with pytest.raises(ConfigError, match='does not exist'):
        load_spec_from_config(str(tmp_path / 'missing.yaml'))
    path = write(tmp_path, 'locked.yaml', ANCHORE % '')
    (tmp_path / 'locked.yaml').chmod(0)
    import os
    if os.geteuid() != 0:
        with pytest.raises(ConfigError, match='cannot be read'):
            load_spec_from_config(path)


def test_resolve_spec_conflicts():
    with pytest.raises(ConfigError, match='not both'):
        resolve_spec({'storage_driver': {'name': 'db'}}, config_file='/x.yaml')
    with pytest.raises(ConfigError, match='no store given'):
        resolve_spec(None, None)


@pytest.mark.parametrize('dsn', [
    'postgresql://user:p%40ss-word-1@db.example.com:5432/anchore',
    "host=db dbname=anchore user=u password='p ss-word-1'",
    'host=db dbname=anchore user=u password=pss-word-1',
])
def test_dsn_redaction(dsn):
    secret = dsn_password(dsn)
    assert secret and secret in dsn
    assert secret not in redact_dsn(dsn)
