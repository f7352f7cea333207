#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: objstore_verify
short_description: Prove that a destination object store holds what the source holds
version_added: 0.1.0
description:
  - Compares every selected object of O(dest) with O(source) and reports objects that are
    missing from the destination, that differ (size or SHA-256 of the logical content), that
    the destination has but the source does not (extra), and that could not be read.
  - Content is compared as logical bytes, so a zstd-compressed destination equals a plain or
    zlib-compressed source of the same content. SHA-256 is computed while reading; backend ETags
    are never trusted.
  - With O(layout=anchore) the Anchore C(archive_metadata) rows of the selected buckets are walked
    instead; each row must point at the destination, and the object behind it must read back with
    the recorded MD5 digest and size and the same content as the source (or the ledger).
  - With O(ledger) and O(migration_id) the source digests recorded by the migration are reused
    instead of reading the source again.
  - Memory stays bounded whatever the number of objects (streaming merge of sorted listings,
    bounded sampling, chunked reads).
  - The module never changes anything (C(changed) is always false). In check mode the
    verification runs in full, but O(report_path) is not written.
author:
  - Storeshift Maintainers (@storeshift)
options:
  layout:
    description:
      - C(objects) compares keys one to one; C(anchore) walks Anchore's C(archive_metadata) (needs O(db_connect)).
    type: str
    choices: [objects, anchore]
    default: objects
  buckets:
    description:
      - With O(layout=anchore), only rows of these Anchore buckets (for example C(analysis_data), C(manifest_data)).
    type: list
    elements: str
  prefix:
    description:
      - Only keys starting with one of these prefixes.
    type: list
    elements: str
  include:
    description:
      - Only keys matching one of these glob patterns (C(fnmatch), C(*) matches C(/) too).
    type: list
    elements: str
  exclude:
    description:
      - Skip keys matching one of these glob patterns.
    type: list
    elements: str
  mode:
    description:
      - C(exists) checks presence only, C(size) compares logical sizes (reading compressed objects),
        C(sha256) reads both sides and compares the SHA-256 of their logical content.
    type: str
    choices: [exists, size, sha256]
    default: sha256
  sample:
    description:
      - Check only a deterministic sample of the selected objects, either a count (C("100")) or a
        percentage (C("10%")). Extra objects are not looked for when sampling.
    type: str
  seed:
    description:
      - Seed of the sample. The same seed picks the same keys; another seed picks others.
    type: int
    default: 0
  keys:
    description:
      - Check just these keys (for O(layout=anchore), C(userId/bucket/archiveId)). Extra objects are
        not looked for. O(prefix), O(include) and O(exclude) do not apply to them.
    type: list
    elements: str
  ledger:
    description:
      - The migration ledger (an absolute SQLite path or a C(postgresql://) DSN) whose recorded source
        digests are reused. Needs O(migration_id).
    type: str
  migration_id:
    description:
      - The migration in O(ledger) whose digests are reused. Needs O(ledger).
    type: str
  report_path:
    description:
      - Write the full report as JSON to this absolute path on the target (counts exact, key lists
        capped at 100, no secrets). Not written in check mode.
    type: path
  fail_on_mismatch:
    description:
      - Fail when anything is missing, different, extra or unreadable. When false, the module
        succeeds and returns the report with RV(ok=false).
    type: bool
    default: true
  workers:
    description:
      - Number of objects read in parallel.
    type: int
    default: 8
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - storeshift.objstore.store
  - storeshift.objstore.store.source_dest
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
'''

EXAMPLES = r'''
- name: Prove that the new S3 bucket holds everything the old one holds
  storeshift.objstore.objstore_verify:
    source:
      storage_driver:
        name: s3
        config: {url: "http://old-minio:9000", bucket: artefacts, access_key: "{{ old_ak }}", secret_key: "{{ old_sk }}"}
    dest:
      storage_driver:
        name: rustfs
        config: {endpoint: "https://rustfs.example.com:8080", bucket: artefacts, api_key: "{{ rustfs_api_key }}"}
      compression: {enabled: true, min_size_kbytes: 0}
    report_path: /var/log/storeshift/verify-artefacts.json

- name: Quick check of 1% of the objects, reusing the migration's digests
  storeshift.objstore.objstore_verify:
    source: {config_file: /etc/anchore/config.yaml, section: object_store}
    dest: {config_file: /etc/anchore/config-new.yaml, section: object_store}
    db_connect: "postgresql://anchore:{{ db_password }}@db:5432/anchore"
    ledger: /var/lib/storeshift/ledger.sqlite
    migration_id: "{{ migration.migration_id }}"
    sample: "1%"
    seed: 42

- name: Check that every Anchore document was repointed and reads back with its digest
  storeshift.objstore.objstore_verify:
    layout: anchore
    buckets: [analysis_data, manifest_data]
    source: {storage_driver: {name: db2}}
    dest: {storage_driver: {name: s3, config: {bucket: anchore, region: eu-west-1, iamauto: true}}}
    db_connect: "postgresql://anchore:{{ db_password }}@db:5432/anchore"
    fail_on_mismatch: false
  register: verified

- name: Show the outcome
  ansible.builtin.debug:
    msg: "{{ verified.summary }}"
'''

RETURN = r'''
ok:
  description: True when nothing is missing, different, extra or unreadable.
  returned: always
  type: bool
  sample: false
summary:
  description: One line with the counts.
  returned: always
  type: str
  sample: "verified 10,000 objects: 9,998 matched, 1 missing, 1 mismatched, 0 extra"
checked:
  description: Objects checked (matched + missing + mismatched + errors).
  returned: always
  type: int
  sample: 10000
matched:
  description: Objects equal on both sides.
  returned: always
  type: int
  sample: 9998
missing:
  description: Objects missing from the destination.
  returned: always
  type: int
  sample: 1
mismatched:
  description: Objects that differ (size, SHA-256, Anchore pointer or recorded digest).
  returned: always
  type: int
  sample: 1
extra:
  description: Objects in the destination that the source (or the ledger) does not have.
  returned: always
  type: int
  sample: 0
errors:
  description: Objects that could not be read (counted apart from mismatches).
  returned: always
  type: int
  sample: 0
missing_keys:
  description: The first 100 missing keys.
  returned: always
  type: list
  elements: str
  sample: [admin/analysis_data/sha256:0a1b]
mismatched_keys:
  description: The first 100 mismatched keys with the reason (C(size), C(sha256), C(anchore pointer), C(digest)).
  returned: always
  type: list
  elements: dict
  sample: [{key: admin/manifest_data/sha256:9f8e, reason: sha256, detail: "dest sha256 3b1f..., source 77aa..."}]
extra_keys:
  description: The first 100 extra keys.
  returned: always
  type: list
  elements: str
  sample: []
error_keys:
  description: The first 100 unreadable keys with the error.
  returned: always
  type: list
  elements: dict
  sample: []
mismatch_reasons:
  description: Number of mismatches per reason.
  returned: always
  type: dict
  sample: {sha256: 1}
extra_checked:
  description: Whether extra objects were looked for (not when O(keys) or O(sample) is given, nor for O(layout=anchore)).
  returned: always
  type: bool
  sample: true
ledger_digests_used:
  description: Objects compared against the ledger's recorded digest instead of reading the source.
  returned: always
  type: int
  sample: 0
strategy:
  description: How keys were paired (C(merge) of sorted listings, C(lookup) per key, C(anchore)).
  returned: always
  type: str
  sample: merge
sample_population:
  description: With a count O(sample), how many objects the sample was drawn from.
  returned: when a count sample was asked
  type: int
  sample: 10000
report_path:
  description: Where the JSON report was written (null when not asked, or in check mode).
  returned: always
  type: str
  sample: /var/log/storeshift/verify.json
source:
  description: The source store, without secrets.
  returned: always
  type: str
  sample: s3 http://127.0.0.1:8333 bucket old
dest:
  description: The destination store, without secrets.
  returned: always
  type: str
  sample: rustfs http://127.0.0.1:8080 bucket new
duration_s:
  description: Run time in seconds.
  returned: always
  type: float
  sample: 12.5
'''

import os

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError
from ansible_collections.storeshift.objstore.plugins.module_utils.module_base import (
    ObjstoreModule,
    store_argument,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import dsn_password
from ansible_collections.storeshift.objstore.plugins.module_utils.verify import Verifier, VerifyOptions


def verify(objmod):
    params = objmod.params
    if params['workers'] < 1:
        raise ConfigError('workers must be at least 1, got %d' % params['workers'], step='config')
    if params['report_path'] and not os.path.isabs(params['report_path']):
        raise ConfigError('report_path must be an absolute path, got %s' % params['report_path'], step='config')
    if params['migration_id'] and not params['ledger']:
        raise ConfigError('migration_id needs ledger (the ledger the migration was recorded in)', step='config')
    if params['ledger'] and not params['migration_id']:
        raise ConfigError('ledger needs migration_id (which migration\'s digests to reuse)', step='config')
    if params['ledger']:
        objmod.add_secrets([dsn_password(params['ledger'])])
    source = objmod.store_spec('source')
    dest = objmod.store_spec('dest')
    report_path = params['report_path'] if not objmod.check_mode else None
    options = VerifyOptions(layout=params['layout'], buckets=params['buckets'], prefix=params['prefix'],
                            include=params['include'], exclude=params['exclude'], mode=params['mode'],
                            sample=params['sample'], seed=params['seed'], keys=params['keys'],
                            workers=params['workers'], fail_on_mismatch=params['fail_on_mismatch'],
                            report_path=report_path)
    result = Verifier(source, dest, options, db_connect=objmod.db_connect, ledger_location=params['ledger'],
                      migration_id=params['migration_id'],
                      secrets=[dsn_password(objmod.db_connect), dsn_password(params['ledger']),
                               os.environ.get('PGPASSWORD')]).run()
    result['changed'] = False
    if not result['ok'] and params['fail_on_mismatch']:
        objmod.module.fail_json(**objmod.scrub(dict(result, msg=result['summary'])))
    return result


def main():
    objmod = ObjstoreModule(
        argument_spec=dict(
            source=store_argument(required=True),
            dest=store_argument(required=True),
            layout=dict(type='str', default='objects', choices=['objects', 'anchore']),
            buckets=dict(type='list', elements='str'),
            prefix=dict(type='list', elements='str'),
            include=dict(type='list', elements='str'),
            exclude=dict(type='list', elements='str'),
            mode=dict(type='str', default='sha256', choices=['exists', 'size', 'sha256']),
            sample=dict(type='str'),
            seed=dict(type='int', default=0),
            keys=dict(type='list', elements='str', no_log=False),
            ledger=dict(type='str'),
            migration_id=dict(type='str'),
            report_path=dict(type='path'),
            fail_on_mismatch=dict(type='bool', default=True),
            workers=dict(type='int', default=8),
        ),
        supports_check_mode=True,
    )
    objmod.run(verify)


if __name__ == '__main__':
    main()
