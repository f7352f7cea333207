# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hand-signed S3 hot path: SigV4 against AWS's published example, key rules, and its HTTP/1.1 client
against a scripted server on loopback (answers the real S3 servers of the integration tests do not give on
demand: chunked bodies, a closed keep-alive connection, a short upload stream)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import io
import os
import socket
import ssl
import stat
import threading
import time

import pytest

from ansible_collections.storeshift.objstore.plugins.module_utils import codec, s3fast  # noqa: E402


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


class ScriptedServer(object):
    """Loopback HTTP server: answers each request with the next scripted answer (bytes), records requests.

    An answer of None closes the connection without answering (a keep-alive connection the server dropped);
    ``(answer, CLOSE)`` answers, then closes the connection (a server closing it once it is idle). Each
    connection is served in its own thread; ``connections`` counts them.
    """

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        self.connections = 0
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.url = 'http://127.0.0.1:%d' % self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve)
        self.thread.daemon = True
        self.thread.start()

    def _read_request(self, conn, buffer):
        while b'\r\n\r\n' not in buffer:
            data = conn.recv(65536)
            if not data:
                return None, buffer
            buffer += data
        head, _sep, rest = buffer.partition(b'\r\n\r\n')
        length = 0
        for line in head.split(b'\r\n')[1:]:
            name, _sep, value = line.partition(b':')
            if name.strip().lower() == b'content-length':
                length = int(value)
        while len(rest) < length:
            data = conn.recv(65536)
            if not data:
                break
            rest += data
        return head + b'\r\n\r\n' + rest[:length], rest[length:]

    def _serve(self):
        try:
            self._answer_all()
        except OSError:
            pass  # the test closed the server, or the client dropped a connection on purpose

    def _answer_all(self):
        while self.answers:
            conn, _addr = self.sock.accept()
            self.connections += 1
            handler = threading.Thread(target=self._answer_connection, args=(conn,))
            handler.daemon = True
            handler.start()

    def _answer_connection(self, conn):
        buffer = b''
        try:
            while self.answers:
                request, buffer = self._read_request(conn, buffer)
                if request is None:
                    break
                with self._lock:
                    self.requests.append(request)
                    answer = self.answers.pop(0)
                if answer is None:
                    break
                if isinstance(answer, tuple):
                    conn.sendall(answer[0])
                    break
                conn.sendall(answer)
        except OSError:
            pass  # the client dropped the connection on purpose
        conn.close()

    def close(self):
        self.sock.close()


CLOSE = 'close'


def _client(server):
    return s3fast.FastS3(server.url, 'us-east-1', 'AK', 'SK', connect_timeout=5, read_timeout=5)


def test_chunked_answer_and_keep_alive():
    xml = (b'<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
           b'<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>'
           b'<Contents><Key>a+b%20c/d%2Be</Key><Size>3</Size><ETag>&quot;e1&quot;</ETag></Contents>'
           b'</ListBucketResult>')
    chunked = b''.join(b'%x\r\n%s\r\n' % (len(xml[i:i + 50]), xml[i:i + 50]) for i in range(0, len(xml), 50))
    server = ScriptedServer([
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' + chunked + b'0\r\n\r\n',
        b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello',
    ])
    client = _client(server)
    items, token = client.list_page('b', 'a')
    assert items == [('a b c/d+e', 3, 'e1')] and token is None
    body = client.get('b', 'k')
    assert body.read(2) + body.read() == b'hello'
    assert len(server.requests) == 2  # both over one kept-alive connection
    client.close()
    server.close()


