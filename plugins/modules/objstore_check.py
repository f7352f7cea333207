#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: objstore_check
short_description: Check that an object store works, end to end
version_added: 0.1.0
description:
  - The collection's C(anchore-manager objectstorage check). Connects to the store,
    writes a probe object under a reserved key, reads it back and compares its SHA-256,
    deletes it and confirms that it is gone.
  - Returns every step with its timing. A failure names the step and the cause in plain
    words (connection refused, DNS, TLS, bad credentials, permission denied, missing bucket,
    missing API key, ...).
  - In check mode only the connection and bucket are checked; nothing is written.
author:
  - Storeshift Maintainers (@storeshift)
options:
  create_bucket:
    description:
      - Create the bucket (or directory) when it is missing, instead of failing.
    type: bool
    default: false
  probe_size:
    description:
      - Size in bytes of the probe object.
    type: int
    default: 1024
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - storeshift.objstore.store
  - storeshift.objstore.store.single
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
'''

EXAMPLES = r'''
- name: Check the destination S3 store before a migration
  storeshift.objstore.objstore_check:
    store:
      storage_driver:
        name: s3
        config:
          url: http://minio.example.com:9000
          bucket: anchorearchive
          access_key: "{{ s3_access_key }}"
          secret_key: "{{ s3_secret_key }}"

- name: Check the object store named in an Anchore config file
  storeshift.objstore.objstore_check:
    store:
      config_file: /etc/anchore/dest-config.yaml
      section: object_store
    db_connect: "postgresql://anchore:{{ db_password }}@db.example.com:5432/anchore"

- name: Check the RustFS store of a StellaOps Scanner host
  storeshift.objstore.objstore_check:
    store:
      config_file: /etc/stellaops/scanner.yaml
      section: artifact_store
'''

RETURN = r'''
store:
  description: The store checked, without secrets.
  returned: always
  type: str
  sample: s3 http://127.0.0.1:8333 bucket anchorearchive
driver:
  description: The driver name.
  returned: always
  type: str
  sample: s3
probe_key:
  description: The reserved key the probe object was written under.
  returned: always
  type: str
  sample: storeshift-probe/objstore_check/node1-5b0c...
steps:
  description: Each step, in order, with its outcome and duration.
  returned: always
  type: list
  elements: dict
  sample:
    - {step: connect, ok: true, seconds: 0.004}
    - {step: write, ok: true, seconds: 0.010}
    - {step: read, ok: true, seconds: 0.003}
    - {step: delete, ok: true, seconds: 0.002}
    - {step: confirm_deleted, ok: true, seconds: 0.002}
step:
  description: On failure, the step that failed.
  returned: failure
  type: str
  sample: connect
cause:
  description: On failure, the cause in plain words.
  returned: failure
  type: str
  sample: bad credentials
'''

from ansible_collections.storeshift.objstore.plugins.module_utils.module_base import (
    ObjstoreModule,
    store_argument,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.probe import run_probe


def check(objmod):
    spec = objmod.store_spec('store')
    outcome = run_probe(spec, db_connect=objmod.db_connect, create_bucket=objmod.params['create_bucket'],
                        write=not objmod.check_mode, probe_size=objmod.params['probe_size'])
    result = dict(changed=False, store=spec.describe(), driver=spec.driver,
                  probe_key=outcome['probe_key'], steps=outcome['steps'])
    if outcome['error'] is not None:
        error = outcome['error']
        objmod.module.fail_json(**objmod.scrub(dict(
            result, msg='%s check failed at step %s: %s' % (spec.describe(), error.step, error.message),
            step=error.step, cause=error.cause)))
    return result


def main():
    objmod = ObjstoreModule(
        argument_spec=dict(
            store=store_argument(required=True),
            create_bucket=dict(type='bool', default=False),
            probe_size=dict(type='int', default=1024),
        ),
        supports_check_mode=True,
    )
    objmod.run(check)


if __name__ == '__main__':
    main()
