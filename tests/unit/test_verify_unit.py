# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the verification engine: sampling, percentages, the sorted merge, options.

The end-to-end cases at the bottom use the localfs driver on a temporary
directory (a real store, no server needed).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.storeshift.objstore.plugins.module_utils import codec, verify
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec


# -- percentages and counts ------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    ('100', ('count', 100)), (100, ('count', 100)), ('1', ('count', 1)), (' 7 ', ('count', 7)),
    ('10%', ('percent', 10.0)), ('0.5%', ('percent', 0.5)), ('100%', ('percent', 100.0)), ('12.5 %', ('percent', 12.5)),
    (None, None), ('', None),
])
def test_parse_sample(text, expected):
    assert verify.parse_sample(text) == expected


@pytest.mark.parametrize('text', ['abc', '150%', '0%', '0', '-5', '10%%', '%', '1e3', True, '5.5', 2.5, '-1%'])
def test_parse_sample_rejects(text):
    with pytest.raises(ConfigError) as info:
        verify.parse_sample(text)
    assert 'sample' in str(info.value)


# -- sampling ------------------------------------------------------------------------

KEYS = ['u/b/%05d' % i for i in range(2000)]


def _count_sample(keys, count, seed):
    sampler = verify.CountSampler(count, seed)
    for key in keys:
        sampler.offer(key, len(key))
    return [key for key, _payload in sampler.items()]


def test_count_sample_is_deterministic_and_seeded():
    first = _count_sample(KEYS, 50, 7)
    assert len(first) == 50 and len(set(first)) == 50
    assert first == _count_sample(KEYS, 50, 7)
    assert first == _count_sample(list(reversed(KEYS)), 50, 7)  # independent of listing order
    assert first == sorted(first, key=verify.order_key)
    other = _count_sample(KEYS, 50, 8)
    assert other != first
    assert len(set(other) & set(first)) < 25


def test_count_sample_keeps_smallest_scores_and_payloads():
    sampler = verify.CountSampler(10, 3)
    for key in KEYS:
        sampler.offer(key, 'p-' + key)
    expected = sorted(KEYS, key=lambda k: verify.sample_score(3, k))[:10]
    assert sorted(k for k, _p in sampler.items()) == sorted(expected)
    assert all(p == 'p-' + k for k, p in sampler.items())
    assert sampler.offered == len(KEYS)


def test_count_sample_larger_than_population():
    assert _count_sample(KEYS[:5], 100, 1) == KEYS[:5]


def test_percent_sample_is_deterministic_and_about_right():
    picked = [k for k in KEYS if verify.PercentSampler(10, 11).wants(k)]
    again = [k for k in KEYS if verify.PercentSampler(10, 11).wants(k)]
    other = [k for k in KEYS if verify.PercentSampler(10, 12).wants(k)]
    assert picked == again
    assert picked != other
    assert 120 < len(picked) < 280  # 10% of 2000, loosely
    assert all(verify.PercentSampler(100, 0).wants(k) for k in KEYS)
    # Raising the percentage only adds keys (same seed).
    wider = set(k for k in KEYS if verify.PercentSampler(30, 11).wants(k))
    assert set(picked) <= wider


def test_sample_score_is_stable():
    # Pinned: the same seed must pick the same keys on every host and Python version.
    assert verify.sample_score(0, 'a') == verify.sample_score(0, 'a')
    import hashlib
    assert verify.sample_score(5, 'k') == int.from_bytes(hashlib.sha256(b'5\x00k').digest()[:8], 'big')


# -- the sorted merge -------------------------------------------------------------------

def _merge(left, right):
    out = []
    for key, a, b in verify.merge_sorted([(k, 'L') for k in left], [(k, 'R') for k in right]):
        out.append((key, a is not verify._MISSING, b is not verify._MISSING))
    return out


def test_merge_basic():
    assert _merge(['a', 'b', 'd'], ['b', 'c', 'd', 'e']) == [
        ('a', True, False), ('b', True, True), ('c', False, True), ('d', True, True), ('e', False, True)]
    assert _merge([], ['x']) == [('x', False, True)]
    assert _merge(['x'], []) == [('x', True, False)]
    assert _merge([], []) == []


def test_merge_uses_utf8_byte_order():
    # S3 order: '-' (0x2d) < '/' (0x2f); U+FFFF < U+1F600 in UTF-8 bytes (and in code points; not in UTF-16).
    keys = sorted(['a/b', 'a-b', 'a', 'é', 'z', '\uffff', '\U0001F600', 'A'], key=lambda k: k.encode('utf-8'))
    assert [k for k, _l, _r in _merge(keys, keys)] == keys
    assert all(left and right for _k, left, right in _merge(keys, keys))


