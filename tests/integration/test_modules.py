"""The modules through Ansible itself: objstore_check's failures in plain words, migrate + info, docs."""
import json
import os
import re
import subprocess
import sys

import pytest

from helpers import logical_digests, seed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
MODULES = ('objstore_check', 'objstore_migrate', 'objstore_verify', 'objstore_migration_info', 'objstore_config')


def ansible_env(stack_env=None):
    env = dict(os.environ)
    env.update(stack_env or {})
    env.update(PATH=BIN + os.pathsep + env.get('PATH', ''), ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, '.build', 'collections'),
               ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    return env


def run_module(module, args, check=False, env=None):
    """Run one module on localhost through ansible-playbook; returns (result dict, all output)."""
    import tempfile
    with tempfile.NamedTemporaryFile(suffix='.json') as result_file:
        play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': [
            {'name': 'run', 'storeshift.objstore.%s' % module: args, 'check_mode': check, 'register': 'out',
             'ignore_errors': True},
            {'name': 'save', 'ansible.builtin.copy': {'content': '{{ out | to_json }}', 'dest': result_file.name},
             'check_mode': False}]}]
        proc = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                               '/dev/stdin'], input=json.dumps(play).encode(), capture_output=True,
                              env=ansible_env(env), timeout=300, check=False)
        output = proc.stdout.decode() + proc.stderr.decode()
        assert proc.returncode == 0, output[-3000:]
        with open(result_file.name) as handle:
            return json.load(handle), output


@pytest.mark.parametrize('module', MODULES)
def test_ansible_doc_renders(module):
    out = subprocess.run([os.path.join(BIN, 'ansible-doc'), 'storeshift.objstore.%s' % module],
                         capture_output=True, env=ansible_env(), check=True, timeout=120).stdout.decode()
    assert 'EXAMPLES' in out and 'RETURN VALUES' in out


def test_check_succeeds_on_every_driver(s3_spec, rustfs_spec, localfs_spec, anchore_db, db2_spec):
    for spec, db in ((s3_spec, None), (rustfs_spec, None), (localfs_spec, None), (db2_spec, anchore_db)):
        args = {'store': spec}
        if db:
            args['db_connect'] = db
        result, _out = run_module('objstore_check', args)
        assert not result.get('failed'), result
        assert [s['step'] for s in result['steps']] == ['connect', 'write', 'read', 'delete', 'confirm_deleted']


def test_check_mode_writes_nothing(s3_spec):
    result, _out = run_module('objstore_check', {'store': s3_spec}, check=True)
    assert not result.get('failed') and [s['step'] for s in result['steps']] == ['connect']


def _with(spec, **config):
    spec = json.loads(json.dumps(spec))
    spec['storage_driver']['config'].update(config)
    return spec


def _without(spec, *keys):
    spec = json.loads(json.dumps(spec))
    for key in keys:
        spec['storage_driver']['config'].pop(key, None)
    return spec


def failure_cases(stack, s3_spec, rustfs_spec, anchore_db, tmp_path):
    closed = 'http://127.0.0.1:9'  # discard port: nothing listens
    wrong_pw = anchore_db.replace(stack['OBJSTORE_PG_PASSWORD'], 'not-the-password')
    bad_yaml = tmp_path / 'bad.yaml'
    bad_yaml.write_text('services:\n  catalog: [unclosed\n')
    no_section = tmp_path / 'nosection.yaml'
    no_section.write_text('services:\n  catalog:\n    enabled: true\n')
    return [
        ('wrong password', {'store': {'storage_driver': {'name': 'db2'}}, 'db_connect': wrong_pw},
         'bad credentials', 'rejected the password'),
        ('wrong secret key', {'store': _with(s3_spec, secret_key='wrong-secret-key-123')},
         'bad credentials', 'rejected the credentials'),
        ('connection refused', {'store': _with(s3_spec, url=closed)}, 'connection', 'connection refused'),
        ('missing bucket', {'store': _with(s3_spec, bucket='no-such-bucket-storeshift')}, 'missing bucket',
         'does not exist'),
        ('unknown driver', {'store': {'storage_driver': {'name': 'swift'}}}, 'invalid configuration',
         "unknown storage driver 'swift'"),
        ('malformed config file', {'store': {'config_file': str(bad_yaml)}}, 'invalid configuration',
         'not valid YAML'),
        ('missing section', {'store': {'config_file': str(no_section)}}, 'invalid configuration',
         'has no object_store section'),
        ('rustfs api key missing', {'store': _without(rustfs_spec, 'api_key', 'api_key_header')},
         'missing API key', 'API key'),
        ('rustfs api key wrong', {'store': _with(rustfs_spec, api_key='wrong-key-xyz')}, 'bad credentials',
         'API key'),
    ]


