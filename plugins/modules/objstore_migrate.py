#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: objstore_migrate
short_description: Copy every object from one store to another, resumable and verified
version_added: 0.1.0
description:
  - The collection's C(anchore-manager objectstorage migrate) and StellaOps RustFS migrator, done safely.
  - Streams every selected object from O(source) to O(dest) with O(workers) concurrent copies, computes
    the SHA-256 of each object's logical (uncompressed) content in flight, reads the destination back and
    compares before counting an object as copied, and records every object in a ledger so that a run killed
    at any moment resumes without loss and without copying done objects again.
  - O(layout=objects) copies keys under a store, preserving key structure. O(layout=anchore) walks
    Anchore's C(archive_metadata) table, copies each document and rewrites its C(content_url),
    C(is_compressed), C(digest) and C(size) the way Anchore's own object-store manager writes them.
  - An object that fails (after retries with exponential backoff and jitter on timeouts, resets, 5xx and
    SlowDown) does not stop the run, but the run ends C(failed), never C(complete), and the module fails
    with the counts and the first 20 failures.
  - Check mode is the dry run; it enumerates and estimates and writes nothing anywhere (neither the
    destination nor the ledger).
  - Progress is written to the ledger at least every second; run this module with C(async) and poll
    M(storeshift.objstore.objstore_migration_info) to print progress lines (see C(playbooks/migrate_objects.yml)).
author:
  - Storeshift Maintainers (@storeshift)
