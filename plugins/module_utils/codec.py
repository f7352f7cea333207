# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streams: compression (zstd, Anchore's zlib, plain) and in-flight hashing.

Everything here works on file-like objects with ``read(n)`` so that an
object of any size passes through in bounded memory.

Objects layout rule: a store whose spec has ``compression.enabled`` holds
zstd frames for objects larger than ``min_size_kbytes`` and plain bytes for
the rest; a reader of such a store recognises zstd and zlib by their headers.
A plain object whose first bytes look like a zstd or zlib header is always
compressed on write, so reads are never ambiguous. Stores without
compression are read and written byte for byte.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import io
import zlib

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import IntegrityError, MissingLibraryError

try:
    import zstandard
    HAS_ZSTD = True
except ImportError:  # pragma: no cover - bare targets only
    zstandard = None
    HAS_ZSTD = False

CHUNK = 1024 * 1024
ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'
ZSTD_LEVEL = 3
ANCHORE_ZLIB_LEVEL = 3


def looks_zstd(head):
    return head[:4] == ZSTD_MAGIC


def looks_zlib(head):
    if len(head) < 2:
        return False
    cmf, flg = head[0], head[1]
    if not isinstance(cmf, int):  # pragma: no cover - py2 str
        cmf, flg = ord(cmf), ord(flg)
    return (cmf & 0x0F) == 8 and (cmf >> 4) <= 7 and ((cmf << 8) | flg) % 31 == 0


def _need_zstd():
    if not HAS_ZSTD:
        raise MissingLibraryError('zstandard')


class PeekReader(object):
    """Wraps a stream so its first bytes can be inspected without losing them."""

    def __init__(self, raw):
        self._raw = raw
        self._buffer = b''

    def peek(self, size):
        while len(self._buffer) < size:
            chunk = self._raw.read(size - len(self._buffer))
            if not chunk:
                break
            self._buffer += chunk
        return self._buffer[:size]

    def read(self, size=-1):
        if self._buffer:
            if size is None or size < 0:
                data = self._buffer + self._raw.read()
                self._buffer = b''
                return data
            data, self._buffer = self._buffer[:size], self._buffer[size:]
            if len(data) < size:
                more = self._raw.read(size - len(data))
                if more:
                    data += more
            return data
        return self._raw.read(size if size is not None else -1)

    def close(self):
        close = getattr(self._raw, 'close', None)
        if close:
            close()


class _DecodingReader(object):
    """Decodes a stream on the fly, CHUNK bytes of the raw stream at a time. Subclasses say how a chunk
    is decoded (``_decode``), what ends the stream (``_finish``, which raises IntegrityError when the
    data is truncated) and which errors of their library mean corrupt data (``_corrupt``)."""

    _corrupt = ()
    _name = ''

    def __init__(self, raw):
        self._raw = raw
        self._pending = b''
        self._eof = False

    def _decode(self, chunk):
        raise NotImplementedError

    def _finish(self):
        raise NotImplementedError

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self._pending]
            self._pending = b''
            while True:
                part = self.read(CHUNK)
                if not part:
                    return b''.join(parts)
                parts.append(part)
        while len(self._pending) < size and not self._eof:
            chunk = self._raw.read(CHUNK)
            try:
                if chunk:
                    self._pending += self._decode(chunk)
                else:
                    self._eof = True
                    self._pending += self._finish()
            except self._corrupt as exc:
                raise IntegrityError('%s data is corrupt: %s' % (self._name, exc), step='decode')
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def close(self):
        close = getattr(self._raw, 'close', None)
        if close:
            close()


class ZlibReader(_DecodingReader):
    """Decompresses a zlib stream on the fly."""

    _corrupt = (zlib.error,)
    _name = 'zlib'

    def __init__(self, raw):
        super(ZlibReader, self).__init__(raw)
        self._inflater = zlib.decompressobj()

    def _decode(self, chunk):
        return self._inflater.decompress(chunk)

    def _finish(self):
        tail = self._inflater.flush()
        if not self._inflater.eof:
            raise IntegrityError('zlib data is truncated', step='decode')
        return tail


