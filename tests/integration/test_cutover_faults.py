# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cutover faults: a node becomes unreachable at each stage of the cutover.

Three nodes on this machine, each reached over SSH through its own private sshd on 127.0.0.1
(sshnodes.py), each with its own config file, supervisord and sample artefact service
(StellaOps layout, S3 -> RustFS, like the molecule scenarios). The fault is a real network-level
failure: node2's sshd is stopped and its connections cut, while node2's application keeps running
(a partition, not a crash). It is injected at an exact task by a test-only callback
(fault_callback/node_fault.py), before that task reaches any host:

    before_stop    the last check of the preflight, before any service is stopped
    after_migrate  the migration is done, verify starts
    during_swap    node2's backup and state file are written, its config is not; the others swap
    after_start    every node started on the new store, the smoke test starts

Then node2 either answers again while the rescue waits for it (its sshd comes back a few seconds
into the wait), or stays down past cutover_reconnect_timeout; then it is brought back and the
rollback command printed in the failure summary is run, twice (the second run changes nothing).

After every case: the play failed, every node's config is byte-identical to its pre-cutover
content, every node's service is running and serves every artefact from the old store (S3) with
its original SHA-256, no reachable node reports ROLLBACK FAILED, and the source bucket holds every
object with its original digest.
"""

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid

import pytest
import requests

from helpers import logical_digests
from ports import free_port
from sshnodes import SshNodes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(REPO, '.venv', 'bin')
FIXTURE = os.path.join(REPO, 'extensions', 'molecule', 'shared', 'fixture.py')
NODES = ('node1', 'node2', 'node3')
VICTIM = 'node2'
COUNT = 10

# The task at whose start node2 becomes unreachable (names as the cutover role spells them).
STAGES = {
    'before_stop': 'Preflight | make the state directory',
    'after_migrate': 'Verify | compare the destination with the source',
    'during_swap': 'Swap | point the config at the destination store',
    'after_start': 'Smoke | fetch the smoke-test URLs',
}
WAIT_TASK = 'Rescue | wait for the nodes that dropped out to answer again'
CASES = [
    ('before_stop', 'stays_down'),
    ('after_migrate', 'returns'),
    ('during_swap', 'returns'),
    ('after_start', 'stays_down'),
]

CONFIG = """\
# StellaOps Scanner WebService ({node}), written by test_cutover_faults.py
ASPNETCORE_URLS=http://+:8444
SCANNER__QUEUE__KIND=redis
SCANNER__ARTIFACTSTORE__DRIVER=s3
SCANNER__ARTIFACTSTORE__ENDPOINT={url}
SCANNER__ARTIFACTSTORE__BUCKET={bucket}
SCANNER__ARTIFACTSTORE__REGION={region}
SCANNER__ARTIFACTSTORE__ACCESSKEY={access_key}
SCANNER__ARTIFACTSTORE__SECRETKEY={secret_key}
SCANNER__TELEMETRY__ENABLED=false
"""

SUPERVISORD = """\
[unix_http_server]
file={root}/supervisor.sock
chmod=0700

[supervisord]
logfile={root}/supervisord.log
pidfile={root}/supervisord.pid
directory={root}
identifier={node}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{root}/supervisor.sock

