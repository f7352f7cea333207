# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's one exception hierarchy.

Every driver maps its SDK's errors (botocore, requests, psycopg2, OSError)
to one of these once, with a plain-words ``cause``; modules turn them into
``fail_json`` in ``main()`` only. Messages never contain secrets: drivers
build them from the endpoint, bucket and key, never from the spec's
credentials, and ``scrub`` removes any secret value that slipped through.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ObjstoreError(Exception):
    """Base class. ``step`` is what we were doing, ``cause`` why it failed."""

    kind = 'error'

    def __init__(self, message, step=None, cause=None, key=None):
        super(ObjstoreError, self).__init__(message)
        self.message = message
        self.step = step
        self.cause = cause or self.kind
        self.key = key

    def __str__(self):
        return self.message

    def to_dict(self):
        result = {'msg': self.message, 'cause': self.cause}
        if self.step:
            result['step'] = self.step
        if self.key is not None:
            result['key'] = self.key
        return result


class ConfigError(ObjstoreError):
    """Bad input: a malformed spec, config file, section or parameter."""

    kind = 'invalid configuration'


class ConnectError(ObjstoreError):
    """The server could not be reached (refused, DNS, timeout, TLS)."""

    kind = 'connection failed'


class AuthError(ObjstoreError):
    """Credentials were rejected or missing."""

    kind = 'bad credentials'


class AccessDeniedError(ObjstoreError):
    """Credentials were accepted but the operation is not allowed."""

    kind = 'permission denied'


class BucketMissingError(ObjstoreError):
    """The bucket (or table, or directory) holding the objects does not exist."""

    kind = 'missing bucket'


class ObjectMissingError(ObjstoreError):
    """A single object does not exist."""

    kind = 'object not found'


class RetentionError(ObjstoreError):
    """The server refused because an object is immutable or retained."""

    kind = 'object retained'


class IntegrityError(ObjstoreError):
    """Data read does not match what was recorded or written."""

    kind = 'integrity check failed'


class SpaceError(ObjstoreError):
    """The destination ran out of space."""

    kind = 'no space left'


class TransientError(ObjstoreError):
    """Worth retrying: timeouts, resets, 5xx, SlowDown."""

    kind = 'transient server error'


class LedgerError(ObjstoreError):
    """The ledger database failed or refused (locked by another run)."""

    kind = 'ledger error'


class ConflictError(LedgerError):
    """Another live run holds the migration."""

    kind = 'migration already running'


class MissingLibraryError(ObjstoreError):
    """A Python library a driver needs is not installed on the target."""

    kind = 'missing library'

    def __init__(self, library, message=None):
        super(MissingLibraryError, self).__init__(
            message or 'the Python library %s is required on the target host' % library)
        self.library = library


# Texts of name-resolution failures from socket, urllib3 and botocore.
DNS_MARKERS = ('Name or service not known', 'nodename nor servname', 'getaddrinfo failed',
               'Temporary failure in name resolution', 'No address associated with hostname',
               'Failed to resolve', 'NameResolutionError')


def exception_chain(exc):
    """``exc`` and every exception it wraps: cause, context, urllib3's ``reason``, exceptions in
    ``args`` and botocore's ``error`` keyword. Drivers classify a failure by what is in it."""
    seen = []
    todo = [exc]
    while todo and len(seen) < 16:
        item = todo.pop(0)
        if item is None or not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.append(getattr(item, '__cause__', None))
        todo.append(getattr(item, '__context__', None))
        todo.append(getattr(item, 'reason', None))
        todo.extend(a for a in getattr(item, 'args', ()) if isinstance(a, BaseException))
        kwargs = getattr(item, 'kwargs', None)
        if isinstance(kwargs, dict):
            todo.append(kwargs.get('error'))
    return seen


def is_transient(exc):
    return isinstance(exc, TransientError)


def scrub(text, secrets):
    """Replace every secret value in ``text`` by a mask."""
    if text is None:
        return text
    text = str(text)
    for secret in secrets or ():
        if secret and isinstance(secret, str) and len(secret) >= 3:
            text = text.replace(secret, '********')
    return text
