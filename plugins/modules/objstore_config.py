#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: objstore_config
short_description: Set the object store section of an Anchore or StellaOps config file
version_added: 0.1.0
description:
  - Sets the object-store part of an application configuration file and nothing else.
  - "Anchore C(config.yaml): C(services.catalog.object_store), C(services.catalog.analysis_archive)
    (or the legacy C(services.catalog.archive))."
  - "StellaOps Scanner: C(scanner.artifactStore) in a YAML file, or the C(SCANNER__ARTIFACTSTORE__*) keys
    of an environment file (chosen by content, or by a C(.env) suffix)."
  - The edit is made on the text. The YAML block of the section is found by its indentation and replaced;
    every other byte of the file is kept, comments and key order included.
    The result is parsed back to confirm that the section reads back equal to O(store) and that no other
    setting changed; otherwise the module fails and the file is left alone.
  - Idempotent. When the section already holds O(store) nothing is written and C(changed) is false.
  - The file keeps its mode and owner; the module never widens the mode. It warns when a world-readable
    file is going to hold credentials.
  - Secret values (C(secret_key), C(api_key), C(password), C(apiKey), C(secretKey), DSN passwords) are
    masked in the diff and in every return value.
author:
  - Storeshift Maintainers (@storeshift)
options:
  path:
    description:
      - Absolute path of the application config file. It must exist.
    type: path
    required: true
  app:
    description:
      - Which application the file belongs to.
    type: str
    choices: [anchore, stellaops]
    default: anchore
  section:
    description:
      - Which section to set.
      - "C(object_store), C(analysis_archive) and C(archive) apply to Anchore, C(artifact_store) to StellaOps."
      - Defaults to C(object_store) for Anchore and C(artifact_store) for StellaOps.
    type: str
    choices: [object_store, analysis_archive, archive, artifact_store]
  store:
    description:
      - "The store, in Anchore's shape C({storage_driver: {name, config}, compression: {enabled, min_size_kbytes}})."
      - For Anchore it is written as given (after validation).
      - "For StellaOps it is mapped to C(scanner.artifactStore): the C(rustfs) driver to C(driver), C(endpoint),
        C(bucket), C(timeoutSeconds), C(apiKeyHeader), C(apiKey); the C(s3) driver to C(driver: s3), C(endpoint),
        C(bucket), C(region), C(accessKey), C(secretKey)."
    type: dict
    required: true
  backup:
    description:
      - Keep a copy of the original file before changing it, in the same directory, named
        C(<stem>.storeshift-<timestamp><extension>) (for example C(config.storeshift-20260102T030405.yaml)).
      - The copy keeps the original mode. Its path is returned as RV(backup_file).
    type: bool
    default: true
  state:
    description:
      - Only C(present) is supported.
    type: str
    choices: [present]
    default: present
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - Requires PyYAML on the target for YAML files.
  - "Flow-style mappings (C(catalog: {object_store: ...})) on the path to the section cannot be edited; the module
    fails naming the key."
seealso:
  - module: storeshift.objstore.objstore_check
  - module: storeshift.objstore.objstore_migrate
'''

EXAMPLES = r'''
- name: Point Anchore's object store at S3 (keeps a backup)
  storeshift.objstore.objstore_config:
    path: /etc/anchore/config.yaml
    app: anchore
    section: object_store
    store:
      compression:
        enabled: true
        min_size_kbytes: 100
      storage_driver:
        name: s3
        config:
          url: https://s3.example.com
          bucket: anchore-objects
          access_key: "{{ s3_access_key }}"
          secret_key: "{{ s3_secret_key }}"
  register: swap

- name: Put the analysis archive in its own bucket
  storeshift.objstore.objstore_config:
    path: /etc/anchore/config.yaml
    section: analysis_archive
    store:
      enabled: true
      compression: {enabled: false, min_size_kbytes: 100}
      storage_driver:
        name: s3
        config: {url: "https://s3.example.com", bucket: anchore-archive, access_key: AK, secret_key: SK}

- name: Switch StellaOps Scanner to RustFS (environment file)
  storeshift.objstore.objstore_config:
    path: /etc/stellaops/scanner.env
    app: stellaops
    section: artifact_store
    store:
      storage_driver:
        name: rustfs
        config:
          endpoint: http://stellaops-rustfs:8080
          bucket: scanner-artifacts
          timeout_seconds: 30
