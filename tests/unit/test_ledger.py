"""The ledger: counters always equal the per-object rows; live runs refuse a second executor."""
import os
import subprocess
import sys

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError, ConflictError
from ansible_collections.storeshift.objstore.plugins.module_utils.ledger import (
    DONE_STATES,
    OBJECT_STATES,
    Ledger,
    format_duration,
    progress_line,
)


def begin(ledger, migration_id='m1', source='src', dest='dst', shard=(0, 1)):
    return ledger.begin_run(migration_id, 'objects', 'source store', 'dest store', source, dest,
                            {'workers': 4}, shard[0], shard[1])


def test_counts_follow_object_rows(tmp_path):
    ledger = Ledger(str(tmp_path / 'ledger.sqlite'))
    begin(ledger)
    ledger.record('m1', 0, [{'key': 'a', 'state': 'copied', 'size': 10, 'sha256': 'aa'},
                            {'key': 'b', 'state': 'failed', 'error': 'boom'},
                            {'key': 'c', 'state': 'skipped', 'size': 3}], listed=3, listed_bytes=13)
    summary = ledger.summary('m1')
    assert (summary['objects_copied'], summary['objects_failed'], summary['objects_skipped']) == (1, 1, 1)
    assert summary['failures'] == [{'key': 'b', 'error': 'boom'}]
    ledger.record('m1', 0, [{'key': 'b', 'state': 'copied', 'size': 5}])
    summary = ledger.summary('m1')
    assert (summary['objects_copied'], summary['objects_failed'], summary['bytes_copied']) == (2, 0, 15)


def test_second_live_executor_refused_dead_one_is_interrupted(tmp_path):
    path = str(tmp_path / 'ledger.sqlite')
    ledger = Ledger(path)
    begin(ledger)
    with pytest.raises(ConflictError, match='already running'):
        begin(Ledger(path))
    # Another migration over the same source and destination is refused too.
    with pytest.raises(ConflictError, match='same source to the same destination'):
        begin(Ledger(path), migration_id='m2')
    # A run whose process died shows as interrupted and can be taken over.
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    ledger._execute([('UPDATE storeshift_runs SET pid = ?', (child.pid,))])
    assert ledger.summary('m1')['state'] == 'interrupted'
    run = begin(Ledger(path))
    assert run['attempt'] == 2 and run['pid'] == os.getpid()


def test_resume_with_other_stores_refused(tmp_path):
    ledger = Ledger(str(tmp_path / 'ledger.sqlite'))
    begin(ledger)
    ledger.finish_run('m1', 0, 'complete')
    with pytest.raises(ConfigError, match='different source or destination'):
        begin(ledger, dest='elsewhere')


def test_shard_count_must_match(tmp_path):
    ledger = Ledger(str(tmp_path / 'ledger.sqlite'))
    begin(ledger, shard=(0, 2))
    ledger.finish_run('m1', 0, 'complete')
    with pytest.raises(ConfigError, match='sharded 2 ways'):
        begin(ledger, shard=(0, 3))


def test_relative_sqlite_path_refused():
    with pytest.raises(ConfigError, match='absolute path'):
        Ledger('relative/ledger.sqlite')


def test_progress_line_format():
    summary = {'objects_done': 12340, 'objects_total': 50000, 'listing_done': True, 'objects_per_s': 310.2,
               'objects_failed': 0, 'state': 'running', 'eta_s': 123}
    assert progress_line(summary) == 'copied 12,340 / 50,000 (24.7%), 310 obj/s, ETA 2m03s'
    assert format_duration(3725) == '1h02m'


class LedgerMachine(RuleBasedStateMachine):
    """Random batches of transitions: the run's counters always equal the per-object rows."""

    def __init__(self):
        super(LedgerMachine, self).__init__()
        import tempfile
        self.directory = tempfile.mkdtemp()
        self.ledger = Ledger(os.path.join(self.directory, 'ledger.sqlite'))
        begin(self.ledger)
        self.model = {}

    @rule(batch=st.lists(st.tuples(st.sampled_from(['k%d' % i for i in range(12)]),
                                   st.sampled_from(OBJECT_STATES)), max_size=8, unique_by=lambda t: t[0]))
    def record(self, batch):
        self.ledger.record('m1', 0, [{'key': key, 'state': state, 'size': 1} for key, state in batch])
        for key, state in batch:
            self.model[key] = state

    @invariant()
    def counters_match_rows(self):
        counts = self.ledger.count_states('m1')
        assert counts == dict((s, sum(1 for v in self.model.values() if v == s))
                              for s in set(self.model.values()))
        run = self.ledger.run_record('m1', 0)
        assert run['objects_copied'] == sum(counts.get(s, 0) for s in ('copied', 'written', 'deleted'))
        assert run['objects_skipped'] == counts.get('skipped', 0)
        assert run['objects_failed'] == counts.get('failed', 0)
        assert run['objects_deleted'] == counts.get('deleted', 0)
        done = set(r['key'] for r in self.ledger.iter_objects('m1', DONE_STATES))
        pending_or_failed = set(k for k, v in self.model.items() if v not in DONE_STATES)
        assert not done & pending_or_failed

    def teardown(self):
        self.ledger.close()


TestLedgerStateMachine = LedgerMachine.TestCase
TestLedgerStateMachine.settings = settings(max_examples=40, stateful_step_count=15, deadline=None)