class ZstdReader(_DecodingReader):
    """Decompresses zstd frames on the fly; a truncated or corrupt stream raises IntegrityError."""

    _name = 'zstd'

    def __init__(self, raw):
        _need_zstd()
        super(ZstdReader, self).__init__(raw)
        self._corrupt = (zstandard.ZstdError,)
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        self._frame_started = False

    def _decode(self, chunk):
        self._frame_started = True
        output = b''
        while chunk:
            output += self._decompressor.decompress(chunk)
            chunk = b''
            if self._decompressor.eof:
                # Several frames may follow each other: start a new frame with what is left.
                chunk = self._decompressor.unused_data
                self._decompressor = zstandard.ZstdDecompressor().decompressobj()
                self._frame_started = bool(chunk)
        return output

    def _finish(self):
        if self._frame_started:
            raise IntegrityError('zstd data is truncated', step='decode')
        return b''


class ChunkedCompressor(object):
    """Compresses a stream with zstd or zlib while it is read."""

    def __init__(self, raw, codec, level=None):
        self._raw = raw
        if codec == 'zstd':
            _need_zstd()
            self._compressor = zstandard.ZstdCompressor(level=level or ZSTD_LEVEL, write_checksum=True).compressobj()
        else:
            self._compressor = zlib.compressobj(level or ANCHORE_ZLIB_LEVEL)
        self._pending = b''
        self._eof = False

    def read(self, size=-1):
        if size is None or size < 0:
            size = 1 << 62
        while len(self._pending) < size and not self._eof:
            chunk = self._raw.read(CHUNK)
            if chunk:
                self._pending += self._compressor.compress(chunk)
            else:
                self._pending += self._compressor.flush()
                self._eof = True
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def close(self):
        close = getattr(self._raw, 'close', None)
        if close:
            close()


class HashingReader(object):
    """Passes a stream through, counting bytes and computing SHA-256 (and MD5 on request)."""

    def __init__(self, raw, md5=False):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if md5 else None
        self.size = 0

    def read(self, size=-1):
        data = self._raw.read(size if size is not None else -1)
        if data:
            self._passed(data)
        return data

    def _passed(self, data):
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.size += len(data)

    def splice_source(self):
        """The stream's splice source (s3fast.SpliceSource: its bytes moved by the kernel), hashing and
        counting what it moves as read() does; None when it has none or reading has begun."""
        opener = getattr(self._raw, 'splice_source', None)
        source = opener() if opener is not None and not self.size else None
        if source is not None:
            source.observers.append(self._passed)
        return source

    def hexdigest(self):
        return self.sha256.hexdigest()

    def md5_hexdigest(self):
        return self.md5.hexdigest() if self.md5 is not None else None

    def drain(self):
        while self.read(CHUNK):
            pass
        return self

    def close(self):
        close = getattr(self._raw, 'close', None)
        if close:
            close()


def decode_stream(raw, compression_enabled):
    """The logical content of an object read from a store (objects layout)."""
    if not compression_enabled:
        return raw
    reader = PeekReader(raw)
    head = reader.peek(4)
    if looks_zstd(head):
        return ZstdReader(reader)
    if looks_zlib(head) and _inflates(reader.peek(ZLIB_PROBE)):
        return ZlibReader(reader)
    return reader


# Two bytes can pass the zlib header check by chance (plain text starting "80" does):
# a zlib stream is trusted only when its first bytes also inflate.
ZLIB_PROBE = 4096


def _inflates(head):
    try:
        zlib.decompressobj().decompress(head)
    except zlib.error:
        return False
    return True


def encode_stream(logical, size, compression_enabled, min_size_kbytes):
    """What to store for a logical stream: ``(stream, stored_size_or_None, codec)``.

    ``size`` is the logical size when known (None when unknown).
    """
    if not compression_enabled:
        return logical, size, 'none'
    reader = PeekReader(logical)
    head = reader.peek(4)
    threshold = int(min_size_kbytes) * 1024
    if (size is not None and size > threshold) or (size is None) or looks_zstd(head) or looks_zlib(head):
        return ChunkedCompressor(reader, 'zstd'), None, 'zstd'
    return reader, size, 'none'


def sha256_of_stream(stream):
    hasher = HashingReader(stream).drain()
    return hasher.hexdigest(), hasher.size


def bytes_stream(data):
    return io.BytesIO(data)
