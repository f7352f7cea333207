# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one module base class and the argument specs shared by the modules.

The argument specs here match ``plugins/doc_fragments/store.py``: keep them
in step. Everything else about stores lives in plain-Python module_utils.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import (
    MissingLibraryError,
    ObjstoreError,
    scrub,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import (
    SECTIONS,
    dsn_password,
    resolve_spec,
)

_PG_ENV = (('PGHOST', 'host'), ('PGPORT', 'port'), ('PGDATABASE', 'dbname'), ('PGUSER', 'user'),
           ('PGSSLMODE', 'sslmode'), ('PGSERVICE', 'service'))


def store_config_options():
    """Union of every driver's config keys; secrets are no_log."""
    return dict(
        # s3 (Anchore's keys first)
        access_key=dict(type='str', no_log=True),
        secret_key=dict(type='str', no_log=True),
        session_token=dict(type='str', no_log=True),
        iamauto=dict(type='bool'),
        url=dict(type='raw'),
        region=dict(type='raw'),
        bucket=dict(type='str'),
        create_bucket=dict(type='bool'),
        prefix=dict(type='str'),
        validate_certs=dict(type='bool'),
        ca_bundle=dict(type='path'),
        addressing_style=dict(type='str', choices=['path', 'virtual', 'auto']),
        multipart_threshold_mb=dict(type='int'),
        multipart_chunksize_mb=dict(type='int'),
        connect_timeout=dict(type='int'),
        read_timeout=dict(type='int'),
        max_pool_connections=dict(type='int'),
        # rustfs
        endpoint=dict(type='str'),
        api_key_header=dict(type='str', no_log=False),
        api_key=dict(type='str', no_log=True),
        timeout_seconds=dict(type='int'),
        # localfs
        archive_data_dir=dict(type='path'),
    )


def store_spec_options():
    return dict(
        storage_driver=dict(type='dict', options=dict(
            name=dict(type='str', required=True),
            config=dict(type='dict', options=store_config_options()),
        )),
        compression=dict(type='dict', options=dict(
            enabled=dict(type='bool', default=False),
            min_size_kbytes=dict(type='int', default=100),
        )),
        config_file=dict(type='path'),
        section=dict(type='str', choices=list(SECTIONS)),
    )


def store_argument(required=False):
    return dict(type='dict', required=required, options=store_spec_options())


def db_argument_spec():
    return dict(db_connect=dict(type='str', no_log=True))


def _strip_none(value):
    if isinstance(value, dict):
        return dict((k, _strip_none(v)) for k, v in value.items() if v is not None)
    return value


def pg_env_dsn():
    """A libpq DSN built from PG* environment variables (password left to libpq)."""
    parts = ['%s=%s' % (keyword, os.environ[name]) for name, keyword in _PG_ENV if os.environ.get(name)]
    return ' '.join(parts) or None


class ObjstoreModule(object):
    """Wraps AnsibleModule: parameter handling, store resolution, secret-safe results."""

    def __init__(self, argument_spec, with_db=True, **kwargs):
        spec = {}
        if with_db:
            spec.update(db_argument_spec())
        spec.update(argument_spec)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.module.params
        self.check_mode = self.module.check_mode
        self._secrets = []
        db_connect = self.params.get('db_connect') if with_db else None
        self.db_connect = db_connect or (pg_env_dsn() if with_db else None)
        if db_connect:
            self.add_secrets([dsn_password(db_connect)])
        if os.environ.get('PGPASSWORD'):
            self.add_secrets([os.environ['PGPASSWORD']])
        if isinstance(self.params.get('ledger'), str):  # a PostgreSQL ledger DSN may carry a password
            self.add_secrets([dsn_password(self.params['ledger'])])

    # -- helpers ------------------------------------------------------------
    def store_spec(self, name, section_override=None):
        """Resolve the store parameter ``name`` into a StoreSpec."""
        raw = _strip_none(self.params.get(name) or {})
        if section_override and raw.get('config_file'):
            raw['section'] = section_override
        spec = resolve_spec(raw if raw else None, name=name)
        self.add_secrets(spec.secrets())
        return spec

    @property
    def secrets(self):
        return [s for s in self._secrets if s]

    def add_secrets(self, values):
        values = [v for v in values if v and isinstance(v, str)]
        self._secrets.extend(values)
        # Also masked by AnsibleModule itself: the ``invocation`` it returns (ansible-core < 2.20 shows it
        # at -vvv) holds parameters that are not no_log, such as a PostgreSQL ledger DSN with its password.
        self.module.no_log_values.update(v for v in values if len(v) >= 3)

    def scrub(self, value):
        if isinstance(value, str):
            return scrub(value, self._secrets)
        if isinstance(value, dict):
            return dict((k, self.scrub(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def exit_json(self, **result):
        self.module.exit_json(**self.scrub(result))

    def fail_error(self, exc, **result):
        details = exc.to_dict()
        details.update(result)
        if isinstance(exc, MissingLibraryError):
            details['msg'] = missing_required_lib(exc.library)
        self.module.fail_json(**self.scrub(details))

    def run(self, func):
        """Call ``func(self)``; it returns the result dict. Errors become fail_json here only."""
        try:
            result = func(self)
        except ObjstoreError as exc:
            self.fail_error(exc)
        except Exception as exc:  # pylint: disable=broad-except
            # A bug, not a user error: keep the traceback but scrub secrets from it.
            self.module.fail_json(msg=self.scrub('unexpected error: %s' % exc),
                                  exception=self.scrub(traceback.format_exc()))
        self.exit_json(**result)
