"""Bad input, through Ansible: every case is refused with a message naming the parameter or the
cause, and nothing is written anywhere (destination stores stay empty, no ledger row is created).

All cases run as tasks of one generated playbook (one ansible-playbook process: fast); each module
case registers its result with ignore_errors, each role case is caught with block/rescue.
"""
import json
import os
import subprocess
import sys
import uuid

import boto3
import psycopg2
import pytest
import yaml
from botocore.config import Config

from ansible_collections.storeshift.objstore.plugins.module_utils.ledger import Ledger

from helpers import logical_digests, seed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANCHORE_SCHEMA = os.path.join(REPO, 'tests', 'stack', 'anchore_schema.sql')
NO_COMPRESSION = {'enabled': False, 'min_size_kbytes': 100}
WRONG_SECRET = 'Wr0ngSecretForBadInputTest9Zq'


def s3_store(stack, which, bucket, **extra):
    suffix = {'a': 'S3', 'b': 'S3B'}[which]
    config = {'url': stack['OBJSTORE_%s_URL' % suffix], 'access_key': stack['OBJSTORE_%s_ACCESS_KEY' % suffix],
              'secret_key': stack['OBJSTORE_%s_SECRET_KEY' % suffix], 'region': 'us-east-1', 'bucket': bucket}
    config.update(extra)
    return {'storage_driver': {'name': 's3', 'config': config}, 'compression': dict(NO_COMPRESSION)}


def localfs(path):
    return {'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': path}},
            'compression': dict(NO_COMPRESSION)}