def test_dropped_keep_alive_connection_is_replaced_once():
    server = ScriptedServer([
        b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
        None,  # the server closed the idle connection: the next request goes again on a new one
        b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "x"\r\nx-amz-checksum-sha256: %s\r\n\r\n'
        % s3fast.b64_of_hex(hashlib.sha256(b'data').hexdigest()).encode(),
    ])
    client = _client(server)
    assert client.head_bucket('b') is True
    etag, sha, echoed = client.put('b', 'k', b'data')
    assert (etag, sha, echoed) == ('x', hashlib.sha256(b'data').hexdigest(), True)
    assert server.requests[-1].endswith(b'\r\n\r\ndata')
    assert b'x-amz-checksum-sha256: ' + s3fast.b64_of_hex(sha).encode() in server.requests[-1]
    assert b'content-type: application/octet-stream' in server.requests[-1]
    client.close()
    server.close()


def test_error_answers_are_misses():
    server = ScriptedServer([
        b'HTTP/1.1 400 Bad Request\r\nContent-Length: 41\r\n\r\n<Error><Code>BadDigest</Code></Error>    ',
        b'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n',
    ])
    client = _client(server)
    with pytest.raises(s3fast.FastPathMiss):
        client.put('b', 'k', b'data')
    assert client.head('b', 'k') is None
    client.close()
    server.close()


def test_missing_bucket_and_create_bucket():
    taken = b'<Error><Code>BucketAlreadyExists</Code></Error>'
    owned = b'<Error><Code>BucketAlreadyOwnedByYou</Code></Error>'
    server = ScriptedServer([
        b'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n',
        b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
        b'HTTP/1.1 409 Conflict\r\nContent-Length: %d\r\n\r\n%s' % (len(owned), owned),
        b'HTTP/1.1 409 Conflict\r\nContent-Length: %d\r\n\r\n%s' % (len(taken), taken),
    ])
    client = _client(server)
    assert client.head_bucket('b') is False  # 404: no such bucket, not a miss
    assert client.create_bucket('b', 'eu-west-1') is True
    request = server.requests[-1]
    assert request.startswith(b'PUT /b HTTP/1.1\r\n')
    body = (b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b'<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>')
    assert request.endswith(b'\r\n\r\n' + body)
    assert b'x-amz-content-sha256: ' + hashlib.sha256(body).hexdigest().encode() in request
    assert client.create_bucket('b') is True  # already ours
    assert server.requests[-1].endswith(b'Content-Length: 0\r\n\r\n')  # us-east-1: no configuration
    with pytest.raises(s3fast.FastPathMiss):  # someone else's: boto3 asks again and names it
        client.create_bucket('b')
    client.close()
    server.close()


def test_streamed_put_frames_the_body_and_sends_the_trailer(monkeypatch):
    monkeypatch.setattr(s3fast, 'STREAM_CHUNK', 7)
    data = b'0123456789abcdefghij'  # 7 + 7 + 6
    sha = hashlib.sha256(data).hexdigest()
    server = ScriptedServer([b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-amz-checksum-sha256: %s\r\n\r\n'
                             % s3fast.b64_of_hex(sha).encode()])
    client = _client(server)

    class Trickle(object):  # short reads: the framing must still announce exactly what is sent
        def __init__(self):
            self.raw = io.BytesIO(data)

        def read(self, n=-1):
            return self.raw.read(min(n, 3))

    assert client.put_stream('b', 'k', Trickle(), len(data)) == (None, sha, True)
    head, _sep, body = server.requests[0].partition(b'\r\n\r\n')
    assert b'Content-Length: %d' % s3fast.chunked_length(len(data), 7) in head
    assert b'content-type: application/octet-stream' in head  # signed: a server need not sniff the body
    assert len(body) == s3fast.chunked_length(len(data), 7)
    assert body == (b'7\r\n0123456\r\n7\r\n789abcd\r\n6\r\nefghij\r\n0\r\nx-amz-checksum-sha256:'
                    + s3fast.b64_of_hex(sha).encode() + b'\r\n\r\n')
    client.close()
    server.close()


