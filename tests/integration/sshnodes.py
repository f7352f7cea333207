# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One private sshd per test node on 127.0.0.1, so that a node can really become unreachable.

Used by test_cutover_faults.py (the class) and, from the fault-injecting callback, as a command:

    python sshnodes.py stop DIR NODE     stop NODE's sshd and cut its open connections
    python sshnodes.py start DIR NODE    start it again (same port, same keys)

DIR holds everything: the client key, the host key, one sshd config, pid file and log per node.
Key authentication only, no PAM; openssh-server is installed with apt-get when missing (as root).
"""

from __future__ import absolute_import, division, print_function

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from ports import free_port

SSHD = '/usr/sbin/sshd'

SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile {dir}/sshd-{node}.pid
AuthorizedKeysFile {dir}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
# the keys live in a temporary directory, which StrictModes would refuse
StrictModes no
UsePAM no
MaxStartups 100
LogLevel ERROR
Subsystem sftp internal-sftp
"""


def ensure_sshd():
    """Path of sshd; installs openssh-server (apt-get, as root) when it is missing."""
    if not os.path.exists(SSHD) and os.geteuid() == 0 and shutil.which('apt-get'):
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        subprocess.run(['apt-get', 'update'], check=False, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(['apt-get', 'install', '-y', 'openssh-server'], check=False, env=env, stdout=subprocess.DEVNULL)
    if not os.path.exists(SSHD) or not shutil.which('ssh') or not shutil.which('ssh-keygen'):
        raise RuntimeError('%s, ssh or ssh-keygen not found: install openssh-server (the test does it when run as root)' % SSHD)
    return SSHD


def port_open(port, timeout=0.5):
    try:
        sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    except OSError:
        return False
    sock.close()
    return True


def _children():
    """{parent pid: [child pids]} from /proc."""
    tree = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as handle:
                data = handle.read()
        except OSError:
            continue
        ppid = int(data[data.rfind(')') + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            data = handle.read()
    except OSError:
        return False
    return data[data.rfind(')') + 2:].split()[0] != 'Z'


class SshNodes(object):
    """sshd instances for named nodes, all state in ``directory`` (see the module docstring)."""

    def __init__(self, directory):
        self.dir = directory
        self.state_file = os.path.join(directory, 'nodes.json')
        self.ports = {}
        if os.path.exists(self.state_file):
            with open(self.state_file) as handle:
                self.ports = json.load(handle)
        self._procs = {}

    @property
    def client_key(self):
        return os.path.join(self.dir, 'client_key')

    def setup(self, nodes):
        """Keys, one config per node on a free port; nothing is started."""
        ensure_sshd()
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, 0o700)
        for key in ('client_key', 'host_key'):
            if not os.path.exists(os.path.join(self.dir, key)):
                subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'storeshift-test',
                                '-f', os.path.join(self.dir, key)], check=True)
        shutil.copyfile(self.client_key + '.pub', os.path.join(self.dir, 'authorized_keys'))
        os.chmod(os.path.join(self.dir, 'authorized_keys'), 0o600)
        for node in nodes:
            self.ports[node] = self.ports.get(node) or free_port()
            with open(self._path(node, 'conf'), 'w') as handle:
                handle.write(SSHD_CONFIG.format(port=self.ports[node], dir=self.dir, node=node))
        with open(self.state_file, 'w') as handle:
            json.dump(self.ports, handle)
        return self

    def _path(self, node, kind):
        return os.path.join(self.dir, 'sshd-%s.%s' % (node, kind))

    def listener(self, node):
        try:
            with open(self._path(node, 'pid')) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def up(self, node):
        return self.listener(node) is not None and port_open(self.ports[node])

    def start(self, node, timeout=15):
        if self.up(node):
            return
        # sshd refuses to start without its privilege separation directory
        if not os.path.isdir('/run/sshd'):
            os.makedirs('/run/sshd', 0o755)
        with open(self._path(node, 'log'), 'ab') as log:
            self._procs[node] = subprocess.Popen([ensure_sshd(), '-D', '-e', '-f', self._path(node, 'conf')],
                                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.up(node):
                return
            if self._procs[node].poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError('sshd of %s did not start on port %s; log %s' % (node, self.ports[node], self._path(node, 'log')))

    def stop(self, node, timeout=15):
        """Stop the listener and kill every connection it accepted: the node is unreachable."""
        pid = self.listener(node)
        if pid is not None:
            tree = _children()
            victims, todo = [], [pid]
            while todo:
                current = todo.pop()
                victims.append(current)
                todo.extend(tree.get(current, []))
            for victim in victims:
                try:
                    os.kill(victim, signal.SIGKILL)
                except OSError:
                    pass
        proc = self._procs.pop(node, None)
        if proc is not None:
            proc.wait(timeout)
        deadline = time.time() + timeout
        while time.time() < deadline and ((pid is not None and _alive(pid)) or port_open(self.ports[node])):
            time.sleep(0.1)
        if port_open(self.ports[node]):
            raise RuntimeError('sshd of %s still answers on port %s' % (node, self.ports[node]))

    def stop_all(self):
        for node in list(self.ports):
            self.stop(node)


def main(argv):
    if len(argv) != 4 or argv[1] not in ('start', 'stop'):
        sys.stderr.write(__doc__)
        return 2
    nodes = SshNodes(argv[2])
    if argv[1] == 'stop':
        nodes.stop(argv[3])
    else:
        nodes.start(argv[3])
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