def build_cases(ctx):
    """(case id, module or 'role:<name>', args or role vars, [expected message fragments], task extras)."""
    src, s3dest, fsdest, tmp = ctx['src'], ctx['s3dest'], ctx['fsdest'], ctx['tmp']

    def ledger(name):
        return os.path.join(ctx['ledgers'], name + '.sqlite')

    mig = 'storeshift.objstore.objstore_migrate'
    chk = 'storeshift.objstore.objstore_check'
    ver = 'storeshift.objstore.objstore_verify'
    info = 'storeshift.objstore.objstore_migration_info'
    cfg = 'storeshift.objstore.objstore_config'
    unknown_driver = {'storage_driver': {'name': 'gcs', 'config': {}}}
    no_bucket = {'storage_driver': {'name': 's3', 'config': dict(s3dest['storage_driver']['config'])}}
    del no_bucket['storage_driver']['config']['bucket']
    empty_bucket = {'storage_driver': {'name': 's3', 'config': dict(s3dest['storage_driver']['config'], bucket='')}}
    bad_creds = s3_store(ctx['stack'], 'a', src['storage_driver']['config']['bucket'], secret_key=WRONG_SECRET)
    missing_bucket = s3_store(ctx['stack'], 'b', ctx['missing_bucket'])
    db2 = {'storage_driver': {'name': 'db2', 'config': {}}}
    return [
        ('malformed-yaml-config-file', mig, dict(source={'config_file': ctx['bad_yaml']}, dest=fsdest,
                                                 ledger=ledger('yaml')),
         ['config_file %s is not valid YAML at line' % ctx['bad_yaml']], {}),
        ('unknown-driver', mig, dict(source=src, dest=unknown_driver, ledger=ledger('driver')),
         ["dest: unknown storage driver 'gcs'", 'supported: db, db2, s3, rustfs, localfs'], {}),
        ('missing-bucket-key', mig, dict(source=src, dest=no_bucket, ledger=ledger('nobucket')),
         ['dest: s3 config needs a non-empty bucket'], {}),
        ('empty-bucket', mig, dict(source=src, dest=empty_bucket, ledger=ledger('emptybucket')),
         ['dest: s3 config needs a non-empty bucket'], {}),
        ('bucket-does-not-exist', chk, dict(store=missing_bucket),
         ['bucket %s does not exist' % ctx['missing_bucket'], 'create_bucket'], {}),
        ('bad-credentials', mig, dict(source=bad_creds, dest=fsdest, ledger=ledger('creds')),
         ['credentials'], {}),
        ('unknown-config-section', mig, dict(source={'config_file': ctx['good_yaml'], 'section': 'objectstore'},
                                             dest=fsdest, ledger=ledger('section')),
         ['value of section must be one of: object_store', 'got: objectstore found in source'], {}),
        ('spec-and-config-file-together', mig, dict(
            source=dict(src, config_file=ctx['good_yaml']), dest=fsdest, ledger=ledger('both')),
         ['source: give either a spec or config_file, not both'], {}),
        ('from-analysis-archive-without-config-file', mig, dict(
            source=src, dest=fsdest, layout='anchore', db_connect=ctx['db'], from_analysis_archive=True,
            ledger=ledger('faa')),
         ['from_analysis_archive needs source.config_file'], {}),
        ('buckets-with-layout-objects', mig, dict(source=src, dest=fsdest, buckets=['analysis_archive'],
                                                  ledger=ledger('buckets')),
         ['buckets applies to layout anchore'], {}),
        ('shard-index-not-below-count', mig, dict(source=src, dest=fsdest, shard={'index': 2, 'count': 2},
                                                  migration_id='sharded', ledger=ledger('shard')),
         ['shard.index must be between 0 and shard.count - 1 (1), got 2'], {}),
        ('negative-workers', mig, dict(source=src, dest=fsdest, workers=-3, ledger=ledger('workers')),
         ['workers must be between 1 and 512, got -3'], {}),
        ('verify-method-without-verify-writes', mig, dict(source=src, dest=fsdest, verify_writes=False,
                                                          verify_method='readback', ledger=ledger('vmethod')),
         ['verify_method applies only when verify_writes is true'], {}),
        ('invalid-glob', mig, dict(source=src, dest=fsdest, include=['scanner/[abc*'], ledger=ledger('glob')),
         ["include: invalid glob 'scanner/[abc*'"], {}),
        ('config-file-is-a-directory', mig, dict(source={'config_file': tmp}, dest=fsdest, ledger=ledger('dir')),
         ['config_file %s cannot be read' % tmp, 'directory'], {}),
        ('config-file-under-a-file', mig, dict(source={'config_file': ctx['good_yaml'] + '/config.yaml'},
                                               dest=fsdest, ledger=ledger('underfile')),
         ['config_file %s/config.yaml' % ctx['good_yaml']], {}),
        ('relative-ledger', mig, dict(source=src, dest=fsdest, ledger='ledgers/relative.sqlite'),
         ['ledger must be an absolute path or a postgresql:// DSN, got ledgers/relative.sqlite'], {}),
        ('relative-archive-data-dir', mig, dict(source=src, dest=localfs('data/objects'), ledger=ledger('reldir')),
         ['archive_data_dir must be an absolute path, got data/objects'], {}),
        ('relative-config-file', mig, dict(source={'config_file': 'config/config.yaml'}, dest=fsdest,
                                           ledger=ledger('relcfg')),
         ['config_file must be an absolute path, got config/config.yaml'], {}),
        ('relative-report-path', ver, dict(source=src, dest=fsdest, report_path='reports/verify.json'),
         ['report_path must be an absolute path, got reports/verify.json'], {}),
        ('relative-ca-bundle', chk, dict(store=s3_store(ctx['stack'], 'b', 'x', ca_bundle='certs/ca.pem')),
         ['ca_bundle must be an absolute path'], {}),
        ('immutable-to-localfs', mig, dict(source=src, dest=fsdest, immutable=True, ledger=ledger('immfs')),
         ['immutable/retain_days were asked but the destination (localfs %s) cannot keep retention' % ctx['fsdir']],
         {}),
        ('immutable-to-db2', mig, dict(source=src, dest=db2, db_connect=ctx['db'], immutable=True,
                                       ledger=ledger('immdb2')),
         ['immutable/retain_days were asked but the destination (db2', 'cannot keep retention'], {}),
        ('retention-to-s3-without-object-lock', mig, dict(source=src, dest=s3dest, retain_days=30,
                                                          ledger=ledger('imms3')),
         ['cannot keep retention', 'bucket %s' % s3dest['storage_driver']['config']['bucket']], {}),
        ('retain-days-not-positive', mig, dict(source=src, dest=fsdest, retain_days=0, ledger=ledger('retain0')),
         ['retain_days must be positive, got 0'], {}),
        ('unknown-crash-point', mig, dict(source=src, dest=fsdest, ledger=ledger('crash')),
         ['STORESHIFT_CRASH_AT: unknown crash point explode'], {'environment': {'STORESHIFT_CRASH_AT': 'explode:1'}}),
        ('anchore-layout-without-db-connect', mig, dict(
            source=db2, dest=fsdest, layout='anchore', ledger=ledger('nodb')),
         ['layout anchore needs db_connect'], {}),
        ('same-source-and-dest', mig, dict(source=src, dest=src, ledger=ledger('same')),
         ['source and dest are the same store'], {}),
        ('unknown-overwrite-choice', mig, dict(source=src, dest=fsdest, overwrite='sometimes', ledger=ledger('ow')),
         ['overwrite', 'sometimes', 'never, if_different, always'], {}),
        ('unknown-driver-config-key', chk, dict(store={'storage_driver': {'name': 's3', 'config': dict(
            s3dest['storage_driver']['config'], colour='blue')}}),
         ['colour'], {}),
        ('rustfs-endpoint-without-scheme', chk, dict(store={'storage_driver': {'name': 'rustfs', 'config': {
            'endpoint': '127.0.0.1:9', 'bucket': 'b'}}}),
         ['rustfs endpoint must start with http:// or https://'], {}),
        ('negative-min-size', mig, dict(
            source=src, dest=dict(fsdest, compression={'enabled': True, 'min_size_kbytes': -1}),
            ledger=ledger('minsize')),
         ['dest.compression.min_size_kbytes must be at least 0, got -1'], {}),
        ('verify-ledger-without-migration-id', ver, dict(source=src, dest=fsdest, ledger=ledger('verify')),
         ["ledger needs migration_id"], {}),
        ('verify-bad-sample', ver, dict(source=src, dest=fsdest, sample='150%'),
         ['sample percentage must be greater than 0% and at most 100%, got 150%'], {}),
        ('migration-info-relative-ledger', info, dict(ledger='ledgers/relative.sqlite'),
         ['ledger must be an absolute path or a postgresql:// DSN, got ledgers/relative.sqlite'], {}),
        ('config-edit-malformed-yaml', cfg, dict(path=ctx['bad_yaml'], app='anchore', section='object_store',
                                                 store=fsdest),
         ['%s is not valid YAML' % ctx['bad_yaml']], {}),
        ('config-edit-relative-path', cfg, dict(path='etc/config.yaml', app='anchore', store=fsdest),
         ['path must be absolute, got etc/config.yaml'], {}),
        # Roles (argument_specs validated by include_role).
        ('role-preflight-missing-config-path', 'role:preflight', {'preflight_dest': fsdest},
         ['preflight_config_path'], {}),
        ('role-preflight-unknown-app', 'role:preflight', {
            'preflight_config_path': ctx['good_yaml'], 'preflight_app': 'harbor'},
         ['preflight_app', 'anchore, stellaops'], {}),
        ('role-cutover-missing-dest', 'role:cutover', {'cutover_config_path': ctx['good_yaml']},
         ['cutover_dest'], {}),
    ]


