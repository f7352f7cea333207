# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each form of S3 PUT costs the server: CPU seconds of the SeaweedFS process per form.

    .venv/bin/python bench/put_cost.py                  # 20 x 32 MiB per form, 3 rounds (stack up)
    .venv/bin/python bench/put_cost.py --count 2 --size-mib 1 --rounds 1   # a quick look

On this machine the S3 servers share the two cores with the copier, so a copy of large objects is
bound by the CPU of the whole machine: what the server spends per byte counts as much as what the
client spends. The forms, all through the collection's own fast-path client (``s3fast``) to server B:

* ``unsigned``: ``UNSIGNED-PAYLOAD``, no checksum header (the engine's streamed PUT of a single-part S3
  source object, whose write the server's ETag proves against the source's MD5);
* ``unsigned+content-md5``: ``UNSIGNED-PAYLOAD`` with ``Content-MD5`` (rclone's single-part PUT, taking
  the MD5 from the source's ETag; here the client computes it);
* ``signed+sha256-header``: the payload's SHA-256 signed and sent as ``x-amz-checksum-sha256`` (needs
  the whole object before sending: the engine's form up to the multipart threshold);
* ``aws-chunked+sha256-trailer``: the engine's streamed PUT when the source has no plain MD5;
* ``multipart-8MiB+sha256``: 8 MiB parts, each with its SHA-256 header.

Forms alternate within each round; the table shows the median of the rounds. Every object is written
under a fresh key (no overwrite work on the server) and the bucket is dropped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import time
from xml.etree import ElementTree

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.storeshift.objstore.plugins.module_utils import s3fast  # noqa: E402  pylint: disable=wrong-import-position


def _checked(answer):
    status, _headers, body = answer
    if status != 200:
        raise SystemExit('put_cost: the server answered %d: %s' % (status, body[:300]))
    return answer


class Forms(object):
    def __init__(self, client, bucket):
        self.client = client
        self.bucket = bucket

    def _put(self, key, data, payload_hash, extra=None, query=''):
        path = self.client.path(self.bucket, key)
        headers = self.client._headers('PUT', path, payload_hash, extra, query=query)  # pylint: disable=protected-access
        target = path + ('?' + query if query else '')
        return _checked(self.client._simple('PUT', target, headers, data))  # pylint: disable=protected-access

    def unsigned(self, key, data):
        self._put(key, data, 'UNSIGNED-PAYLOAD')

    def unsigned_content_md5(self, key, data):
        # The engine's streamed PUT with the source's MD5; here the MD5 is computed, the engine takes the ETag.
        self.client.put_stream(self.bucket, key, io.BytesIO(data), len(data), hashlib.md5(data).hexdigest())

    def signed_sha256_header(self, key, data):
        self.client.put(self.bucket, key, data)

    def chunked_sha256_trailer(self, key, data):
        self.client.put_stream(self.bucket, key, io.BytesIO(data), len(data))

    def multipart_sha256(self, key, data, part=8 * bench.MIB):
        client, path = self.client, self.client.path(self.bucket, key)
        headers = client._headers('POST', path, s3fast.EMPTY_SHA256, {'x-amz-checksum-algorithm': 'SHA256'},  # pylint: disable=protected-access
                                  query='uploads=')
        _status, _headers, body = _checked(client._simple('POST', path + '?uploads', headers))  # pylint: disable=protected-access
        upload_id = [e.text for e in ElementTree.fromstring(body).iter() if e.tag.endswith('UploadId')][0]
        parts = []
        for number, offset in enumerate(range(0, len(data), part), 1):
            chunk = data[offset:offset + part]
            digest = s3fast.b64_digest(hashlib.sha256(chunk))
            query = 'partNumber=%d&uploadId=%s' % (number, s3fast.quote(upload_id, safe='-_.~'))
            _status, answer, _body = self._put(key, chunk, 'UNSIGNED-PAYLOAD', {'x-amz-checksum-sha256': digest},
                                               query=query)
            parts.append((number, answer['etag'], digest))
        document = ('<CompleteMultipartUpload>%s</CompleteMultipartUpload>' % ''.join(
            '<Part><PartNumber>%d</PartNumber><ETag>%s</ETag><ChecksumSHA256>%s</ChecksumSHA256></Part>' % p
            for p in parts)).encode('ascii')
        query = 'uploadId=%s' % s3fast.quote(upload_id, safe='-_.~')
        headers = client._headers('POST', path, hashlib.sha256(document).hexdigest(), query=query)  # pylint: disable=protected-access
        _checked(client._simple('POST', path + '?' + query, headers, document))  # pylint: disable=protected-access


FORMS = (('unsigned', 'unsigned'), ('unsigned+content-md5', 'unsigned_content_md5'),
         ('signed+sha256-header', 'signed_sha256_header'), ('aws-chunked+sha256-trailer', 'chunked_sha256_trailer'),
         ('multipart-8MiB+sha256', 'multipart_sha256'))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--count', type=int, default=20, help='objects per form and round (default 20)')
    parser.add_argument('--size-mib', type=int, default=32, help='object size in MiB (default 32)')
    parser.add_argument('--rounds', type=int, default=3, help='rounds (default 3)')
    args = parser.parse_args(argv)
    stack = bench.Stack(bench.read_env())
    s3 = stack.s3['b']
    client = s3fast.FastS3(s3['url'], s3['region'], s3['access_key'], s3['secret_key'])
    bucket = bench.unique('put-cost')
    stack.client('b').create_bucket(Bucket=bucket)
    forms = Forms(client, bucket)
    size = args.size_mib * bench.MIB
    data = [os.urandom(size), os.urandom(size)]
    results = dict((label, {'server': [], 'client': []}) for label, _name in FORMS)
    try:
        for round_number in range(args.rounds):
            for label, name in FORMS:
                put = getattr(forms, name)
                server_before, client_before = bench.server_cpu_seconds(['s3b']), time.process_time()
                for index in range(args.count):
                    put('r%d/%s/%04d' % (round_number, name, index), data[index % 2])
                results[label]['server'].append(bench.server_cpu_seconds(['s3b']) - server_before)
                results[label]['client'].append(time.process_time() - client_before)
                bench.say('round %d %-28s server cpu %6.2f s  client cpu %5.2f s' % (
                    round_number + 1, label, results[label]['server'][-1], results[label]['client'][-1]))
    finally:
        client.close()
        bench.s3_drop(stack, 'b', bucket)
    total = args.count * size / bench.MIB
    base = statistics.median(results['unsigned']['server'])
    lines = ['| PUT form (%d x %d MiB per round) | server CPU s (median) | over unsigned | client CPU s |'
             % (args.count, args.size_mib), '|---|---|---|---|']
    for label, _name in FORMS:
        server = statistics.median(results[label]['server'])
        lines.append('| %s | %.2f | %+.2f (%.2f s/GiB) | %.2f |' % (
            label, server, server - base, (server - base) * 1024 / total,
            statistics.median(results[label]['client'])))
    sys.stdout.write('\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