'''

RETURN = r'''
path:
  description: The file that was considered.
  returned: always
  type: str
  sample: /etc/anchore/config.yaml
section:
  description: The section that was set, as a dotted path in the file (or the environment key prefix).
  returned: always
  type: str
  sample: services.catalog.object_store
format:
  description: How the file was edited, C(yaml) or C(env).
  returned: always
  type: str
  sample: yaml
backup_file:
  description: Path of the backup copy of the original file.
  returned: when changed and O(backup=true) and not in check mode
  type: str
  sample: /etc/anchore/config.storeshift-20260102T030405.yaml
previous:
  description: What the section held before, secrets masked (null when it was missing).
  returned: always
  type: raw
  sample: {storage_driver: {name: db, config: {}}, compression: {enabled: false, min_size_kbytes: 100}}
store:
  description: What the section holds now (in the application's own shape), secrets masked.
  returned: always
  type: raw
  sample: {driver: rustfs, endpoint: "http://stellaops-rustfs:8080", bucket: scanner-artifacts, timeoutSeconds: 30}
up_to_date:
  description: Whether the section already held O(store) (nothing to write). Useful with check mode.
  returned: always
  type: bool
  sample: false
mode:
  description: The file's mode (octal string), unchanged by the module.
  returned: always
  type: str
  sample: '0600'
'''

import os
import stat

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.storeshift.objstore.plugins.module_utils import appconfig
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ObjstoreError


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            app=dict(type='str', choices=['anchore', 'stellaops'], default='anchore'),
            section=dict(type='str', choices=['object_store', 'analysis_archive', 'archive', 'artifact_store']),
            store=dict(type='dict', required=True),
            backup=dict(type='bool', default=True),
            state=dict(type='str', choices=['present'], default='present'),
        ),
        supports_check_mode=True,
    )
    path = module.params['path']
    app = module.params['app']
    store = module.params['store']
    secrets = [v for v in _secret_values(store) if v]
    module.no_log_values.update(secrets)
    try:
        result = appconfig.plan(path, app, module.params['section'], store)
    except ObjstoreError as exc:
        module.fail_json(msg=str(exc), path=path, **dict((k, v) for k, v in exc.to_dict().items() if k != 'msg'))

    mode = stat.S_IMODE(os.stat(path).st_mode)
    section = result['section']
    where = {'object_store': 'services.catalog.object_store',
             'analysis_archive': 'services.catalog.analysis_archive',
             'archive': 'services.catalog.archive'}.get(section)
    if where is None:
        where = appconfig.ENV_PREFIX + '*' if result['kind'] == 'env' else 'scanner.artifactStore'
    out = dict(changed=result['changed'], path=path, section=where, format=result['kind'],
               previous=appconfig.mask_data(result['old']), store=appconfig.mask_data(result['new']),
               mode='%04o' % mode, up_to_date=not result['changed'])
    if result['changed']:
        if module._diff:
            out['diff'] = dict(before=appconfig.mask_text(result['before']),
                               after=appconfig.mask_text(result['after']),
                               before_header='%s (%s)' % (path, where), after_header='%s (%s)' % (path, where))
        if secrets and mode & stat.S_IROTH:
            module.warn('%s is world-readable (mode %04o) and holds credentials; consider mode 0600 or 0640'
                        % (path, mode))
        if not module.check_mode:
            if module.params['backup']:
                try:
                    out['backup_file'] = appconfig.backup_file(path)
                except (IOError, OSError) as exc:
                    module.fail_json(msg='cannot back up %s: %s' % (path, exc.strerror or exc), **out)
            try:
                appconfig.write_text(path, result['after'])
            except (IOError, OSError) as exc:
                module.fail_json(msg='cannot write %s: %s' % (path, exc.strerror or exc), **out)
    module.exit_json(**out)


def _secret_values(data):
    if isinstance(data, dict):
        for key, value in data.items():
            if appconfig.is_secret_name(key) and isinstance(value, str):
                yield value
            else:
                yield from _secret_values(value)
    elif isinstance(data, list):
        for value in data:
            yield from _secret_values(value)


def main():
    run_module()


if __name__ == '__main__':
    main()
