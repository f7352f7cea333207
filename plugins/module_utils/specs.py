# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Store specs: Anchore's ``{storage_driver: {name, config}, compression}``
shape, validated, and loadable from an Anchore ``config.yaml`` or a StellaOps
configuration (YAML ``scanner.artifactStore`` or an environment file).

Plain Python: no Ansible import. PyYAML is only needed to read YAML files.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os
import re

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover - exercised on bare targets only
    HAS_YAML = False

DRIVERS = ('db', 'db2', 's3', 'rustfs', 'localfs')

# Config keys whose values are secrets: masked in every output.
SECRET_KEYS = frozenset(('secret_key', 'api_key', 'password', 'session_token', 'secret_access_key'))
MASK = '********'

# Allowed config keys per driver, with their types. ``None`` means "any scalar".
_S3_KEYS = {
    'access_key': str, 'secret_key': str, 'session_token': str, 'iamauto': bool,
    'url': str, 'region': str, 'bucket': str, 'create_bucket': bool, 'prefix': str,
    'validate_certs': bool, 'ca_bundle': str, 'addressing_style': str,
    'multipart_threshold_mb': int, 'multipart_chunksize_mb': int,
    'connect_timeout': int, 'read_timeout': int, 'max_pool_connections': int,
}
_RUSTFS_KEYS = {
    'endpoint': str, 'bucket': str, 'api_key_header': str, 'api_key': str,
    'timeout_seconds': int, 'validate_certs': bool, 'ca_bundle': str, 'prefix': str,
}
_LOCALFS_KEYS = {'archive_data_dir': str}
_DB_KEYS = {}
DRIVER_KEYS = {'s3': _S3_KEYS, 'rustfs': _RUSTFS_KEYS, 'localfs': _LOCALFS_KEYS,
               'db': _DB_KEYS, 'db2': _DB_KEYS}

SECTIONS = ('object_store', 'archive', 'analysis_archive', 'artifact_store')