def _task_for(index, case):
    case_id, module, args, _expected, extra = case
    var = 'case_%d' % index
    if module.startswith('role:'):
        return {'name': case_id, 'block': [
            {'name': 'role ' + case_id, 'ansible.builtin.include_role': {'name': 'storeshift.objstore.' + module[5:]},
             'vars': args},
            {'name': 'role did not refuse', 'ansible.builtin.set_fact': {var: {'failed': False, 'msg': 'accepted'}}}],
            'rescue': [{'name': 'keep the refusal', 'ansible.builtin.set_fact': {var: '{{ ansible_failed_result }}'}}]}
    task = {'name': case_id, module: args, 'register': var, 'ignore_errors': True}
    task.update(extra)
    return task


@pytest.fixture(scope='module')
def bad_input_run(stack, stack_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('bad-input')

    def client(which):
        return boto3.client(
            's3', endpoint_url=stack['OBJSTORE_%s_URL' % which],
            aws_access_key_id=stack['OBJSTORE_%s_ACCESS_KEY' % which],
            aws_secret_access_key=stack['OBJSTORE_%s_SECRET_KEY' % which], region_name='us-east-1',
            config=Config(s3={'addressing_style': 'path'}))
    a, b = client('S3'), client('S3B')
    src_bucket, dest_bucket = 'bad-src-%s' % uuid.uuid4().hex[:12], 'bad-dst-%s' % uuid.uuid4().hex[:12]
    a.create_bucket(Bucket=src_bucket)
    b.create_bucket(Bucket=dest_bucket)
    src = s3_store(stack, 'a', src_bucket)
    seed(src, 5)
    dbname = 'bad_%s' % uuid.uuid4().hex[:12]
    admin = psycopg2.connect(stack['OBJSTORE_PG_DSN'])
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute('CREATE DATABASE "%s"' % dbname)
    db = '%s/%s' % (stack['OBJSTORE_PG_DSN'].rpartition('/')[0], dbname)
    with open(ANCHORE_SCHEMA) as handle:
        schema = handle.read()
    conn = psycopg2.connect(db)
    with conn, conn.cursor() as cur:
        cur.execute(schema)
    conn.close()
    fsdir = tmp / 'dest-fs'
    fsdir.mkdir()
    bad_yaml = tmp / 'bad.yaml'
    bad_yaml.write_text('services:\n  catalog:\n    object_store: {storage_driver: [unclosed\n')
    good_yaml = tmp / 'config.yaml'
    good_yaml.write_text(yaml.safe_dump({'services': {'catalog': {'object_store': src}}}))
    ctx = {'stack': stack, 'src': src, 's3dest': s3_store(stack, 'b', dest_bucket), 'fsdest': localfs(str(fsdir)),
           'fsdir': str(fsdir), 'tmp': str(tmp), 'ledgers': str(tmp / 'ledgers'), 'db': db,
           'bad_yaml': str(bad_yaml), 'good_yaml': str(good_yaml),
           'missing_bucket': 'bad-missing-%s' % uuid.uuid4().hex[:12]}
    cases = build_cases(ctx)
    tasks = [_task_for(i, case) for i, case in enumerate(cases)]
    tasks.append({'name': 'save the results', 'ansible.builtin.copy': {
        'content': '{{ {%s} | to_json }}' % ', '.join("'%s': case_%d" % (case[0], i) for i, case in enumerate(cases)),
        'dest': str(tmp / 'results.json'), 'mode': '0600'}})
    playbook = tmp / 'bad_input.yml'
    playbook.write_text(yaml.safe_dump([{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
                                         'tasks': tasks}], sort_keys=False))
    env = dict(stack_env, ANSIBLE_NOCOLOR='1', ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_PIPELINING='1')
    for name in ('PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGPASSWORD', 'PGSERVICE', 'STORESHIFT_CRASH_AT'):
        env.pop(name, None)
    proc = subprocess.run(['ansible-playbook', '-i', 'localhost,', str(playbook)], cwd=str(tmp), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(str(tmp / 'results.json')) as handle:
        results = json.load(handle)
    yield {'ctx': ctx, 'cases': dict((c[0], c) for c in cases), 'results': results, 'stdout': proc.stdout,
           'clients': (a, b), 'buckets': (src_bucket, dest_bucket)}
    for c, bucket in ((a, src_bucket), (b, dest_bucket)):
        for obj in c.list_objects_v2(Bucket=bucket).get('Contents', []):
            c.delete_object(Bucket=bucket, Key=obj['Key'])
        c.delete_bucket(Bucket=bucket)
    with admin.cursor() as cur:
        cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % dbname)
    admin.close()


CASE_IDS = [c[0] for c in build_cases({
    'stack': {'OBJSTORE_S3_URL': '', 'OBJSTORE_S3_ACCESS_KEY': '', 'OBJSTORE_S3_SECRET_KEY': '',
              'OBJSTORE_S3B_URL': '', 'OBJSTORE_S3B_ACCESS_KEY': '', 'OBJSTORE_S3B_SECRET_KEY': ''},
    'src': s3_store({'OBJSTORE_S3_URL': '', 'OBJSTORE_S3_ACCESS_KEY': '', 'OBJSTORE_S3_SECRET_KEY': ''}, 'a', 'x'),
    's3dest': s3_store({'OBJSTORE_S3B_URL': '', 'OBJSTORE_S3B_ACCESS_KEY': '', 'OBJSTORE_S3B_SECRET_KEY': ''}, 'b',
                       'y'),
    'fsdest': localfs('/x'), 'fsdir': '/x', 'tmp': '/t', 'ledgers': '/l', 'db': '', 'bad_yaml': '/b',
    'good_yaml': '/g', 'missing_bucket': 'm'})]


def test_at_least_25_cases():
    assert len(CASE_IDS) >= 25 and len(set(CASE_IDS)) == len(CASE_IDS)


# Known failures outside this file's reach (reported; see docs/reliability.md).
XFAIL = {}


@pytest.mark.parametrize('case_id', [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=XFAIL[c]))
                                     if c in XFAIL else c for c in CASE_IDS])