def test_streamed_put_with_the_source_md5_sends_the_body_as_it_is(monkeypatch):
    monkeypatch.setattr(s3fast, 'STREAM_CHUNK', 7)
    data = b'0123456789abcdefghij'
    md5 = hashlib.md5(data).hexdigest()
    server = ScriptedServer([b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "%s"\r\n\r\n' % md5.encode()])
    client = _client(server)
    answer = client.put_stream('b', 'k', io.BytesIO(data), len(data), md5)
    assert answer == (md5, hashlib.sha256(data).hexdigest(), True)
    head, _sep, body = server.requests[0].partition(b'\r\n\r\n')
    assert body == data  # no aws-chunked framing, no trailer
    assert b'Content-Length: %d' % len(data) in head
    # The server's ETag checks the write: no Content-MD5, which SeaweedFS would hash the bytes again for.
    assert b'content-md5' not in head.lower()
    assert b'x-amz-content-sha256: UNSIGNED-PAYLOAD' in head and b'aws-chunked' not in head
    assert b'content-type: application/octet-stream' in head
    client.close()
    server.close()
    # Stored, but the server's MD5 of it is another (bytes changed on the way, or ETags that are not MD5s):
    # told apart, with the version to remove.
    server = ScriptedServer([b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "%s"\r\nx-amz-version-id: v7\r\n\r\n'
                             % (b'0' * 32)])
    client = _client(server)
    with pytest.raises(s3fast.OtherBytesStored) as caught:
        client.put_stream('b', 'k', io.BytesIO(data), len(data), md5)
    assert (caught.value.etag, caught.value.version_id) == ('0' * 32, 'v7')
    client.close()
    server.close()


def test_streamed_put_refused_breaks_the_stream():
    error = b'<Error><Code>BadDigest</Code></Error>'
    refused = b'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s' % (len(error), error)
    for md5 in (hashlib.md5(b'abc').hexdigest(), None):  # the stream is spent: the engine copies again
        server = ScriptedServer([refused])
        client = _client(server)
        with pytest.raises(s3fast.StreamBroken):
            client.put_stream('b', 'k', io.BytesIO(b'abc'), 3, md5)
        client.close()
        server.close()


@pytest.mark.parametrize('etag, md5', [
    ('"9E107D9D372BB6826BD81D3542A419D6"', '9e107d9d372bb6826bd81d3542a419d6'),
    ('9e107d9d372bb6826bd81d3542a419d6', '9e107d9d372bb6826bd81d3542a419d6'),
    ('"9e107d9d372bb6826bd81d3542a419d6-3"', None),  # multipart
    ('"abc"', None), ('', None), (None, None), ('z' * 32, None),
])
def test_plain_md5(etag, md5):
    assert s3fast.plain_md5(etag) == md5


def test_streamed_put_goes_over_a_warm_connection_that_is_still_open(monkeypatch):
    ok = b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'
    server = ScriptedServer([ok, ok])
    client = _client(server)
    assert client.head_bucket('b') is True
    client.put_stream('b', 'k', io.BytesIO(b'abc'), 3)
    assert server.connections == 1  # the kept-alive connection carried the stream
    client.close()
    server.close()
    # The server closed the idle connection: the stream goes over a new one, nothing of it lost.
    server = ScriptedServer([(ok, CLOSE), ok])
    client = _client(server)
    assert client.head_bucket('b') is True
    time.sleep(0.2)  # the server's FIN arrives
    assert client.put_stream('b', 'k', io.BytesIO(b'abc'), 3)[1] == hashlib.sha256(b'abc').hexdigest()
    assert server.connections == 2
    assert server.requests[-1].partition(b'\r\n\r\n')[2].startswith(b'3\r\nabc\r\n0\r\n')
    client.close()
    server.close()
    # Idle longer than a stream may risk: a new connection; the idle one stays for short requests.
    monkeypatch.setattr(s3fast, 'STREAM_REUSE_IDLE', 0.0)
    server = ScriptedServer([ok, ok, ok])
    client = _client(server)
    assert client.head_bucket('b') is True
    time.sleep(0.05)
    client.put_stream('b', 'k', io.BytesIO(b'abc'), 3)
    assert server.connections == 2
    assert len(client._idle) == 2
    assert client.head_bucket('b') is True
    assert server.connections == 2
    client.close()
    server.close()


def test_streamed_put_of_a_short_stream_stops(monkeypatch):
    server = ScriptedServer([b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'])
    client = _client(server)
    with pytest.raises(s3fast.ShortStream) as caught:
        client.put_stream('b', 'k', io.BytesIO(b'abc'), 10)
    assert (caught.value.got, caught.value.size) == (3, 10)
    client.close()
    server.close()


def test_proxied_endpoints_are_left_to_boto3(monkeypatch):
    for name in ('http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'all_proxy',
                 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)
    assert s3fast.proxied('http://127.0.0.1:9000') is False
    monkeypatch.setenv('http_proxy', 'http://proxy.example:3128')
    assert s3fast.proxied('http://s3.internal:9000') is True
    assert s3fast.proxied('https://s3.internal') is False  # only plain HTTP goes through that proxy
    monkeypatch.setenv('no_proxy', 's3.internal,127.0.0.1')
    assert s3fast.proxied('http://s3.internal:9000') is False
    assert s3fast.proxied('http://other.internal:9000') is True


def _get_answer(data, etag=None):
    return b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: "%s"\r\n\r\n%s' % (
        len(data), (etag or hashlib.md5(data).hexdigest()).encode(), data)


class _CountedSplice(object):
    """os.splice, counted; after ``refuse_after`` calls, it refuses ``refuse`` (a socket or a pipe as the
    source) as a kernel that cannot splice it does."""

    def __init__(self, refuse_after=None, refuse='socket'):
        self.calls = 0
        self.refuse_after = refuse_after
        self.refuse = refuse
        self._splice = s3fast.os.splice

    def __call__(self, source, *args, **kwargs):
        from_socket = stat.S_ISSOCK(os.fstat(source).st_mode)
        if self.refuse_after is not None and self.calls >= self.refuse_after and \
                from_socket == (self.refuse == 'socket'):
            raise OSError(errno.EINVAL, 'Invalid argument')
        self.calls += 1
        return self._splice(source, *args, **kwargs)


@pytest.mark.skipif(not s3fast.SPLICE, reason='this kernel or Python cannot splice')
@pytest.mark.parametrize('md5, pipe_size', [(True, s3fast.SPLICE_PIPE), (False, s3fast.SPLICE_PIPE), (True, 4096)])
def test_streamed_copy_between_plain_sockets_moves_the_bytes_in_the_kernel(monkeypatch, md5, pipe_size):
    monkeypatch.setattr(s3fast, 'STREAM_CHUNK', 256 * 1024 + 3)  # pieces and chunks that do not line up
    monkeypatch.setattr(s3fast, 'SPLICE_PIPE', pipe_size)  # 4096: the pipe fills up before each piece is in
    splice = _CountedSplice()
    monkeypatch.setattr(s3fast.os, 'splice', splice)
    data = os.urandom(3 * 1024 * 1024) + b'tail'  # 3 MiB + 4 (random: pieces out of order would show); the
    # head's read takes some of it
    sha, source_md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    source = ScriptedServer([_get_answer(data), _get_answer(b'next')])
    dest = ScriptedServer([b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "%s"\r\nx-amz-checksum-sha256: %s\r\n\r\n'
                           % (source_md5.encode(), s3fast.b64_of_hex(sha).encode())])
    reader, writer = _client(source), _client(dest)
    body = reader.get('b', 'k')
    stream = codec.HashingReader(body, md5=True)
    answer = writer.put_stream('b', 'k', stream, len(data), source_md5 if md5 else None)
    assert answer == (source_md5, sha, True)
    assert splice.calls > 0  # the bytes went through the kernel, not through Python
    # What was moved is what was hashed and counted, and the server got it byte for byte.
    assert (stream.size, stream.hexdigest(), stream.md5_hexdigest()) == (len(data), sha, source_md5)
    head, _sep, sent = dest.requests[0].partition(b'\r\n\r\n')
    if md5:
        assert sent == data
    else:
        chunk = s3fast.STREAM_CHUNK
        framed = b''.join(b'%x\r\n%s\r\n' % (len(data[i:i + chunk]), data[i:i + chunk])
                          for i in range(0, len(data), chunk))
        assert sent == framed + b'0\r\nx-amz-checksum-sha256:' + s3fast.b64_of_hex(sha).encode() + b'\r\n\r\n'
    # The source's body was read to its end: its connection serves the next request.
    assert reader.get('b', 'next').read() == b'next' and source.connections == 1
    for closing in (reader, writer, source, dest):
        closing.close()


@pytest.mark.skipif(not s3fast.SPLICE, reason='this kernel or Python cannot splice')
@pytest.mark.parametrize('refuse_after, refuse', [(0, 'socket'), (3, 'socket'), (3, 'pipe')])
def test_a_kernel_that_cannot_splice_leaves_the_copy_to_python(monkeypatch, refuse_after, refuse):
    monkeypatch.setattr(s3fast, 'SPLICE', True)  # restored after the test: the refusal turns it off
    monkeypatch.setattr(s3fast.os, 'splice', _CountedSplice(refuse_after, refuse))
    data = os.urandom(2 * 1024 * 1024)
    md5 = hashlib.md5(data).hexdigest()
    source = ScriptedServer([_get_answer(data)])
    dest = ScriptedServer([b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "%s"\r\n\r\n' % md5.encode()])
    reader, writer = _client(source), _client(dest)
    stream = codec.HashingReader(reader.get('b', 'k'))
    assert writer.put_stream('b', 'k', stream, len(data), md5) == (md5, hashlib.sha256(data).hexdigest(), True)
    assert dest.requests[0].partition(b'\r\n\r\n')[2] == data and stream.size == len(data)
    assert s3fast.SPLICE is False  # the next streams are read and sent by Python from the start
    for closing in (reader, writer, source, dest):
        closing.close()


@pytest.mark.skipif(not s3fast.SPLICE, reason='this kernel or Python cannot splice')
def test_a_source_that_breaks_off_during_a_spliced_copy_fails_as_the_source(monkeypatch):
    data = b'x' * (2 * 1024 * 1024)
    md5 = hashlib.md5(data).hexdigest()
    cut = b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: "%s"\r\n\r\n%s' % (len(data), md5.encode(), data[:700000])
    source = ScriptedServer([(cut, CLOSE)])
    dest = ScriptedServer([b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'])
    reader, writer = _client(source), _client(dest)
    body = reader.get('b', 'k')
    mapped = []
    monkeypatch.setattr(body, 'splice_source',
                        lambda real=body.splice_source: real(map_error=lambda exc: mapped.append(exc) or 'mapped'))
    with pytest.raises(s3fast.SourceFailed) as caught:
        writer.put_stream('b', 'k', codec.HashingReader(body), len(data), md5)
    assert caught.value.error == 'mapped' and isinstance(mapped[0], ConnectionError)
    body.close()
    for closing in (reader, writer, source, dest):
        closing.close()


def test_tls_sockets_are_not_spliced():
    class Conn(object):  # the bytes of a TLS socket on the wire are not the body's
        sock = ssl.create_default_context().wrap_socket(socket.socket(), server_hostname='example.com',
                                                        do_handshake_on_connect=False)

    class Stream(object):
        def splice_source(self):
            raise AssertionError('asked for a splice source over a TLS socket')

    assert s3fast._splice_source(Stream(), Conn()) is None
    Conn.sock.close()
