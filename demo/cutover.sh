#!/usr/bin/env bash
# make demo, part 2: the full fleet cutover (StellaOps, S3 -> RustFS) on a three-node local inventory.
# It reuses the fleet fixture of the Molecule scenarios: three nodes on this machine, each with its own
# root, config file and supervisord running the sample artefact service; then runs the collection's
# cutover playbook and its verification, and tears the fleet down.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
export MOLECULE_PROJECT_DIRECTORY="$repo"
export MOLECULE_EPHEMERAL_DIRECTORY="$here/.work/fleet-ephemeral"
mkdir -p "$MOLECULE_EPHEMERAL_DIRECTORY"
set -a; source "$repo/.stack/env"; set +a
inv=(-i "$repo/extensions/molecule/shared/inventory" -i "$repo/extensions/molecule/s3_to_rustfs/inventory")
cd "$repo"
trap 'ansible-playbook "${inv[@]}" extensions/molecule/shared/destroy.yml >/dev/null 2>&1 || true' EXIT
echo "-- set up three nodes (supervisord + sample artefact service on S3)"
ansible-playbook "${inv[@]}" extensions/molecule/shared/create.yml | grep -E '^(PLAY RECAP|node|localhost)' || true
echo "-- cutover: preflight, stop, migrate (progress), verify, swap, start, smoke, summary"
ansible-playbook "${inv[@]}" storeshift.objstore.migrate -e cutover_verify_report="$MOLECULE_EPHEMERAL_DIRECTORY/verify-report.json"
echo "-- every node serves every artefact from RustFS"
ansible-playbook "${inv[@]}" extensions/molecule/shared/verify_cutover.yml | grep -E 'msg|RECAP|ok=' || true
report="$MOLECULE_EPHEMERAL_DIRECTORY/verify-report.json"
if [ -f "$report" ]; then
  echo "-- verify report ($report)"
  python -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r.get("summary")); print(json.dumps({k: r.get(k) for k in ("checked","matched","missing","mismatched","extra","ok")}, indent=2))' "$report"
fi
