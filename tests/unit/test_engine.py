"""The engine on local directories: selection, sharding, overwrite rules, deletion, dry run."""
import os

import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils.engine import (
    MigrationOptions,
    Migrator,
    normalize_prefixes,
    shard_of,
)
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError
from ansible_collections.storeshift.objstore.plugins.module_utils.ledger import Ledger
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec


def localfs(path, compression=False):
    return StoreSpec.from_dict({'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': str(path)}},
                                'compression': {'enabled': compression, 'min_size_kbytes': 0}})


@pytest.fixture
def stores(tmp_path):
    src, dst = tmp_path / 'src', tmp_path / 'dst'
    src.mkdir()
    dst.mkdir()
    for index in range(40):
        path = src / 'scanner' / 'layers' / ('%02d' % index) / 'sbom.cdx.json'
        path.parent.mkdir(parents=True)
        path.write_bytes(os.urandom(64 + index))
    (src / 'other' / 'x.bin').parent.mkdir(parents=True)
    (src / 'other' / 'x.bin').write_bytes(b'x' * (2 * 1024 * 1024))
    return src, dst, str(tmp_path / 'ledger.sqlite')


def files(root):
    found = {}
    for base, _dirs, names in os.walk(str(root)):
        for name in names:
            path = os.path.join(base, name)
            with open(path, 'rb') as handle:
                found[os.path.relpath(path, str(root))] = handle.read()
    return found


def run(src, dst, ledger, **options):
    compression = options.pop('dest_compression', False)
    return Migrator(localfs(src), localfs(dst, compression), MigrationOptions(**options), ledger_location=ledger).run()


def test_copy_all_then_nothing_to_do(stores):
    src, dst, ledger = stores
    first = run(src, dst, ledger, workers=4)
    assert first['run_state'] == 'complete' and first['copied_this_run'] == 41
    assert files(src) == files(dst)
    second = run(src, dst, ledger, workers=4)
    assert second['copied_this_run'] == 0 and second['objects_skipped'] == 41


def test_same_size_change_is_detected(stores):
    src, dst, ledger = stores
    run(src, dst, ledger)
    target = dst / 'scanner' / 'layers' / '05' / 'sbom.cdx.json'
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    result = run(src, dst, ledger)
    assert result['copied_this_run'] == 1
    assert files(src) == files(dst)


def test_overwrite_never_keeps_destination(stores):
    src, dst, ledger = stores
    run(src, dst, ledger)
    target = dst / 'other' / 'x.bin'
    target.write_bytes(b'changed')
    assert run(src, dst, ledger, overwrite='never')['copied_this_run'] == 0
    assert target.read_bytes() == b'changed'
    assert run(src, dst, ledger, overwrite='always')['copied_this_run'] == 41


def test_prefix_include_exclude(stores):
    src, dst, ledger = stores
    result = run(src, dst, ledger, prefixes=['scanner/', 'scanner/layers/0'], include=['*/sbom.cdx.json'],
                 exclude=['scanner/layers/1*'])
    assert result['objects_total'] == 30  # 00-09 and 20-39
    assert not (dst / 'other').exists()


def test_shards_partition_the_key_space(stores):
    src, dst, ledger = stores
    totals = [run(src, dst, ledger, shard_index=i, shard_count=3, workers=2)['copied_this_run']
              for i in range(3)]
    assert sum(totals) == 41 and all(totals)
    assert files(src) == files(dst)
    keys = ['k%d' % i for i in range(1000)]
    assert sorted(set(shard_of(k, 4) for k in keys)) == [0, 1, 2, 3]


def test_delete_source_removes_only_verified(stores):
    src, dst, ledger = stores
    before = files(src)
    result = run(src, dst, ledger, delete_source=True, dest_compression=True)
    assert result['objects_deleted'] == 41
    assert files(src) == {}
    # The destination holds zstd, whose logical content equals what the source had.
    from ansible_collections.storeshift.objstore.plugins.module_utils import codec
    import io
    for key, data in before.items():
        stored = (dst / key).read_bytes()
        assert codec.decode_stream(io.BytesIO(stored), True).read() == data


def test_dry_run_writes_nothing(stores, tmp_path):
    src, dst, ledger = stores
    plan = Migrator(localfs(src), localfs(dst), MigrationOptions(), ledger_location=ledger).dry_run()
    assert plan['objects_total'] == 41 and plan['objects_to_copy'] == 41
    assert plan['eta_s'] is not None
    assert files(dst) == {}
    assert not os.path.exists(ledger)


def test_failed_object_fails_the_run_not_the_others(stores):
    src, dst, ledger = stores
    # A file where the destination needs a directory: that one object cannot be written.
    (dst / 'other').write_bytes(b'in the way')
    result = run(src, dst, ledger)
    assert result['run_state'] == 'failed'
    assert (result['objects_copied'], result['objects_failed']) == (40, 1)
    assert result['failures'][0]['key'] == 'other/x.bin'
    # Once the obstacle is gone the same migration finishes, copying only what is missing.
    (dst / 'other').unlink()
    again = Migrator(localfs(src), localfs(dst), MigrationOptions(), ledger_location=ledger,
                     migration_id=result['migration_id']).run()
    assert again['run_state'] == 'complete' and again['copied_this_run'] == 1
    assert (again['objects_copied'], again['objects_failed']) == (41, 0)
    assert files(src) == files(dst)


@pytest.mark.parametrize('options, message', [
    ({'workers': 0}, 'workers must be between'),
    ({'workers': -3}, 'workers must be between'),
    ({'shard_index': 2, 'shard_count': 2}, 'shard.index must be between'),
    ({'shard_count': 0}, 'shard.count must be at least 1'),
    ({'include': ['scanner/[abc']}, "invalid glob 'scanner/[abc'"),
    ({'overwrite': 'sometimes'}, 'overwrite must be one of'),
    ({'layout': 'tree'}, 'layout must be one of'),
    ({'retain_days': -1}, 'retain_days must be positive'),
    ({'max_bytes_per_second': 0}, 'max_bytes_per_second must be positive'),
])
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message.replace('[', r'\[')):
        MigrationOptions(**options)


def test_same_store_and_retention_refused(stores):
    src, dst, ledger = stores
    with pytest.raises(ConfigError, match='same store'):
        Migrator(localfs(src), localfs(src), MigrationOptions(), ledger_location=ledger)
    with pytest.raises(ConfigError, match='cannot keep retention'):
        Migrator(localfs(src), localfs(dst), MigrationOptions(immutable=True), ledger_location=ledger).run()
    assert files(dst) == {}
    assert not Ledger(ledger).migration_ids()


def test_normalize_prefixes():
    assert normalize_prefixes(['a/b', 'a/', 'c']) == ['a/', 'c']
    assert normalize_prefixes(None) == ['']
