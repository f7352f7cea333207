"""Secrets are kept: every module (successful, check mode, failing) and the collection playbooks run
with -vvv, --diff and ANSIBLE_LOG_PATH, with the stack's own distinctive secrets (S3 secret keys,
RustFS API key, PostgreSQL password in db_connect and in a PostgreSQL ledger DSN). None of them may
appear in stdout, stderr, the Ansible log, async job files, the SQLite ledger's bytes, the PostgreSQL
ledger's rows, verify reports or diffs.
"""
import json
import os
import subprocess
import sys

import psycopg2
import pytest
import yaml

from helpers import seed
from test_crash_resume import seed_anchore_db2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ANCHORE_CONFIG = """\
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
"""


def with_config(spec, **changes):
    out = json.loads(json.dumps(spec))
    out['storage_driver']['config'].update(changes)
    return out


def play(tasks):
    return [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local', 'tasks': tasks}]


def t(name, module, args, fail=False, **extra):
    task = {'name': name, module: args, 'register': 'r_%s' % name.replace('-', '_')}
    if fail:
        task['ignore_errors'] = True
    task.update(extra)
    return task


def run_playbook(args, env, cwd):
    proc = subprocess.run(['ansible-playbook', '-vvv', '--diff', '-c', 'local', '-i', 'localhost,'] + args, env=env, cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600,
                          check=False)
    return proc


def dump_pg_ledger(dsn):
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            text = []
            for table in ('storeshift_migrations', 'storeshift_runs', 'storeshift_objects'):
                cur.execute('SELECT * FROM %s' % table)
                text.extend(repr(row) for row in cur.fetchall())
            return '\n'.join(text)
    finally:
        conn.close()


def test_no_secret_anywhere(s3_spec, s3b_spec, rustfs_spec, anchore_db, fresh_db, tmp_path, stack, stack_env,
                            secrets_of_stack):
    assert len(secrets_of_stack) == 4 and all(len(s) >= 8 for s in secrets_of_stack)
    seed(s3_spec, 20)
    seed_anchore_db2(anchore_db, 6, corrupt={3})
    pg_password = stack['OBJSTORE_PG_PASSWORD']
    assert pg_password in anchore_db and pg_password in fresh_db
    closed_ledger = fresh_db.rpartition('@')[0] + '@127.0.0.1:9/objstore'
    ledger = str(tmp_path / 'ledger.sqlite')
    reports = [str(tmp_path / 'verify-ok.json'), str(tmp_path / 'verify-fail.json'), str(tmp_path / 'pb-verify.json')]
    configs = [tmp_path / 'config.yaml', tmp_path / 'config2.yaml']
    for path in configs:
        path.write_text(ANCHORE_CONFIG)
        os.chmod(str(path), 0o600)
    (tmp_path / 'anchore-dest').mkdir()
    anchore_dest = {'storage_driver': {'name': 'localfs',
                                       'config': {'archive_data_dir': str(tmp_path / 'anchore-dest')}}}
    unreachable = with_config(s3_spec, url='http://127.0.0.1:9')
    mig, chk = 'storeshift.objstore.objstore_migrate', 'storeshift.objstore.objstore_check'
    ver, info = 'storeshift.objstore.objstore_verify', 'storeshift.objstore.objstore_migration_info'
    cfg = 'storeshift.objstore.objstore_config'
    tasks = [
        t('check-s3', chk, {'store': '{{ s3 }}'}),
        t('check-rustfs', chk, {'store': '{{ rustfs }}'}),
        t('check-rustfs-check-mode', chk, {'store': '{{ rustfs }}'}, check_mode=True),
        t('check-db2', chk, {'store': {'storage_driver': {'name': 'db2'}}, 'db_connect': '{{ anchore_db }}'}),
        t('check-unreachable', chk, {'store': '{{ unreachable }}'}, fail=True),
        t('migrate-check-mode', mig, {'source': '{{ s3 }}', 'dest': '{{ rustfs }}', 'ledger': ledger},
          check_mode=True),
        t('migrate', mig, {'source': '{{ s3 }}', 'dest': '{{ rustfs }}', 'ledger': ledger, 'migration_id': 'm1'}),
        t('migrate-pg-ledger', mig, {'source': '{{ s3 }}', 'dest': '{{ rustfs }}', 'ledger': '{{ pg_ledger }}',
                                     'migration_id': 'm2'}),
        t('migrate-failing-anchore', mig, {'source': {'storage_driver': {'name': 'db2'}}, 'dest': '{{ anchore_dest }}',
                                           'layout': 'anchore', 'db_connect': '{{ anchore_db }}', 'ledger': ledger},
          fail=True),
        t('migrate-ledger-unreachable', mig, {'source': '{{ s3 }}', 'dest': '{{ rustfs }}',
                                              'ledger': '{{ closed_ledger }}'}, fail=True),
        t('verify', ver, {'source': '{{ s3 }}', 'dest': '{{ rustfs }}', 'ledger': ledger, 'migration_id': 'm1',
                          'report_path': reports[0]}),
        t('verify-pg-ledger', ver, {'source': '{{ s3 }}', 'dest': '{{ rustfs }}', 'ledger': '{{ pg_ledger }}',
                                    'migration_id': 'm2'}),
        t('verify-mismatch', ver, {'source': '{{ s3 }}', 'dest': '{{ s3b }}', 'report_path': reports[1]}, fail=True),
        t('info', info, {'ledger': ledger}),
        t('info-pg', info, {'ledger': '{{ pg_ledger }}', 'migration_id': 'm2'}),
        t('config-s3', cfg, {'path': str(configs[0]), 'app': 'anchore', 'store': '{{ s3 }}'}),
        t('config-rustfs-check-mode', cfg, {'path': str(configs[1]), 'app': 'anchore', 'store': '{{ rustfs }}'},
          check_mode=True),
    ]
    names = [task['name'] for task in tasks]
    tasks.append({'name': 'save results', 'ansible.builtin.copy': {
        'content': '{{ {%s} | to_json }}' % ', '.join("'%s': r_%s" % (name, name.replace('-', '_')) for name in names),
        'dest': str(tmp_path / 'results.json'), 'mode': '0600'}, 'check_mode': False, 'diff': False})
    variables = {'s3': s3_spec, 's3b': s3b_spec, 'rustfs': rustfs_spec, 'anchore_db': anchore_db,
                 'pg_ledger': fresh_db, 'closed_ledger': closed_ledger, 'anchore_dest': anchore_dest,
                 'unreachable': unreachable}
    (tmp_path / 'vars.yml').write_text(yaml.safe_dump(variables))
    (tmp_path / 'modules.yml').write_text(yaml.safe_dump(play(tasks), sort_keys=False))
    stores = {'migrate_source': s3_spec, 'migrate_dest': s3b_spec, 'migrate_ledger': ledger,
              'migrate_poll_seconds': 1, 'migrate_workers': 4,
              'verify_source': s3_spec, 'verify_dest': s3b_spec, 'verify_report': reports[2]}
    (tmp_path / 'stores.yml').write_text(yaml.safe_dump(stores))

    log = tmp_path / 'ansible.log'
    async_dir = tmp_path / 'async'
    env = dict(stack_env, ANSIBLE_LOG_PATH=str(log), ANSIBLE_ASYNC_DIR=str(async_dir), ANSIBLE_NOCOLOR='1',
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING='0',
               ANSIBLE_PIPELINING='1')
    for name in ('PGPASSWORD', 'STORESHIFT_CRASH_AT'):
        env.pop(name, None)
    runs = {
        'modules': run_playbook(['-e', '@' + str(tmp_path / 'vars.yml'), str(tmp_path / 'modules.yml')], env,
                                str(tmp_path)),
        'migrate_objects': run_playbook(['-e', '@' + str(tmp_path / 'stores.yml'),
                                         os.path.join(REPO, 'playbooks', 'migrate_objects.yml')], env, str(tmp_path)),
        'verify_objects': run_playbook(['-e', '@' + str(tmp_path / 'stores.yml'),
                                        os.path.join(REPO, 'playbooks', 'verify_objects.yml')], env, str(tmp_path)),
    }
    for name, proc in runs.items():
        assert proc.returncode == 0, '%s: %s %s' % (name, proc.stdout[-3000:], proc.stderr[-3000:])

    # The runs did what they should (so that the outputs really cover success, check mode and failure).
    results = json.loads((tmp_path / 'results.json').read_text())
    for name in names:
        expect_fail = name in ('check-unreachable', 'migrate-failing-anchore', 'migrate-ledger-unreachable',
                               'verify-mismatch')
        assert bool(results[name].get('failed')) == expect_fail, (name, results[name])
    assert results['migrate']['objects_copied'] == 20
    assert 'digest mismatch' in json.dumps(results['migrate-failing-anchore'])
    assert results['config-s3']['changed'] and 'diff' in results['config-s3']
    assert '+++ after' in runs['modules'].stdout  # the --diff output is part of what is checked
    assert 'copied 20 / 20' in runs['migrate_objects'].stdout
    assert 'verified 20 objects' in runs['verify_objects'].stdout

    # Everything the runs left behind.
    places = {}
    for name, proc in runs.items():
        places['%s stdout' % name] = proc.stdout
        places['%s stderr' % name] = proc.stderr
    places['ansible log'] = log.read_text()
    assert 'objstore_migrate' in places['ansible log']
    for path in [ledger, ledger + '-wal', ledger + '-shm'] + reports:
        if os.path.exists(path):
            with open(path, 'rb') as handle:
                places[path] = handle.read().decode('latin-1')
    assert ledger in places and all(report in places for report in reports)
    places['postgresql ledger rows'] = dump_pg_ledger(fresh_db)
    for directory, _subdirs, files in os.walk(str(async_dir)):
        for name in files:
            with open(os.path.join(directory, name), 'rb') as handle:
                places['async %s' % name] = handle.read().decode('latin-1')
    assert any(name.startswith('async ') for name in places)
    places['registered results'] = json.dumps(results)
    leaks = ['%s (secret %s...) in %s' % (text.count(secret), secret[:3], where)
             for where, text in places.items() for secret in secrets_of_stack if secret in text]
    assert leaks == []


ANSIBLE_VENVS = [name for name in ('.venv', '.venv219') if os.path.exists(os.path.join(REPO, name, 'bin', 'ansible'))]


@pytest.mark.parametrize('venv', ANSIBLE_VENVS)
def test_ledger_dsn_password_masked_in_invocation(
        venv, s3_spec, fresh_db, tmp_path, stack, stack_env, secrets_of_stack):
    """ansible-core before 2.20 prints the module's ``invocation`` (its parameters) at -vvv; a
    PostgreSQL ledger DSN is not a no_log parameter, its password must be masked there too, also
    when the module fails before doing anything."""
    log = tmp_path / 'ansible.log'
    env = dict(stack_env, ANSIBLE_LOG_PATH=str(log), ANSIBLE_NOCOLOR='1', ANSIBLE_LOCALHOST_WARNING='0',
               ANSIBLE_PYTHON_INTERPRETER=os.path.join(REPO, venv, 'bin', 'python'))
    env['PATH'] = os.path.join(REPO, venv, 'bin') + os.pathsep + env['PATH']
    calls = [('storeshift.objstore.objstore_migration_info', {'ledger': fresh_db}),
             ('storeshift.objstore.objstore_verify', {'source': s3_spec, 'dest': s3_spec, 'ledger': fresh_db,
                                                      'migration_id': 'x', 'workers': 0})]
    output = ''
    for module, args in calls:
        proc = subprocess.run(['ansible', 'localhost', '-c', 'local', '-i', 'localhost,', '-vvv', '-m', module,
                               '-a', json.dumps(args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=300, check=False)
        output += proc.stdout + proc.stderr
        assert 'postgresql://' in proc.stdout + proc.stderr or 'workers must be' in proc.stdout + proc.stderr
    output += log.read_text()
    assert 'workers must be at least 1' in output
    assert stack['OBJSTORE_PG_PASSWORD'] not in output
    for secret in secrets_of_stack:
        assert secret not in output
