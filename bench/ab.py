# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alternating rounds of one S3 -> S3 copy: copies of the collection against each other and rclone default.

    .venv/bin/python bench/ab.py --trees /tmp/snap,. --runs 7            # 40 x 32 MiB (stack up)
    .venv/bin/python bench/ab.py --trees . --count 5000 --size 16384 --runs 3

Each tree is a directory laid out as ``ansible_collections/storeshift/objstore`` (``.`` is this
checkout, through its ``.build/collections`` link); a snapshot of a commit is made with
``git archive <commit> | tar -x -C /tmp/snap/ansible_collections/storeshift/objstore``. The engine runs
as in bench.py (``Migrator`` in a child process, workers=32, verify_method auto), one source bucket
seeded once, a fresh destination bucket per run. Each line gives the wall time, the child's CPU and
the user and system CPU of each SeaweedFS server apart (A: the source, B: the destination); the end
gives medians. bench.py's case tables are what docs/performance.md quotes as the run; these rounds
measure a change against the code before it, with less between them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  pylint: disable=wrong-import-position


class _Args(object):
    smoke = False


def server_times(name):
    """(user, system) CPU seconds so far of one stack server and its children."""
    import psutil
    with open(os.path.join(os.path.dirname(bench.ENV_FILE), 'pids', '%s.pid' % name)) as handle:
        proc = psutil.Process(int(handle.read().split()[0]))
    user = system = 0.0
    for member in [proc] + proc.children(recursive=True):
        times = member.cpu_times()
        user += times.user
        system += times.system
    return user, system


def tree_path(tree):
    if tree == '.':
        return bench.COLLECTIONS
    path = os.path.abspath(tree)
    if not os.path.isdir(os.path.join(path, 'ansible_collections', 'storeshift', 'objstore', 'plugins')):
        raise SystemExit('ab: %s is not laid out as ansible_collections/storeshift/objstore' % tree)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--trees', default='.', help='comma-separated trees (default: this checkout)')
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--count', type=int, default=40)
    parser.add_argument('--size', type=int, default=32 * 1024 * 1024)
    parser.add_argument('--no-rclone', action='store_true', help='leave rclone default out')
    args = parser.parse_args(argv)
    contenders = [('engine:%s' % tree, tree_path(tree)) for tree in args.trees.split(',') if tree]
    if not args.no_rclone:
        contenders.append(('rclone-default', None))
    runner = bench.Bench(_Args(), {'runs': args.runs, 'workers': 32})
    stack = runner.stack
    source = bench.unique('bs-ab')
    bench.say('seeding s3a bucket %s: %d x %d bytes' % (source, args.count, args.size))
    bench.s3_seed(stack, 'a', source, args.count, args.size)
    rows = dict((label, []) for label, _tree in contenders)
    try:
        # One uncounted warm-up run of the first contender (as in bench.py): the first run on an idle stack
        # costs the destination server more.
        schedule = [(None, contenders[0])]
        schedule += [(rep, contender) for rep in range(args.runs) for contender in contenders]
        for rep, (label, tree) in schedule:
            dest = bench.unique('bd-ab')[:63]
            bench.settle()
            before = [server_times(name) for name in ('s3a', 's3b')]
            if tree is None:
                result = runner.run_rclone(source, dest, False)
            else:
                runner.env['BENCH_COLLECTIONS'] = tree
                result = runner.run_engine('ab', stack.s3_spec('a', source), stack.s3_spec('b', dest, True), 32)
            after = [server_times(name) for name in ('s3a', 's3b')]
            count, total = bench.s3_count(stack, 'b', dest)
            bench.s3_drop(stack, 'b', dest)
            ok = result['ok'] and count == args.count and total == args.count * args.size
            (a_user, a_sys), (b_user, b_sys) = [(x[0] - y[0], x[1] - y[1]) for x, y in zip(after, before)]
            if rep is not None:
                rows[label].append((result['wall_s'], result['cpu_s'], a_user + a_sys, b_user + b_sys))
            bench.say('%-6s %-24s wall %6.2f s  cpu %5.2f s  A user %5.2f sys %5.2f  B user %5.2f sys %5.2f%s'
                      % ('warmup' if rep is None else 'run %d' % (rep + 1), label, result['wall_s'], result['cpu_s'],
                         a_user, a_sys, b_user, b_sys, '' if ok else '  FAILED'))
    finally:
        bench.s3_drop(stack, 'a', source)
        shutil.rmtree(runner.workdir, ignore_errors=True)
    for label, runs in rows.items():
        if runs:
            wall, cpu, a_cpu, b_cpu = [statistics.median(column) for column in zip(*runs)]
            bench.say('median %-24s wall %6.2f s  cpu %5.2f s  server A %5.2f s  server B %5.2f s'
                      % (label, wall, cpu, a_cpu, b_cpu))
    return 0


if __name__ == '__main__':
    sys.exit(main())