def test_merge_detects_unsorted_listing():
    with pytest.raises(verify.UnorderedListing) as info:
        list(verify.merge_sorted([('b', 1), ('a', 1)], [], 'the source listing', 'the dest listing'))
    assert 'the source listing' in str(info.value)
    with pytest.raises(verify.UnorderedListing):
        list(verify.merge_sorted([('a', 1)], [('a', 1), ('a', 1)]))  # duplicates are not strictly increasing


@settings(max_examples=200, deadline=None)
@given(st.sets(st.text(min_size=1, max_size=6)), st.sets(st.text(min_size=1, max_size=6)))
def test_merge_equals_set_algebra(left, right):
    left = [k for k in left if '\ud800' > k[:1] or k[:1] > '\udfff']
    right = [k for k in right if '\ud800' > k[:1] or k[:1] > '\udfff']
    order = verify.order_key
    merged = _merge(sorted(left, key=order), sorted(right, key=order))
    assert [k for k, _a, _b in merged] == sorted(set(left) | set(right), key=order)
    assert set(k for k, a, b in merged if a and not b) == set(left) - set(right)
    assert set(k for k, a, b in merged if b and not a) == set(right) - set(left)
    assert set(k for k, a, b in merged if a and b) == set(left) & set(right)


# -- options and summary -----------------------------------------------------------------

@pytest.mark.parametrize('kwargs, words', [
    ({'mode': 'md5'}, 'mode'),
    ({'workers': 0}, 'workers'),
    ({'workers': -3}, 'workers'),
    ({'sample': 'abc'}, 'sample'),
    ({'sample': '150%'}, 'sample'),
    ({'report_path': 'relative/report.json'}, 'report_path'),
    ({'include': ['[abc']}, 'include'),
    ({'layout': 'flat'}, 'layout'),
    ({'seed': 'x'}, 'seed'),
    ({'keys': ['']}, 'keys'),
])
def test_options_reject(kwargs, words):
    with pytest.raises(ConfigError) as info:
        verify.VerifyOptions(**kwargs)
    assert words in str(info.value)


def test_options_filtering_reuses_engine():
    options = verify.VerifyOptions(prefix=['a/', 'a/b/', 'c/'], include=['*.json'], exclude=['*/skip*'])
    assert options.prefixes == ['a/', 'c/']
    assert options.wants('a/x.json') and options.wants('c/d/e.json')
    assert not options.wants('b/x.json')          # prefix
    assert not options.wants('a/x.txt')           # include
    assert not options.wants('a/skip.json')       # exclude


def test_summary_line():
    tally = verify.Tally()
    for i in range(9998):
        tally.match('k%d' % i)
    tally.miss('m')
    tally.mismatch('x', 'sha256')
    assert verify.format_summary(tally) == \
        'verified 10,000 objects: 9,998 matched, 1 missing, 1 mismatched, 0 extra'
    tally.error('e', 'boom')
    assert verify.format_summary(tally, 'sample of 5, seed 1', extra_checked=False) == \
        'verified 10,001 objects: 9,998 matched, 1 missing, 1 mismatched, extra not checked, 1 unreadable ' \
        '(sample of 5, seed 1)'


def test_tally_caps_lists_but_counts_exactly():
    tally = verify.Tally(limit=3)
    for i in range(10):
        tally.miss('k%d' % i)
        tally.add_extra('e%d' % i)
    assert tally.missing == 10 and tally.missing_keys == ['k0', 'k1', 'k2']
    assert tally.extra == 10 and len(tally.extra_keys) == 3


# -- end to end on localfs ------------------------------------------------------------------

def _spec(directory, compression=False):
    return StoreSpec.from_dict({'storage_driver': {'name': 'localfs', 'config': {'archive_data_dir': str(directory)}},
                                'compression': {'enabled': compression, 'min_size_kbytes': 0}})


def _write(root, key, data):
    path = os.path.join(str(root), *key.split('/'))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as handle:
        handle.write(data)


@pytest.fixture
def pair(tmp_path):
    src, dst = tmp_path / 'src', tmp_path / 'dst'
    src.mkdir()
    dst.mkdir()
    for i in range(40):
        data = (b'object %d ' % i) * (i + 1)
        _write(src, 'a/%02d' % i, data)
        _write(dst, 'a/%02d' % i, data)
    return src, dst


