# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hand-signed S3 hot path: SigV4 against AWS's published example, key rules. Nothing is sent."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

import pytest

pytest.importorskip('urllib3')

from ansible_collections.storeshift.objstore.plugins.module_utils import s3fast  # noqa: E402


def test_signature_matches_the_aws_example(monkeypatch):
    # "GET Object" example of the AWS Signature Version 4 documentation for S3 (header-based auth).
    monkeypatch.setattr(s3fast.time, 'gmtime', lambda: time.strptime('20130524T000000Z', '%Y%m%dT%H%M%SZ'))
    client = s3fast.FastS3('http://examplebucket.s3.amazonaws.com', 'us-east-1', 'AKIAIOSFODNN7EXAMPLE',
                           'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY')
    headers = client._headers('GET', '/test.txt', s3fast.EMPTY_SHA256, extra={'range': 'bytes=0-9'})
    assert headers['Authorization'] == (
        'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, '
        'SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, '
        'Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41')
    client.close()


def test_path_encoding():
    assert s3fast.FastS3.path('b', 'a/b c+d=e&f~g.bin') == '/b/a/b%20c%2Bd%3De%26f~g.bin'
    assert s3fast.FastS3.path('b', u'\u00fc') == '/b/%C3%BC'


@pytest.mark.parametrize('key,usable', [('a/b', True), ('a//b', False), ('a/./b', False), ('../x', False),
                                        ('', False), ('a.b/..c', True)])
def test_usable_key(key, usable):
    assert s3fast.usable_key(key) is usable


@pytest.mark.parametrize('url', ['ftp://host', 'http://host/base', 'http://user@host', 'http://host?x=1'])
def test_unsupported_endpoints(url):
    with pytest.raises(s3fast.FastPathMiss):
        s3fast.FastS3(url, 'us-east-1', 'AK', 'SK')


def test_connection_failure_is_a_miss():
    client = s3fast.FastS3('http://127.0.0.1:9', 'us-east-1', 'AK', 'SK', connect_timeout=2, read_timeout=2)
    with pytest.raises(s3fast.FastPathMiss):
        client.head('bucket', 'key')
    client.close()