def _as_bool(name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ('true', 'yes', 'on', '1', 'false', 'no', 'off', '0'):
        return value.strip().lower() in ('true', 'yes', 'on', '1')
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError('%s must be a boolean, got %r' % (name, value), step='config')


def _as_int(name, value, minimum=None):
    if isinstance(value, bool):
        raise ConfigError('%s must be an integer, got %r' % (name, value), step='config')
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError('%s must be an integer, got %r' % (name, value), step='config')
    if minimum is not None and number < minimum:
        raise ConfigError('%s must be at least %d, got %d' % (name, minimum, number), step='config')
    return number


class StoreSpec(object):
    """A validated store specification."""

    def __init__(self, driver, config, compression_enabled=False, min_size_kbytes=100, origin=None):
        self.driver = driver
        self.config = config
        self.compression_enabled = compression_enabled
        self.min_size_kbytes = min_size_kbytes
        self.origin = origin  # e.g. "/etc/anchore/config.yaml [object_store]"

    # -- construction -------------------------------------------------------
    @classmethod
    def from_dict(cls, data, name='store', origin=None):
        if isinstance(data, StoreSpec):
            return data
        if not isinstance(data, dict):
            raise ConfigError('%s must be a mapping with storage_driver, got %s' % (name, type(data).__name__),
                              step='config')
        unknown = sorted(set(data) - set(('storage_driver', 'compression', 'enabled')))
        if unknown:
            raise ConfigError('%s has unknown keys: %s (expected storage_driver, compression)' % (name, ', '.join(unknown)),
                              step='config')
        driver_section = data.get('storage_driver')
        if not isinstance(driver_section, dict):
            raise ConfigError('%s.storage_driver is missing or not a mapping' % name, step='config')
        driver = driver_section.get('name')
        if not driver or not isinstance(driver, str):
            raise ConfigError('%s.storage_driver.name is missing' % name, step='config')
        driver = driver.strip().lower()
        if driver not in DRIVERS:
            raise ConfigError("%s: unknown storage driver '%s' (supported: %s)" % (name, driver, ', '.join(DRIVERS)),
                              step='config')
        config = driver_section.get('config') or {}
        if not isinstance(config, dict):
            raise ConfigError('%s.storage_driver.config must be a mapping' % name, step='config')
        config = cls._validate_config(driver, dict(config), name)
        compression = data.get('compression') or {}
        if not isinstance(compression, dict):
            raise ConfigError('%s.compression must be a mapping' % name, step='config')
        bad = sorted(set(compression) - set(('enabled', 'min_size_kbytes')))
        if bad:
            raise ConfigError('%s.compression has unknown keys: %s' % (name, ', '.join(bad)), step='config')
        enabled = _as_bool('%s.compression.enabled' % name, compression.get('enabled', False))
        min_size = _as_int('%s.compression.min_size_kbytes' % name, compression.get('min_size_kbytes', 100), 0)
        return cls(driver, config, enabled, min_size, origin=origin)

    @staticmethod
    def _validate_config(driver, config, name):
        allowed = DRIVER_KEYS[driver]
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            raise ConfigError("%s: unknown %s config keys: %s (allowed: %s)"
                              % (name, driver, ', '.join(unknown), ', '.join(sorted(allowed)) or 'none'),
                              step='config')
        out = {}
        for key, value in config.items():
            kind = allowed[key]
            label = '%s.storage_driver.config.%s' % (name, key)
            if value is None or value is False and kind is str:
                # Anchore configs say "region: False" / "region: null" for "unset".
                continue
            if kind is bool:
                out[key] = _as_bool(label, value)
            elif kind is int:
                out[key] = _as_int(label, value, 1)
            else:
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    raise ConfigError('%s must be a string' % label, step='config')
                out[key] = str(value)
        if driver == 's3':
            if not out.get('bucket'):
                raise ConfigError('%s: s3 config needs a non-empty bucket' % name, step='config')
            if not out.get('iamauto') and bool(out.get('access_key')) != bool(out.get('secret_key')):
                raise ConfigError('%s: s3 config needs both access_key and secret_key (or iamauto: true)' % name,
                                  step='config')
            if out.get('addressing_style', 'path') not in ('path', 'virtual', 'auto'):
                raise ConfigError('%s: addressing_style must be path, virtual or auto' % name, step='config')
            if out.get('ca_bundle') and not os.path.isabs(out['ca_bundle']):
                raise ConfigError('%s: ca_bundle must be an absolute path' % name, step='config')
        elif driver == 'rustfs':
            if not out.get('endpoint'):
                raise ConfigError('%s: rustfs config needs an endpoint (http(s)://host:port)' % name, step='config')
            if not re.match(r'^https?://', out['endpoint']):
                raise ConfigError('%s: rustfs endpoint must start with http:// or https://' % name, step='config')
            if not out.get('bucket'):
                raise ConfigError('%s: rustfs config needs a non-empty bucket' % name, step='config')
            if out.get('api_key_header') and not out.get('api_key'):
                raise ConfigError('%s: rustfs api_key_header is set but api_key is empty' % name, step='config')
            if out.get('ca_bundle') and not os.path.isabs(out['ca_bundle']):
                raise ConfigError('%s: ca_bundle must be an absolute path' % name, step='config')
        elif driver == 'localfs':
            directory = out.get('archive_data_dir')
            if not directory:
                raise ConfigError('%s: localfs config needs archive_data_dir' % name, step='config')
            if not os.path.isabs(directory):
                raise ConfigError('%s: localfs archive_data_dir must be an absolute path, got %s' % (name, directory),
                                  step='config')
        return out

    # -- views ----------------------------------------------------------------
    def to_dict(self, redact=True):
        config = copy.deepcopy(self.config)
        if redact:
            config = redact_mapping(config)
        return {'storage_driver': {'name': self.driver, 'config': config},
                'compression': {'enabled': self.compression_enabled, 'min_size_kbytes': self.min_size_kbytes}}

    def secrets(self):
        return [v for k, v in self.config.items() if k in SECRET_KEYS and v]

    def describe(self):
        """One line naming the store, without secrets."""
        cfg = self.config
        if self.driver == 's3':
            where = cfg.get('url') or ('aws region %s' % cfg.get('region', 'default'))
            return 's3 %s bucket %s%s' % (where, cfg['bucket'], (' prefix %s' % cfg['prefix']) if cfg.get('prefix') else '')
        if self.driver == 'rustfs':
            return 'rustfs %s bucket %s' % (cfg['endpoint'], cfg['bucket'])
        if self.driver == 'localfs':
            return 'localfs %s' % cfg['archive_data_dir']
        return '%s (PostgreSQL table %s)' % (self.driver, 'object_storage' if self.driver == 'db2' else 'archive_document')

    def identity(self):
        """A stable identity for 'same store' checks (no secrets)."""
        cfg = self.config
        if self.driver == 's3':
            return ('s3', (cfg.get('url') or cfg.get('region') or '').rstrip('/'), cfg['bucket'], cfg.get('prefix', ''))
        if self.driver == 'rustfs':
            return ('rustfs', cfg['endpoint'].rstrip('/'), cfg['bucket'], cfg.get('prefix', ''))
        if self.driver == 'localfs':
            return ('localfs', os.path.normpath(cfg['archive_data_dir']))
        return (self.driver,)

    def __repr__(self):
        return 'StoreSpec(%s)' % self.describe()


def redact_mapping(data):
    """A copy of ``data`` with secret values masked, recursively."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if isinstance(key, str) and (key in SECRET_KEYS or key.lower().replace('-', '_') in SECRET_KEYS
                                         or key.lower() in ('apikey', 'secretkey', 'db_connect')):
                out[key] = MASK if value else value
            else:
                out[key] = redact_mapping(value)
        return out
    if isinstance(data, list):
        return [redact_mapping(v) for v in data]
    return data


def redact_dsn(dsn):
    """Mask the password in a libpq DSN or URL."""
    if not dsn:
        return dsn
    dsn = re.sub(r'(://[^:/@]*:)[^@]*@', r'\1' + MASK + '@', dsn)
    dsn = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r'\1' + MASK, dsn)
    return dsn


def dsn_password(dsn):
    """The password inside a DSN, to scrub it from error messages."""
    if not dsn:
        return None
    match = re.search(r'://[^:/@]*:([^@]*)@', dsn)
    if match:
        return match.group(1)
    match = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    if match:
        return match.group(1).strip("'")
    return None


# ---------------------------------------------------------------------------
# Application config files
# ---------------------------------------------------------------------------

def _read_text(path):
    if not os.path.isabs(path):
        raise ConfigError('config_file must be an absolute path, got %s' % path, step='config')
    if not os.path.exists(path):
        raise ConfigError('config_file %s does not exist' % path, step='config')
    try:
        with open(path, 'r') as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        raise ConfigError('config_file %s cannot be read: %s' % (path, exc.strerror or exc), step='config')


def _parse_env_file(text):
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('export '):
            line = line[7:].strip()
        if '=' not in line:
            continue
        key, _sep, value = line.partition('=')
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _looks_like_env_file(text):
    """True when the first meaningful line is ``NAME=value`` (YAML would say ``name: value``)."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            return bool(re.match(r'^(export\s+)?[A-Za-z_][A-Za-z0-9_]*=', line))
    return False


# .NET configuration keys for scanner.artifactStore in an environment file.
_ENV_PREFIXES = ('SCANNER__ARTIFACTSTORE__', 'STELLAOPS_SCANNER__ARTIFACTSTORE__')


def _artifact_store_from_env(values):
    found = {}
    for key, value in values.items():
        upper = key.upper()
        for prefix in _ENV_PREFIXES:
            if upper.startswith(prefix):
                found[upper[len(prefix):].lower()] = value
    return found


def _artifact_store_to_spec(raw, origin):
    """Map StellaOps' ``scanner.artifactStore`` to a StoreSpec."""
    lowered = dict((str(k).lower(), v) for k, v in raw.items())
    driver = str(lowered.get('driver') or '').lower()
    if driver == 'rustfs':
        config = {'endpoint': lowered.get('endpoint'), 'bucket': lowered.get('bucket')}
        if lowered.get('timeoutseconds') is not None:
            config['timeout_seconds'] = lowered['timeoutseconds']
        if lowered.get('apikeyheader'):
            config['api_key_header'] = lowered['apikeyheader']
        if lowered.get('apikey'):
            config['api_key'] = lowered['apikey']
        spec = {'storage_driver': {'name': 'rustfs', 'config': config}}
    elif driver in ('s3', 'minio'):
        config = {'url': lowered.get('endpoint'), 'bucket': lowered.get('bucket'),
                  'access_key': lowered.get('accesskey'), 'secret_key': lowered.get('secretkey')}
        if lowered.get('region'):
            config['region'] = lowered['region']
        spec = {'storage_driver': {'name': 's3', 'config': config}}
    elif not driver:
        raise ConfigError('%s: scanner.artifactStore has no driver' % origin, step='config')
    else:
        raise ConfigError("%s: unknown scanner.artifactStore driver '%s' (supported: rustfs, s3, minio)"
                          % (origin, driver), step='config')
    return StoreSpec.from_dict(spec, name='scanner.artifactStore', origin=origin)


def _catalog(doc):
    services = doc.get('services') if isinstance(doc, dict) else None
    catalog = services.get('catalog') if isinstance(services, dict) else None
    return catalog if isinstance(catalog, dict) else {}


def load_spec_from_config(path, section=None):
    """Load a store spec from an application config file.

    ``section``: ``object_store`` (Anchore ``services.catalog.object_store``,
    else the legacy ``archive``), ``archive``, ``analysis_archive`` (falls back
    to the object store when missing, null or ``{}``, as Anchore does), or
    ``artifact_store`` (StellaOps ``scanner.artifactStore``). ``None`` picks
    ``artifact_store`` for StellaOps files and ``object_store`` otherwise.
    """
    if section is not None and section not in SECTIONS:
        raise ConfigError("unknown config section '%s' (expected one of: %s)" % (section, ', '.join(SECTIONS)),
                          step='config')
    text = _read_text(path)
    origin = '%s [%s]' % (path, section or 'auto')
    if path.endswith('.env') or _looks_like_env_file(text):
        env_values = _artifact_store_from_env(_parse_env_file(text))
        if section not in (None, 'artifact_store'):
            raise ConfigError('%s is an environment file; only section artifact_store applies' % path, step='config')
        if not env_values:
            raise ConfigError('%s has no SCANNER__ARTIFACTSTORE__* settings' % path, step='config')
        return _artifact_store_to_spec(env_values, origin)
    if not HAS_YAML:
        raise ConfigError('PyYAML is required on the target to read %s' % path, step='config')
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = ' at line %d column %d' % (mark.line + 1, mark.column + 1) if mark else ''
        raise ConfigError('config_file %s is not valid YAML%s: %s' % (path, where, getattr(exc, 'problem', exc)),
                          step='config')
    if not isinstance(doc, dict):
        raise ConfigError('config_file %s does not hold a YAML mapping' % path, step='config')

    scanner = doc.get('scanner')
    artifact = scanner.get('artifactStore') if isinstance(scanner, dict) else None
    if section == 'artifact_store' or (section is None and artifact is not None):
        if not isinstance(artifact, dict):
            raise ConfigError('%s has no scanner.artifactStore section' % path, step='config')
        return _artifact_store_to_spec(artifact, origin)

    catalog = _catalog(doc)
    section = section or 'object_store'

    def primary():
        if isinstance(catalog.get('object_store'), dict) and catalog['object_store']:
            return catalog['object_store'], 'services.catalog.object_store'
        if isinstance(catalog.get('archive'), dict) and catalog['archive']:
            return catalog['archive'], 'services.catalog.archive'
        return None, None

    if section == 'archive':
        data, where = (catalog.get('archive'), 'services.catalog.archive')
    elif section == 'object_store':
        data, where = primary()
    else:  # analysis_archive
        data, where = catalog.get('analysis_archive'), 'services.catalog.analysis_archive'
        if not data or not isinstance(data, dict) or not data.get('storage_driver') \
                or data.get('enabled') is False:
            data, where = primary()
    if not data:
        raise ConfigError('%s has no %s section (looked for services.catalog.object_store and services.catalog.archive)'
                          % (path, section), step='config')
    return StoreSpec.from_dict(data, name=where, origin='%s [%s]' % (path, where))


def resolve_spec(spec=None, config_file=None, section=None, name='store'):
    """A StoreSpec from either an inline spec or a config file + section."""
    if spec and config_file:
        raise ConfigError('%s: give either a spec or config_file, not both' % name, step='config')
    if spec:
        if isinstance(spec, dict) and ('config_file' in spec or 'section' in spec):
            inner = dict(spec)
            if inner.get('storage_driver'):
                raise ConfigError('%s: give either a spec or config_file, not both' % name, step='config')
            return resolve_spec(None, inner.pop('config_file', None), inner.pop('section', None), name)
        return StoreSpec.from_dict(spec, name=name)
    if config_file:
        return load_spec_from_config(config_file, section)
    raise ConfigError('%s: no store given (a spec or config_file is required)' % name, step='config')
