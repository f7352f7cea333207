import hashlib
import io
import os
import zlib

import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils import codec
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import IntegrityError


class Trickle(io.RawIOBase):
    """Returns at most 7 bytes per read, to exercise partial reads."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def read(self, size=-1):
        return self._data.read(min(7, size) if size and size > 0 else 7)


def roundtrip(data, enabled, min_kb=0):
    stream, size, used = codec.encode_stream(io.BytesIO(data), len(data), enabled, min_kb)
    stored = codec._read_all(stream) if hasattr(codec, '_read_all') else stream.read()
    if size is not None:
        assert size == len(stored)
    logical = codec.decode_stream(Trickle(stored), enabled).read()
    return stored, logical, used


@pytest.mark.parametrize('data', [b'', b'x', b'{"a": 1}' * 1000, os.urandom(3 * 1024 * 1024 + 5)])
def test_zstd_roundtrip(data):
    stored, logical, used = roundtrip(data, True)
    assert logical == data
    assert used == ('zstd' if data else 'none')


def test_small_objects_stay_plain_below_threshold():
    data = b'{"small": true}'
    stored, logical, used = roundtrip(data, True, min_kb=100)
    assert stored == data and used == 'none'


@pytest.mark.parametrize('head', [codec.ZSTD_MAGIC, zlib.compress(b'zz')[:2]])
def test_plain_data_that_looks_compressed_is_always_encoded(head):
    data = head + b'not really compressed'
    stored, logical, used = roundtrip(data, True, min_kb=100)
    assert used == 'zstd' and logical == data


def test_anchore_zlib_is_read():
    data = b'{"document": "anchore"}' * 500
    assert codec.decode_stream(io.BytesIO(zlib.compress(data, 3)), True).read() == data


def test_without_compression_bytes_pass_through():
    data = codec.ZSTD_MAGIC + b'application-level zstd stays as is'
    assert codec.decode_stream(io.BytesIO(data), False).read() == data


def test_corrupt_streams_raise_integrity_error():
    good = zlib.compress(b'a' * 10000)
    with pytest.raises(IntegrityError):
        codec.ZlibReader(io.BytesIO(good[:len(good) // 2])).read()
    zstd = codec.ChunkedCompressor(io.BytesIO(os.urandom(5000)), 'zstd').read()
    with pytest.raises(IntegrityError):
        codec.decode_stream(io.BytesIO(zstd[:-20] + b'\x00' * 20), True).read()


def test_hashing_reader():
    data = os.urandom(100000)
    hasher = codec.HashingReader(io.BytesIO(data), md5=True).drain()
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hasher.md5_hexdigest() == hashlib.md5(data).hexdigest()
    assert hasher.size == len(data)


def test_plain_text_with_a_zlib_like_header_is_plain():
    data = b'80 packages were found in the layer' * 10
    assert codec.looks_zlib(data[:2])
    assert codec.decode_stream(io.BytesIO(data), True).read() == data
