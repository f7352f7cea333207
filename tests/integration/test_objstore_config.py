# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""objstore_config through ansible-playbook: change, idempotence, check mode, diff masking, backup, mode."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat
import subprocess
import sys

import yaml

ORIGINAL = """\
# catalog config
services:
  catalog:
    enabled: true
    object_store:
      compression:
        enabled: false
        min_size_kbytes: 100
      storage_driver:
        name: db
        config: {}
  policy_engine:
    enabled: true
"""

STORE = {'compression': {'enabled': True, 'min_size_kbytes': 100},
         'storage_driver': {'name': 's3', 'config': {'url': 'http://127.0.0.1:9000', 'bucket': 'anchore',
                                                     'access_key': 'AKIDEXAMPLE', 'secret_key': 'VerySecretValue42'}}}


def run_play(tmp_path, extra_args=(), store=None, path=None):
    if store is None:
        store = STORE
    playbook = tmp_path / 'play.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
        'tasks': [{'name': 'swap', 'storeshift.objstore.objstore_config': {
            'path': str(path), 'app': 'anchore', 'section': 'object_store', 'store': store}, 'register': 'out'},
            {'name': 'save', 'ansible.builtin.copy': {'content': '{{ out | to_json }}', 'dest': str(tmp_path / 'out.json'),
                                                      'mode': '0600'}, 'check_mode': False, 'diff': False}]}]))
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING='0')
    proc = subprocess.run(['ansible-playbook', '-i', 'localhost,', str(playbook)] + list(extra_args),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(str(tmp_path / 'out.json')) as handle:
        result = json.load(handle)
    return result, proc.stdout


def test_swap_check_diff_backup_idempotence(tmp_path):
    config = tmp_path / 'config.yaml'
    config.write_text(ORIGINAL)
    os.chmod(str(config), 0o600)

    # check mode + diff: reports a change, writes nothing, masks secrets
    result, raw = run_play(tmp_path, ['--check', '--diff'], path=config)
    assert result['changed'] is True
    assert config.read_text() == ORIGINAL
    assert 'VerySecretValue42' not in raw
    assert 'secret_key: ********' in raw

    # real run: changes, backup made with the original bytes and mode
    result, raw = run_play(tmp_path, ['--diff'], path=config)
    assert result['changed'] is True
    assert 'VerySecretValue42' not in raw
    backup = result['backup_file']
    with open(backup) as handle:
        assert handle.read() == ORIGINAL
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(config)).st_mode) == 0o600
    doc = yaml.safe_load(config.read_text())
    assert doc['services']['catalog']['object_store'] == STORE
    assert config.read_text().startswith('# catalog config\nservices:\n  catalog:\n    enabled: true\n    object_store:\n')
    assert config.read_text().endswith('  policy_engine:\n    enabled: true\n')
    assert result['previous']['storage_driver']['name'] == 'db'
    assert result['store']['storage_driver']['config']['secret_key'] == '********'

    # second run: nothing to do
    result, dummy = run_play(tmp_path, [], path=config)
    assert result['changed'] is False
    assert 'backup_file' not in result


def test_missing_file_fails(tmp_path):
    playbook = tmp_path / 'play.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
        'tasks': [{'name': 'swap', 'storeshift.objstore.objstore_config': {
            'path': str(tmp_path / 'nope.yaml'), 'store': STORE}}]}]))
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING='0')
    proc = subprocess.run(['ansible-playbook', '-i', 'localhost,', str(playbook)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert proc.returncode != 0
    assert 'does not exist' in proc.stdout