[program:artefact]
command={python} {repo}/tests/sample_service/artefact_service.py --config {config} --port {port} --app stellaops
environment=PYTHONPATH="{collections}"
autostart=true
autorestart=false
startsecs=1
startretries=0
stopwaitsecs=10
stdout_logfile={root}/artefact.log
redirect_stderr=true
"""


@pytest.fixture(scope='module')
def ssh_nodes(tmp_path_factory):
    """node1..node3 reachable over SSH on 127.0.0.1 (installs openssh-server when missing, as root)."""
    if os.geteuid() != 0:
        pytest.fail('the cutover fault tests run one sshd per node and log in as root: run them as root', pytrace=False)
    nodes = SshNodes(str(tmp_path_factory.mktemp('sshd'))).setup(NODES)
    try:
        for node in NODES:
            nodes.start(node)
        yield nodes
    finally:
        nodes.stop_all()


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _wait_health(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200:
                return response.json()
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError('%s did not answer within %ds' % (url, timeout))


class Fleet(object):
    """Three nodes (config, supervisord, artefact service) and the inventory that reaches them over SSH."""

    def __init__(self, root, ssh, stack_env, source, dest, reconnect_timeout):
        self.root = root
        self.ssh = ssh
        self.env = stack_env
        self.source = source
        self.dest = dest
        self.ports = dict((node, free_port()) for node in NODES)
        self.migration_id = 'cutover-fault-%s' % uuid.uuid4().hex[:8]
        self.reconnect_timeout = reconnect_timeout
        self.inventory = os.path.join(root, 'inventory.yml')
        self.manifest = {}

    def node_root(self, node):
        return os.path.join(self.root, node)

    def config_path(self, node):
        return os.path.join(self.node_root(node), 'scanner.env')

    def health_url(self, node):
        return 'http://127.0.0.1:%d/health' % self.ports[node]

    def artefact_url(self, node, digest):
        return 'http://127.0.0.1:%d/api/v1/scanner/sboms/%s' % (self.ports[node], digest)

    def supervisor(self, node, *args):
        return subprocess.run([os.path.join(BIN, 'supervisorctl'), '-c', os.path.join(self.node_root(node), 'supervisord.conf')]
                              + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              timeout=60, check=False)

    def create(self):
        config = self.source['storage_driver']['config']
        for node in NODES:
            root = self.node_root(node)
            os.makedirs(root, 0o700)
            with open(self.config_path(node), 'w') as handle:
                handle.write(CONFIG.format(node=node, **config))
            os.chmod(self.config_path(node), 0o600)
            with open(os.path.join(root, 'supervisord.conf'), 'w') as handle:
                handle.write(SUPERVISORD.format(root=root, node=node, python=sys.executable, repo=REPO, config=self.config_path(node),
                                                port=self.ports[node], collections=os.path.join(REPO, '.build', 'collections')))
        seeded = subprocess.run([sys.executable, FIXTURE, 'seed', '--config', self.config_path('node1'), '--section',
                                 'artifact_store', '--count', str(COUNT), '--layout', 'objects'], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120, check=True)
        self.manifest = json.loads(seeded.stdout)
        for node in NODES:
            subprocess.run([os.path.join(BIN, 'supervisord'), '-c', os.path.join(self.node_root(node), 'supervisord.conf')],
                           env=self.env, check=True, timeout=60)
        for node in NODES:
            _wait_health(self.health_url(node))
        self.write_inventory()

    def write_inventory(self):
        hosts = {}
        for node in NODES:
            urls = ['http://127.0.0.1:%d/api/v1/scanner/sboms/%s' % (self.ports[node], digest) for digest in sorted(self.manifest)[:1]]
            hosts[node] = {
                'ansible_port': self.ssh.ports[node],
                'cutover_config_path': self.config_path(node),
                'cutover_state_dir': os.path.join(self.node_root(node), 'state'),
                'cutover_smoke_urls': urls,
                'app_service_supervisor_config': os.path.join(self.node_root(node), 'supervisord.conf'),
                'app_service_port': self.ports[node],
                'app_service_health_url': self.health_url(node),
            }
        inventory = {'objstore_nodes': {'hosts': hosts, 'vars': {
            # Every task opens its own SSH connection (no ControlMaster / ControlPersist), so a
            # stopped sshd means the next task on that node finds it unreachable.
            'ansible_host': '127.0.0.1',
            'ansible_user': 'root',
            'ansible_ssh_private_key_file': self.ssh.client_key,
            'ansible_ssh_args': '-o ControlMaster=no -o ControlPath=none -o StrictHostKeyChecking=no '
                                '-o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR',
            'ansible_ssh_pipelining': True,
            'ansible_timeout': 5,
            'ansible_python_interpreter': sys.executable,
            'cutover_app': 'stellaops',
            'cutover_dest': self.dest,
            'cutover_migration_host': 'node1',
            'cutover_migration_id': self.migration_id,
            'cutover_create_bucket': True,
            'cutover_workers': 8,
            'cutover_poll_interval': 1,
            'cutover_progress_every': 3,
            'cutover_reconnect_timeout': self.reconnect_timeout,
            'app_service_manager': 'supervisor',
            'app_service_units': ['artefact'],
            'app_service_supervisorctl': os.path.join(BIN, 'supervisorctl'),
            'app_service_stop_timeout': 20,
            'app_service_start_timeout': 15,
            'app_service_poll_delay': 1,
        }}}
        with open(self.inventory, 'w') as handle:
            json.dump(inventory, handle, indent=2)

    def snapshot(self):
        """Per node: config bytes, mode, and the service's health (pid, driver)."""
        out = {}
        for node in NODES:
            with open(self.config_path(node), 'rb') as handle:
                data = handle.read()
            out[node] = {'config': data, 'mode': os.stat(self.config_path(node)).st_mode & 0o7777,
                         'health': _wait_health(self.health_url(node))}
        return out

    def playbook(self, name, *args, **env):
        command = [os.path.join(BIN, 'ansible-playbook'), '-i', self.inventory, name] + list(args)
        return self.run(command, **env)

    def run(self, command, **env):
        started = time.time()
        proc = subprocess.run(command, env=dict(self.env, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', **env), cwd=self.root,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=900, check=False)
        with open(os.path.join(self.root, 'playbook-%d.log' % int(started * 1000)), 'w') as handle:
            handle.write(' '.join(command) + '\n' + proc.stdout)
        return proc

    def destroy(self):
        for node in NODES:
            if os.path.exists(os.path.join(self.node_root(node), 'supervisord.pid')):
                self.supervisor(node, 'shutdown')


@pytest.fixture
def fleet_factory(ssh_nodes, stack_env, s3_spec, rustfs_spec, tmp_path):
    fleets = []

    def make(reconnect_timeout):
        for node in NODES:
            ssh_nodes.start(node)
        fleet = Fleet(str(tmp_path), ssh_nodes, stack_env, s3_spec, rustfs_spec, reconnect_timeout)
        fleets.append(fleet)
        fleet.create()
        return fleet
    yield make
    for fleet in fleets:
        fleet.destroy()


def source_digests(spec):
    return dict((key, digest) for key, digest in logical_digests(spec).items() if not key.startswith('storeshift-probe/'))


def assert_on_old_store(fleet, before, node, same_process=False):
    """node's config is byte-identical (and same mode), its service healthy on S3 and serving every artefact."""
    with open(fleet.config_path(node), 'rb') as handle:
        assert handle.read() == before[node]['config'], '%s: config differs from its pre-cutover content' % node
    assert os.stat(fleet.config_path(node)).st_mode & 0o7777 == before[node]['mode'], '%s: config mode changed' % node
    health = _wait_health(fleet.health_url(node))
    assert health['driver'] == 's3', '%s runs on %s, not the old store' % (node, health['driver'])
    if same_process:
        assert health['pid'] == before[node]['health']['pid'], '%s: the service was restarted' % node
    for digest, sha in fleet.manifest.items():
        response = requests.get(fleet.artefact_url(node, digest), timeout=10)
        assert response.status_code == 200, '%s: %s answered %s' % (node, digest, response.status_code)
        assert _sha256(response.content) == sha, '%s: %s has other content' % (node, digest)


def recap(output, node):
    found = re.search(r'^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)' % node, output, re.M)
    assert found, 'no recap line for %s' % node
    return dict(zip(('ok', 'changed', 'unreachable', 'failed'), (int(x) for x in found.groups())))


@pytest.mark.parametrize('stage,outcome', CASES, ids=['%s-%s' % case for case in CASES])
def test_node_unreachable_during_cutover_every_node_restored(fleet_factory, s3_spec, stage, outcome, tmp_path):
    fleet = fleet_factory(60 if outcome == 'returns' else 6)
    ssh = fleet.ssh
    sshnodes = [sys.executable, os.path.join(HERE, 'sshnodes.py')]
    plan = [{'task': STAGES[stage], 'argv': sshnodes + ['stop', ssh.dir, VICTIM]}]
    if outcome == 'returns':
        # node2 answers again a few seconds into the rescue's wait
        plan.append({'task': WAIT_TASK, 'argv': sshnodes + ['start', ssh.dir, VICTIM], 'delay': 4})
    fault_log = str(tmp_path / 'faults.jsonl')
    source_before = source_digests(s3_spec)
    assert len(source_before) == COUNT
    before = fleet.snapshot()

    proc = fleet.playbook('storeshift.objstore.migrate', ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, 'fault_callback'),
                          ANSIBLE_CALLBACKS_ENABLED='node_fault', STORESHIFT_FAULT_PLAN=json.dumps(plan),
                          STORESHIFT_FAULT_LOG=fault_log)
    out = proc.stdout
    tail = out[-6000:]

    with open(fault_log) as handle:
        fired = [json.loads(line) for line in handle]
    assert [(f['task'], f['rc']) for f in fired] == [(p['task'], 0) for p in plan], tail
    assert proc.returncode != 0, tail
    assert 'UNREACHABLE!' in out, tail
    failed_step = {'before_stop': 'preflight', 'after_migrate': 'verify', 'during_swap': 'swap',
                   'after_start': 'smoke'}[stage]
    assert re.search(r'failed_step.{0,6}%s' % failed_step, out), tail
    assert 'ROLLBACK FAILED' not in out, tail
    for node in NODES:
        if node != VICTIM:
            assert_on_old_store(fleet, before, node, same_process=stage == 'before_stop')

    if outcome == 'returns':
        assert 'every node was rolled back' in out, tail
        assert recap(out, VICTIM)['unreachable'] >= 1, tail
    else:
        assert 'NOT ROLLED BACK (unreachable)' in out, tail
        assert not ssh.up(VICTIM)
        commands = re.findall(r'ansible-playbook [^"\n]*storeshift\.objstore\.rollback[^"\n]*', out)
        assert commands, tail
        command = shlex.split(commands[-1])
        assert command[command.index('--limit') + 1] == VICTIM
        assert '-e' in command and 'rollback_migration_id=%s' % fleet.migration_id in command
        # the node comes back: the printed command restores it, and a second run changes nothing
        ssh.start(VICTIM)
        command[0] = os.path.join(BIN, 'ansible-playbook')
        first = fleet.run(command)
        assert first.returncode == 0, first.stdout[-6000:]
        second = fleet.run(command)
        assert second.returncode == 0, second.stdout[-6000:]
        assert recap(second.stdout, VICTIM)['changed'] == 0, second.stdout[-6000:]
        assert 'node1' not in re.findall(r'^(\w+)\s*:\s*ok=', second.stdout, re.M)

    assert_on_old_store(fleet, before, VICTIM, same_process=stage == 'before_stop')
    if stage == 'before_stop':
        # nothing was stopped or changed anywhere: no backup, no state file
        for node in NODES:
            assert not os.path.exists(os.path.join(fleet.node_root(node), 'state', '%s.json' % fleet.migration_id))
    assert source_digests(s3_spec) == source_before