def test_check_failures_are_named(stack, s3_spec, rustfs_spec, anchore_db, tmp_path, secrets_of_stack):
    for name, args, cause, words in failure_cases(stack, s3_spec, rustfs_spec, anchore_db, tmp_path):
        result, out = run_module('objstore_check', args)
        assert result.get('failed'), name
        assert words.lower() in result['msg'].lower(), (name, result['msg'])
        if 'cause' in result:
            assert result['cause'].startswith(cause), (name, result['cause'])
        for secret in secrets_of_stack:
            assert secret not in out, name


def test_migrate_module_check_mode_then_run_then_info(s3_spec, rustfs_spec, tmp_path):
    expected = seed(s3_spec, 40)
    ledger = str(tmp_path / 'ledger.sqlite')
    args = {'source': s3_spec, 'dest': rustfs_spec, 'ledger': ledger, 'migration_id': 'm-module'}
    plan, _out = run_module('objstore_migrate', args, check=True)
    assert plan['changed'] and plan['objects_to_copy'] == 40 and not os.path.exists(ledger)
    first, _out = run_module('objstore_migrate', args)
    assert first['changed'] and first['state'] == 'complete' and first['objects_copied'] == 40
    assert logical_digests(rustfs_spec) == expected
    second, _out = run_module('objstore_migrate', dict(args, migration_id='m-module-2'))
    assert not second['changed'] and second['objects_skipped'] == 40
    info, _out = run_module('objstore_migration_info', {'ledger': ledger, 'migration_id': 'm-module'})
    assert info['exists'] and info['migration']['state'] == 'complete'
    assert info['migration']['progress_line'].startswith('copied 40 / 40 (100.0%)')
    history, _out = run_module('objstore_migration_info', {'ledger': ledger})
    assert [m['migration_id'] for m in history['migrations']] == ['m-module-2', 'm-module']


def test_migrate_objects_playbook_prints_progress(stack_env, s3_spec, rustfs_spec, tmp_path, secrets_of_stack):
    seed(s3_spec, 300)
    extra = tmp_path / 'vars.json'
    extra.write_text(json.dumps({'migrate_source': s3_spec, 'migrate_dest': rustfs_spec,
                                 'migrate_ledger': str(tmp_path / 'l.sqlite'), 'migrate_poll_seconds': 1,
                                 'migrate_workers': 4}))
    env = ansible_env(stack_env)
    proc = subprocess.run([os.path.join(BIN, 'ansible-playbook'), 'storeshift.objstore.migrate_objects',
                           '-e', '@%s' % extra], capture_output=True, env=env, timeout=600, check=False)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out[-3000:]
    assert 'copied 300 / 300 (100.0%)' in out
    for secret in secrets_of_stack:
        assert secret not in out


@pytest.mark.parametrize('role', sorted(os.listdir(os.path.join(REPO, 'roles'))))
def test_ansible_doc_renders_roles(role):
    out = subprocess.run([os.path.join(BIN, 'ansible-doc'), '-t', 'role', 'storeshift.objstore.%s' % role],
                         capture_output=True, env=ansible_env(), check=True, timeout=120)
    text = re.sub(r'\x1b\[[0-9;]*m', '', out.stdout.decode())
    assert 'ENTRY POINT: main' in text and 'Options' in text, text[:2000]