def test_bad_input_refused_with_clear_message(bad_input_run, case_id):
    _cid, module, _args, expected, _extra = bad_input_run['cases'][case_id]
    result = bad_input_run['results'][case_id]
    assert result.get('failed') is True, 'accepted: %s' % json.dumps(result)[:2000]
    message = result.get('msg') or ''
    if module.startswith('role:'):
        message = json.dumps(result)  # argument spec failures list the offending options
    for fragment in expected:
        assert fragment in message, '%r not in %r' % (fragment, message)
    assert 'Traceback' not in message and 'unexpected error' not in message
    assert WRONG_SECRET not in json.dumps(result)


def test_nothing_written_anywhere(bad_input_run):
    ctx = bad_input_run['ctx']
    assert os.listdir(ctx['fsdir']) == []
    assert logical_digests(ctx['s3dest']) == {}
    assert len(logical_digests(ctx['src'])) == 5  # the source is untouched
    a, b = bad_input_run['clients']
    missing = [bucket['Name'] for bucket in b.list_buckets()['Buckets'] if bucket['Name'] == ctx['missing_bucket']]
    assert missing == []  # objstore_check did not create the missing bucket
    conn = psycopg2.connect(ctx['db'])
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT count(*) FROM object_storage')
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'storeshift%%'")
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()
    # No ledger has a migration row (a ledger file may exist only when the run got as far as opening it).
    ledgers = ctx['ledgers']
    if os.path.isdir(ledgers):
        for name in os.listdir(ledgers):
            if name.endswith('.sqlite'):
                ledger = Ledger(os.path.join(ledgers, name), create=False)
                try:
                    assert ledger.migration_ids() == [], name
                finally:
                    ledger.close()
    assert not os.path.exists(os.path.join(ctx['tmp'], 'ledgers', 'relative.sqlite'))
    assert not os.path.exists(os.path.join(ctx['tmp'], 'reports'))
    assert not os.path.exists(os.path.join(ctx['tmp'], 'data'))