options:
  layout:
    description:
      - V(objects) copies keys; V(anchore) migrates Anchore documents through C(archive_metadata) (needs O(db_connect)).
    type: str
    choices: [objects, anchore]
    default: objects
  buckets:
    description:
      - O(layout=anchore) only. Anchore logical buckets to migrate (for example C(analysis_archive)).
        Defaults to all, or to C(analysis_archive) with O(from_analysis_archive) or O(to_analysis_archive).
    type: list
    elements: str
  prefix:
    description: Key prefixes to migrate (one or many); default the whole store.
    type: list
    elements: str
  include:
    description: Glob patterns (C(fnmatch)); when given, only matching keys are migrated.
    type: list
    elements: str
  exclude:
    description: Glob patterns of keys to leave out.
    type: list
    elements: str
  overwrite:
    description:
      - What to do when the destination already has a key. V(never) keeps it, V(if_different) compares
        the logical SHA-256 of both sides and copies only when they differ, V(always) copies.
    type: str
    choices: [never, if_different, always]
    default: if_different
  delete_source:
    description:
      - Delete each source object after its destination copy was read back and matched and, for
        O(layout=anchore), its row repointed. Off by default; prefer the cleanup role after a validation window.
    type: bool
    default: false
  immutable:
    description:
      - Mark migrated objects immutable (RustFS C(X-RustFS-Immutable); S3 Object Lock in COMPLIANCE mode
        where the bucket has Object Lock enabled). Refused when the destination cannot keep it.
    type: bool
    default: false
  retain_days:
    description:
      - Retention in days (RustFS C(X-RustFS-Retain-Seconds); S3 Object Lock retain-until date).
    type: int
  workers:
    description: Concurrent copies.
    type: int
    default: 16
  max_objects_per_second:
    description: Upper bound on objects started per second over the whole run.
    type: float
  max_bytes_per_second:
    description: Upper bound on bytes read per second over the whole run.
    type: int
  ledger:
    description:
      - Where the ledger lives. An absolute SQLite file path, or a PostgreSQL DSN or C(postgresql://) URL
        to share one migration between hosts (sharding). Default C(~/.storeshift/ledger.sqlite) on the target.
    type: str
  migration_id:
    description:
      - Identifier of the migration. A new one is generated when omitted. Running again with the same
        identifier resumes it.
    type: str
  resume:
    description:
      - Resume the migration named by O(migration_id), or the latest one from the same source to the same
        destination in the ledger.
    type: bool
    default: false
  shard:
    description:
      - Take one share of a migration split over several hosts by a hash of the key (all shards must use
        the same O(migration_id) and a shared PostgreSQL O(ledger)).
    type: dict
    suboptions:
      index:
        description: This host's share, from 0 to O(shard.count) - 1.
        type: int
        required: true
      count:
        description: Number of shares.
        type: int
        required: true
  from_analysis_archive:
    description:
      - Read the source spec from the C(analysis_archive) section of O(source.config_file)
        (Anchore's C(--from-analysis-archive)).
    type: bool
    default: false
  to_analysis_archive:
    description:
      - Read the destination spec from the C(analysis_archive) section of O(dest.config_file)
        (Anchore's C(--to-analysis-archive)).
    type: bool
    default: false
  verify_writes:
    description:
      - Prove every write before counting the object copied, as O(verify_method) says. The SHA-256 of
        every object copied is computed on the way and recorded in the ledger either way.
        Always on when O(delete_source=true).
    type: bool
    default: true
  verify_method:
    description:
      - How a write is proven when O(verify_writes=true).
      - V(auto) lets an S3 destination prove the write. A PUT sent from memory (up to
        C(multipart_threshold_mb)) and every part of a multipart upload carry the SHA-256 of their bytes
        in C(x-amz-checksum-sha256); the server hashes what it stores, refuses a mismatch and confirms
        the digest, and the object counts as copied when the confirmed digest is the one of the bytes
        read from the source. A streamed PUT of an object whose source ETag is a plain MD5 counts as
        copied when the server's ETag of the write (its MD5 of what it stored) is that MD5; a write with
        another ETag is deleted again and the object copied again with the SHA-256 as an aws-chunked
        trailer, which other streamed PUTs carry too. This is used only where the server is seen refusing
        a wrong SHA-256 (one probe PUT per run, which such a server does not store) and the destination
        is not compressed; everywhere else, for the C(anchore) layout, and for any write the server did
        not prove, V(auto) reads back.
      - V(readback) reads every destination object back and compares the SHA-256 of its content.
      - O(delete_source=true) always reads back. Default V(auto).
      - Setting it together with O(verify_writes=false) is an error.
    type: str
    choices: [auto, readback]
    version_added: 0.1.0
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - storeshift.objstore.store
  - storeshift.objstore.store.source_dest
attributes:
  check_mode:
    support: full
    details: Check mode is the dry run; nothing is written to the destination or the ledger.
  diff_mode:
    support: none
  platform:
    platforms: posix
'''

EXAMPLES = r'''
- name: Migrate Anchore's object store from the database to S3 (the anchore-manager flow)
  storeshift.objstore.objstore_migrate:
    layout: anchore
    db_connect: "postgresql://anchore:{{ db_password }}@db.example.com:5432/anchore"
    source:
      config_file: /config/config.yaml
    dest:
      config_file: /config/dest-config.yaml

- name: Move the analysis archive to its own S3 bucket (single backend to split)
  storeshift.objstore.objstore_migrate:
    layout: anchore
    db_connect: "{{ anchore_db_connect }}"
    source:
      config_file: /config/source-config.yaml
    dest:
      config_file: /config/dest-config.yaml
    to_analysis_archive: true
    buckets: [analysis_archive]

- name: StellaOps scanner artefacts, MinIO to RustFS, immutable for a year
  storeshift.objstore.objstore_migrate:
    source:
      storage_driver:
        name: s3
        config:
          url: http://stellaops-minio:9000
          bucket: scanner-artifacts
          access_key: stellaops
          secret_key: "{{ minio_secret }}"
    dest:
      storage_driver:
        name: rustfs
        config:
          endpoint: http://stellaops-rustfs:8080
          bucket: scanner-artifacts
          api_key: "{{ rustfs_api_key }}"
    prefix: [scanner/]
    immutable: true
    retain_days: 365
  async: 86400
  poll: 0
  register: migration_job

- name: Dry run
  storeshift.objstore.objstore_migrate:
    source: "{{ old_store }}"
    dest: "{{ new_store }}"
  check_mode: true
  register: plan
'''

RETURN = r'''
migration_id:
  description: Identifier of the migration in the ledger.
  returned: success and failure, not in check mode
  type: str
  sample: 20261125T101500-1a2b3c4d
state:
  description: C(complete), or C(failed) when any object failed.
  returned: success and failure, not in check mode
  type: str
  sample: complete
objects_total:
  description: Objects selected (this shard, all attempts).
  returned: always
  type: int
objects_copied:
  description: Objects copied and verified (all attempts of this migration).
  returned: not in check mode
  type: int
objects_skipped:
  description: Objects already equal in the destination.
  returned: not in check mode
  type: int
objects_failed:
  description: Objects that failed.
  returned: not in check mode
  type: int
objects_deleted:
  description: Source objects deleted after verification (O(delete_source)).
  returned: not in check mode
  type: int
copied_this_run:
  description: Objects copied by this invocation (0 means nothing changed).
  returned: not in check mode
  type: int
bytes_copied:
  description: Logical bytes copied.
  returned: not in check mode
  type: int
duration_s:
  description: Seconds from the first start of the migration to the end of this run.
  returned: not in check mode
  type: float
objects_per_s:
  description: Objects per second.
  returned: not in check mode
  type: float
write_verification:
  description:
    - How writes were proven in this run. C(server-checksum) (the destination checked what it stored against
      the SHA-256 sent with it, or for a streamed copy against the MD5 the source recorded, its ETag),
      C(readback) (read back and hashed), or C(none) (O(verify_writes=false)). Either way the ledger records
      the SHA-256 of the bytes copied.
  returned: success and failure, not in check mode
  type: str
  sample: server-checksum
  version_added: 0.1.0
retries:
  description: Requests retried after transient errors.
  returned: not in check mode
  type: int
failures:
  description: The first 20 failed keys with their errors.
  returned: not in check mode
  type: list
  elements: dict
progress_line:
  description: One line of progress, as printed by the playbooks.
  returned: not in check mode
  type: str
  sample: copied 50,000 / 50,000 (100.0%), 812 obj/s, complete
objects_to_copy:
  description: Check mode; objects that would be copied.
  returned: check mode
  type: int
objects_to_skip:
  description: Check mode; objects that would be skipped.
  returned: check mode
  type: int
bytes_total:
  description: Bytes of the selected objects as listed.
  returned: always
  type: int
eta_s:
  description: Check mode; estimated seconds for the copy, from a short measured sample.
  returned: check mode
  type: float
'''

from ansible_collections.storeshift.objstore.plugins.module_utils.engine import MigrationOptions, Migrator
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError
from ansible_collections.storeshift.objstore.plugins.module_utils.module_base import (
    ObjstoreModule,
    store_argument,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import dsn_password

_RESULT_KEYS = ('migration_id', 'objects_total', 'objects_copied', 'objects_skipped', 'objects_failed',
                'objects_deleted', 'bytes_total', 'bytes_copied', 'duration_s', 'objects_per_s', 'retries',
                'failures', 'progress_line', 'shards')


def build(objmod):
    params = objmod.params
    layout = params['layout']
    if (params['from_analysis_archive'] or params['to_analysis_archive']) and layout != 'anchore':
        raise ConfigError('from_analysis_archive and to_analysis_archive apply to layout anchore only',
                          step='config')
    for flag, name in (('from_analysis_archive', 'source'), ('to_analysis_archive', 'dest')):
        if params[flag] and not (params.get(name) or {}).get('config_file'):
            raise ConfigError('%s needs %s.config_file (the section analysis_archive is read from it)'
                              % (flag, name), step='config')
    if params['buckets'] is not None and layout != 'anchore':
        raise ConfigError('buckets applies to layout anchore (Anchore logical buckets); use prefix for objects',
                          step='config')
    source = objmod.store_spec('source', 'analysis_archive' if params['from_analysis_archive'] else None)
    dest = objmod.store_spec('dest', 'analysis_archive' if params['to_analysis_archive'] else None)
    buckets = params['buckets']
    if buckets is None and (params['from_analysis_archive'] or params['to_analysis_archive']):
        buckets = ['analysis_archive']
    shard = params['shard'] or {'index': 0, 'count': 1}
    ledger = params['ledger']
    if params['resume'] and not ledger and not params['migration_id'] and params['shard']:
        raise ConfigError('resume of a sharded migration needs migration_id', step='config')
    if shard['count'] > 1 and not params['migration_id']:
        raise ConfigError('shard needs migration_id (every shard must name the same migration)', step='config')
    if params['verify_method'] is not None and not params['verify_writes']:
        raise ConfigError('verify_method applies only when verify_writes is true', step='config')
    options = MigrationOptions(
        layout=layout, buckets=buckets, prefixes=params['prefix'], include=params['include'],
        exclude=params['exclude'], overwrite=params['overwrite'], delete_source=params['delete_source'],
        immutable=params['immutable'], retain_days=params['retain_days'], workers=params['workers'],
        max_objects_per_second=params['max_objects_per_second'],
        max_bytes_per_second=params['max_bytes_per_second'], shard_index=shard['index'],
        shard_count=shard['count'], verify_writes=params['verify_writes'] or params['delete_source'],
        verify_method=params['verify_method'] or 'auto')
    if ledger:
        objmod.add_secrets([dsn_password(ledger)])
    return Migrator(source, dest, options, ledger_location=ledger, db_connect=objmod.db_connect,
                    migration_id=params['migration_id'], resume=params['resume'], secrets=objmod.secrets)


def migrate(objmod):
    migrator = build(objmod)
    if objmod.check_mode:
        plan = migrator.dry_run()
        plan['changed'] = plan['objects_to_copy'] > 0
        return plan
    summary = migrator.run()
    result = dict((key, summary.get(key)) for key in _RESULT_KEYS)
    result.update(state=summary['run_state'], copied_this_run=summary['copied_this_run'],
                  write_verification=summary['write_verification'],
                  run_duration_s=summary['run_duration_s'],
                  changed=bool(summary['copied_this_run'] or summary['objects_deleted']))
    if summary['run_state'] != 'complete':
        objmod.module.fail_json(**objmod.scrub(dict(
            result, msg='migration %s failed: %d of %d objects failed (%d copied, %d skipped)%s'
                        % (summary['migration_id'], summary['objects_failed'], summary['objects_total'],
                           summary['objects_copied'], summary['objects_skipped'],
                           '; %s' % summary['run_message'] if summary.get('run_message') else ''))))
    return result


def main():
    objmod = ObjstoreModule(
        argument_spec=dict(
            source=store_argument(required=True),
            dest=store_argument(required=True),
            layout=dict(type='str', choices=['objects', 'anchore'], default='objects'),
            buckets=dict(type='list', elements='str'),
            prefix=dict(type='list', elements='str'),
            include=dict(type='list', elements='str'),
            exclude=dict(type='list', elements='str'),
            overwrite=dict(type='str', choices=['never', 'if_different', 'always'], default='if_different'),
            delete_source=dict(type='bool', default=False),
            immutable=dict(type='bool', default=False),
            retain_days=dict(type='int'),
            workers=dict(type='int', default=16),
            max_objects_per_second=dict(type='float'),
            max_bytes_per_second=dict(type='int'),
            ledger=dict(type='str'),
            migration_id=dict(type='str'),
            resume=dict(type='bool', default=False),
            shard=dict(type='dict', options=dict(index=dict(type='int', required=True),
                                                 count=dict(type='int', required=True))),
            from_analysis_archive=dict(type='bool', default=False),
            to_analysis_archive=dict(type='bool', default=False),
            verify_writes=dict(type='bool', default=True),
            verify_method=dict(type='str', choices=['auto', 'readback']),
        ),
        supports_check_mode=True,
    )
    objmod.run(migrate)


if __name__ == '__main__':
    main()
