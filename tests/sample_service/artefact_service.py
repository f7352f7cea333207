# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A sample artefact service: what the cutover roles stop, reconfigure, start and smoke-test.

It stands in for Anchore's catalog or the StellaOps Scanner WebService: it
reads its object store from the application's own config file, reads
artefacts through the collection's drivers, and serves them over HTTP.
Python standard library plus the collection's ``module_utils``.

Usage::

    artefact_service.py --config FILE --port N [--app anchore|stellaops]
                        [--db-connect DSN | --db-connect-file FILE] [--bind 127.0.0.1]
                        [--refuse-driver DRIVER]

Endpoints::

    GET /health                                   200 {"status": "ok", "app", "driver", "store", "config", "pid"}
    GET /health?deep=1                            also checks the store is reachable (503 if not)
    GET /api/v1/scanner/sboms/<digest>            objects layout: key scanner/layers/<digest>/sbom.cdx.json,
                                                  logical content (decoded per the spec's compression)
    GET /api/v1/anchore/<user>/<bucket>/<id>      Anchore layout: archive_metadata pointer, then the store
                                                  (bucket analysis_archive reads the analysis archive store)

At start-up the store is checked (as Anchore's catalog does); a store that
cannot be reached makes the process exit with status 2, so a supervisor
marks it failed. ``--refuse-driver`` simulates a host that cannot reach a
backend of that driver (the failure the rollback tests inject).
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import re
import signal
import sys
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from ansible_collections.storeshift.objstore.plugins.module_utils.codec import decode_stream
from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ObjectMissingError, ObjstoreError
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import load_spec_from_config
from ansible_collections.storeshift.objstore.plugins.module_utils.store import open_store

SBOM_KEY = 'scanner/layers/%s/sbom.cdx.json'
_DIGEST = re.compile(r'^[A-Za-z0-9:._-]+$')


def log(message):
    sys.stderr.write('%s artefact_service[%d]: %s\n' % (time.strftime('%Y-%m-%dT%H:%M:%S'), os.getpid(), message))
    sys.stderr.flush()


def detect_app(path):
    with open(path) as handle:
        text = handle.read()
    if 'SCANNER__ARTIFACTSTORE__' in text.upper() or re.search(r'^scanner\s*:', text, re.M):
        return 'stellaops'
    return 'anchore'


def _read_all(stream):
    chunks = []
    try:
        while True:
            chunk = stream.read(1024 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        close = getattr(stream, 'close', None)
        if close:
            close()
    return b''.join(chunks)


class Service(object):
    def __init__(self, args):
        self.args = args
        self.app = args.app or detect_app(args.config)
        section = 'artifact_store' if self.app == 'stellaops' else 'object_store'
        self.spec = load_spec_from_config(args.config, section)
        if self.spec.driver in (args.refuse_driver or []):
            raise ObjstoreError('cannot reach the %s backend (%s): refused by --refuse-driver'
                                % (self.spec.driver, self.spec.describe()), step='connect')
        self.store = open_store(self.spec, db_connect=args.db_connect)
        self.store.check_access()
        self.archive_spec = None
        self.archive_store = None
        if self.app == 'anchore':
            self.archive_spec = load_spec_from_config(args.config, 'analysis_archive')
            if self.archive_spec.identity() == self.spec.identity():
                self.archive_spec, self.archive_store = self.spec, self.store
            else:
                if self.archive_spec.driver in (args.refuse_driver or []):
                    raise ObjstoreError('cannot reach the %s backend (%s): refused by --refuse-driver'
                                        % (self.archive_spec.driver, self.archive_spec.describe()), step='connect')
                self.archive_store = open_store(self.archive_spec, db_connect=args.db_connect)
                self.archive_store.check_access()
        self._catalog = None
        self._lock = threading.Lock()

    def health(self, deep=False):
        body = {'status': 'ok', 'app': self.app, 'driver': self.spec.driver, 'store': self.spec.describe(),
                'config': self.args.config, 'pid': os.getpid()}
        if self.archive_spec is not None and self.archive_spec is not self.spec:
            body['analysis_archive'] = self.archive_spec.describe()
        if deep:
            self.store.check_access()
            if self.archive_store is not None and self.archive_store is not self.store:
                self.archive_store.check_access()
        return body

    def sbom(self, digest):
        raw = self.store.open(SBOM_KEY % digest)
        return _read_all(decode_stream(raw, self.spec.compression_enabled))

    def catalog(self):
        with self._lock:
            if self._catalog is None:
                from ansible_collections.storeshift.objstore.plugins.module_utils.anchore import AnchoreCatalog
                if not self.args.db_connect:
                    raise ObjstoreError('the Anchore endpoint needs --db-connect (archive_metadata)', step='config')
                self._catalog = AnchoreCatalog(self.args.db_connect)
            return self._catalog

    def anchore_document(self, user, bucket, archive_id):
        from ansible_collections.storeshift.objstore.plugins.module_utils.anchore import open_for_anchore
        doc = self.catalog().get_document(user, bucket, archive_id)
        if doc is None:
            raise ObjectMissingError('no archive_metadata row for %s/%s/%s' % (user, bucket, archive_id),
                                     step='read', key='%s/%s/%s' % (user, bucket, archive_id))
        store = self.archive_store if bucket == 'analysis_archive' and self.archive_store is not None else self.store
        data = open_for_anchore(store, doc)
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        if isinstance(data, str):
            return data.encode('utf-8')
        return _read_all(data)


def make_handler(service):
    class Handler(BaseHTTPRequestHandler):
        server_version = 'artefact-service/0.1'
        protocol_version = 'HTTP/1.1'

        def log_message(self, fmt, *args):  # noqa: D401 - quieter access log
            log('%s %s' % (self.address_string(), fmt % args))

        def _send(self, status, body, content_type='application/json'):
            if not isinstance(body, (bytes, bytearray)):
                body = (json.dumps(body, sort_keys=True) + '\n').encode('utf-8')
            self.send_response(status)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            if self.command != 'HEAD':
                self.wfile.write(body)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split('/') if p]
            query = parse_qs(url.query)
            try:
                if parts == ['health']:
                    deep = query.get('deep', ['0'])[0] not in ('0', 'false', '')
                    return self._send(200, service.health(deep))
                if len(parts) == 5 and parts[:4] == ['api', 'v1', 'scanner', 'sboms'] and _DIGEST.match(parts[4]):
                    return self._send(200, service.sbom(parts[4]), 'application/vnd.cyclonedx+json')
                if len(parts) >= 6 and parts[:3] == ['api', 'v1', 'anchore']:
                    user, bucket, archive_id = parts[3], parts[4], '/'.join(parts[5:])
                    return self._send(200, service.anchore_document(user, bucket, archive_id),
                                      'application/octet-stream')
                return self._send(404, {'error': 'no such endpoint'})
            except ObjectMissingError as exc:
                return self._send(404, {'error': str(exc)})
            except ObjstoreError as exc:
                log('error: %s' % exc)
                return self._send(503, {'error': str(exc), 'cause': getattr(exc, 'cause', None)})
            except Exception as exc:  # pylint: disable=broad-except
                log('internal error: %r' % exc)
                return self._send(500, {'error': 'internal error: %s' % type(exc).__name__})

    return Handler


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--config', required=True, help='application config file (YAML or environment file)')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--bind', default='127.0.0.1')
    parser.add_argument('--app', choices=['anchore', 'stellaops'], help='default: detected from the file')
    parser.add_argument('--db-connect', default=os.environ.get('ARTEFACT_SERVICE_DB_CONNECT'),
                        help='PostgreSQL DSN (db/db2 drivers, Anchore archive_metadata)')
    parser.add_argument('--db-connect-file', help='read the DSN from this file (keeps it off the command line)')
    parser.add_argument('--refuse-driver', action='append', default=[],
                        help='test hook: behave as if backends of this driver were unreachable')
    parser.add_argument('--pid-file')
    args = parser.parse_args(argv)
    if args.db_connect_file:
        with open(args.db_connect_file) as handle:
            args.db_connect = handle.read().strip()
    try:
        service = Service(args)
    except ObjstoreError as exc:
        log('cannot start: %s' % exc)
        return 2
    httpd = ThreadingHTTPServer((args.bind, args.port), make_handler(service))
    httpd.daemon_threads = True
    if args.pid_file:
        with open(args.pid_file, 'w') as handle:
            handle.write('%d\n' % os.getpid())

    def stop(signum, frame):
        log('signal %d: stopping' % signum)
        threading.Thread(target=httpd.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log('serving %s (%s) on %s:%d' % (service.app, service.spec.describe(), args.bind, args.port))
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
        if args.pid_file and os.path.exists(args.pid_file):
            os.unlink(args.pid_file)
    return 0


if __name__ == '__main__':
    sys.exit(main())
