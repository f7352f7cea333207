#!/usr/bin/env bash
# make demo: seed sample artefacts on the local stack, check four stores, migrate MinIO-style S3 to
# RustFS with progress lines, then verify by SHA-256. Run through ansible-playbook, as an operator would.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../.stack/env"
export ANSIBLE_STDOUT_CALLBACK=ansible.builtin.default ANSIBLE_CALLBACK_RESULT_FORMAT=yaml ANSIBLE_LOCALHOST_WARNING=false
export ANSIBLE_INVENTORY_UNPARSED_WARNING=false
cd "$here"
echo "== 1. seed sample scanner artefacts"
python seed.py
echo "== 2. objstore_check against db, s3, rustfs and localfs"
ansible-playbook check.yml
echo "== 3. migrate s3 -> rustfs (zstd), with progress polled from the ledger"
ansible-playbook storeshift.objstore.migrate_objects -e @.work/stores.yml \
  -e '{"migrate_source": "{{ demo_minio }}", "migrate_dest": "{{ demo_rustfs }}", "migrate_ledger": "{{ demo_ledger }}", "migrate_poll_seconds": 1}'
if [ -f verify.yml ]; then
  echo "== 4. verify destination = source by SHA-256"
  ansible-playbook verify.yml
fi
if [ -x cutover.sh ]; then
  echo "== 5. fleet cutover on a three-node local inventory"
  ./cutover.sh
fi
