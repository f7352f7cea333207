#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: objstore_migration_info
short_description: The history of migrations, and one migration's progress and failures
version_added: 0.1.0
description:
  - The collection's C(anchore-manager objectstorage list-migrations), as data.
  - Without O(migration_id), lists the migrations in the ledger, newest first.
  - With O(migration_id), returns that migration's combined progress over all its shards (counts, rate,
    ETA and a progress line), its state (a run whose process died shows as C(interrupted)) and its failed keys.
  - Safe to poll while M(storeshift.objstore.objstore_migrate) runs with C(async).
author:
  - Storeshift Maintainers (@storeshift)
options:
  ledger:
    description:
      - The ledger, as given to M(storeshift.objstore.objstore_migrate) (SQLite path or PostgreSQL DSN).
        Default C(~/.storeshift/ledger.sqlite).
    type: str
  migration_id:
    description: The migration to describe.
    type: str
  failures_limit:
    description: How many failed keys to return.
    type: int
    default: 20
  limit:
    description: How many migrations to list.
    type: int
    default: 100
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
'''

EXAMPLES = r'''
- name: List migrations
  storeshift.objstore.objstore_migration_info:
    ledger: /var/lib/storeshift/ledger.sqlite
  register: history

- name: Poll a running migration
  storeshift.objstore.objstore_migration_info:
    ledger: "{{ ledger }}"
    migration_id: "{{ migration_id }}"
  register: progress
  until: progress.migration.state != 'running'
  retries: 1000
  delay: 5
'''

RETURN = r'''
migrations:
  description: Migrations in the ledger, newest first (without failures).
  returned: when O(migration_id) is not given
  type: list
  elements: dict
migration:
  description:
    - One migration with C(state) (running, complete, failed, interrupted, partial), C(objects_total),
      C(objects_done), C(objects_copied), C(objects_skipped), C(objects_failed), C(bytes_copied),
      C(objects_per_s), C(eta_s), C(progress_line), C(shards) and C(failures).
  returned: when O(migration_id) is given and found
  type: dict
  sample:
    migration_id: 20261125T101500-1a2b3c4d
    state: running
    progress_line: copied 12,340 / 50,000 (24.7%), 310 obj/s, ETA 2m03s
exists:
  description: Whether O(migration_id) was found.
  returned: when O(migration_id) is given
  type: bool
'''

import os

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError
from ansible_collections.storeshift.objstore.plugins.module_utils.ledger import (
    Ledger,
    is_postgres_location,
    resolve_location,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.module_base import ObjstoreModule
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import dsn_password


def info(objmod):
    params = objmod.params
    location = resolve_location(params['ledger'])
    objmod.add_secrets([dsn_password(location)])
    if not is_postgres_location(location) and not os.path.isabs(location):
        raise ConfigError('ledger must be an absolute path or a postgresql:// DSN, got %s' % location, step='config')
    if not is_postgres_location(location) and not os.path.exists(location):
        if params['migration_id']:
            return dict(changed=False, exists=False, migration=None)
        return dict(changed=False, migrations=[])
    ledger = Ledger(location, create=False)
    try:
        if params['migration_id']:
            summary = ledger.summary(params['migration_id'], failures_limit=params['failures_limit'])
            return dict(changed=False, exists=summary is not None, migration=summary)
        migrations = [ledger.summary(mid, failures_limit=0) for mid in ledger.migration_ids(params['limit'])]
        return dict(changed=False, migrations=[m for m in migrations if m])
    finally:
        ledger.close()


def main():
    objmod = ObjstoreModule(
        argument_spec=dict(
            ledger=dict(type='str'),
            migration_id=dict(type='str'),
            failures_limit=dict(type='int', default=20),
            limit=dict(type='int', default=100),
        ),
        with_db=False,
        supports_check_mode=True,
    )
    objmod.run(info)


if __name__ == '__main__':
    main()