def test_localfs_equal_then_each_kind_of_difference(pair, tmp_path):
    src, dst = pair
    result = verify.Verifier(_spec(src), _spec(dst), verify.VerifyOptions(workers=4)).run()
    assert result['ok'] and result['checked'] == 40 and result['matched'] == 40
    assert result['strategy'] == 'merge' and result['extra_checked']
    os.unlink(str(dst / 'a' / '03'))
    _write(dst, 'a/05', b'X' + (b'object 5 ' * 6)[1:])
    _write(dst, 'a/07', (b'object 7 ' * 8)[:-1])
    _write(dst, 'a/zz-extra', b'extra')
    report = tmp_path / 'out' / 'report.json'
    result = verify.Verifier(_spec(src), _spec(dst), verify.VerifyOptions(report_path=str(report))).run()
    assert not result['ok']
    assert (result['checked'], result['matched'], result['missing'], result['mismatched'], result['extra']) == \
        (40, 37, 1, 2, 1)
    assert result['missing_keys'] == ['a/03']
    assert result['extra_keys'] == ['a/zz-extra']
    reasons = dict((m['key'], m['reason']) for m in result['mismatched_keys'])
    assert reasons == {'a/05': 'sha256', 'a/07': 'size'}
    assert result['summary'] == 'verified 40 objects: 37 matched, 1 missing, 2 mismatched, 1 extra'
    saved = json.loads(report.read_text())
    assert saved['missing'] == 1 and saved['dest_spec']['storage_driver']['name'] == 'localfs'
    # size mode sees the truncation but not the flip; exists mode only the deletion
    result = verify.Verifier(_spec(src), _spec(dst), verify.VerifyOptions(mode='size')).run()
    assert (result['missing'], result['mismatched']) == (1, 1)
    result = verify.Verifier(_spec(src), _spec(dst), verify.VerifyOptions(mode='exists')).run()
    assert (result['missing'], result['mismatched'], result['extra']) == (1, 0, 1)


def test_localfs_compressed_dest_equals_zlib_source(tmp_path):
    src, dst = tmp_path / 's', tmp_path / 'd'
    for i in range(5):
        data = os.urandom(100) * 50
        _write(src, 'k/%d' % i, zlib.compress(data))
        stream, _size, kind = codec.encode_stream(codec.bytes_stream(data), len(data), True, 0)
        assert kind == 'zstd'
        _write(dst, 'k/%d' % i, stream.read())
    for mode in ('sha256', 'size'):
        result = verify.Verifier(_spec(src, True), _spec(dst, True), verify.VerifyOptions(mode=mode)).run()
        assert result['ok'] and result['matched'] == 5, result


def test_localfs_keys_and_sample(pair):
    src, dst = pair
    os.unlink(str(dst / 'a' / '10'))
    result = verify.Verifier(_spec(src), _spec(dst), verify.VerifyOptions(keys=['a/10', 'a/11', 'a/11'])).run()
    assert (result['checked'], result['missing'], result['missing_keys']) == (2, 1, ['a/10'])
    assert not result['extra_checked']
    one = verify.Verifier(_spec(src), _spec(dst), verify.VerifyOptions(sample='10', seed=1)).run()
    assert one['checked'] == 10 and one['sample_population'] == 40
    assert 'sample of 10, seed 1' in one['summary']


def test_same_store_refused(tmp_path):
    with pytest.raises(ConfigError):
        verify.Verifier(_spec(tmp_path), _spec(tmp_path), verify.VerifyOptions())
    with pytest.raises(ConfigError) as info:
        verify.Verifier(_spec(tmp_path / 'a'), _spec(tmp_path / 'b'), verify.VerifyOptions(), migration_id='x')
    assert 'ledger' in str(info.value)


def test_unsorted_listing_falls_back_to_lookups(pair):
    src, dst = pair
    os.unlink(str(dst / 'a' / '20'))
    _write(dst, 'a/extra', b'x')

    class Shuffled(verify.Verifier):
        def _dest_listing(self):
            return reversed(list(super(Shuffled, self)._dest_listing()))

    result = Shuffled(_spec(src), _spec(dst), verify.VerifyOptions()).run()
    assert result['strategy'] == 'lookup' and 'not listed in UTF-8 byte order' in result['fallback_reason']
    assert (result['checked'], result['missing'], result['extra'], result['matched']) == (40, 1, 1, 39)
    assert result['missing_keys'] == ['a/20'] and result['extra_keys'] == ['a/extra']
