# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A directory tree as a store (Anchore's ``localfs`` driver).

Key ``a/b/c`` is the file ``<archive_data_dir>/a/b/c``. Writes are atomic:
the bytes go to a temporary file ``.storeshift-tmp-*`` in the target
directory, are fsynced, renamed over the target with ``os.replace`` and the
directory is fsynced, so a reader (or a crash) never sees a partial object.
Listings skip temporary files and come out sorted by key.

When running as root in a tree owned by another user (Anchore's service
user), new files and directories are given to that user so the
application can still read, replace and delete them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat as stat_mod
import tempfile
import threading

from ansible_collections.storeshift.objstore.plugins.module_utils import errors
from ansible_collections.storeshift.objstore.plugins.module_utils.store import ObjectInfo, ObjectStore

CHUNK = 1024 * 1024
TMP_PREFIX = '.storeshift-tmp-'

_UMASK_LOCK = threading.Lock()
_UMASK = []


def _umask():
    """The process umask, read without changing it where possible."""
    with _UMASK_LOCK:
        if not _UMASK:
            value = None
            try:
                with open('/proc/self/status') as handle:
                    for line in handle:
                        if line.startswith('Umask:'):
                            value = int(line.split()[1], 8)
                            break
            except (IOError, OSError, ValueError):
                value = None
            if value is None:
                value = os.umask(0o022)
                os.umask(value)
            _UMASK.append(value)
        return _UMASK[0]


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot fsync a directory; the rename is still atomic.
        if exc.errno not in (errno.EINVAL, errno.EBADF, getattr(errno, 'ENOTSUP', errno.EINVAL)):
            raise
    finally:
        os.close(fd)


def _sort_name(entry):
    # Sorting "name/" for directories makes the depth-first walk yield keys
    # in plain string order ("a-c" < "a/b" because "-" < "/").
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        is_dir = False
    return entry.name + '/' if is_dir else entry.name


class LocalfsStore(ObjectStore):
    """Objects as files under ``archive_data_dir``."""

    driver = 'localfs'
    supports_retention = False

    def __init__(self, spec):
        super(LocalfsStore, self).__init__(spec)
        root = spec.config.get('archive_data_dir')
        if not root or not os.path.isabs(root):
            raise errors.ConfigError('localfs archive_data_dir must be an absolute path, got %s' % root, step='config')
        self.root = os.path.normpath(root)
        self._owner = None

    # -- helpers -----------------------------------------------------------
    def _error(self, exc, action, path, key=None):
        code = getattr(exc, 'errno', None)
        reason = getattr(exc, 'strerror', None) or str(exc)
        step = 'write' if action == 'writing' else ('read' if action == 'reading' else action)
        if code in (errno.ENOSPC, getattr(errno, 'EDQUOT', errno.ENOSPC)):
            return errors.SpaceError('no space left on device %s %s' % (action, path), step=step, key=key)
        if code in (errno.EACCES, errno.EPERM):
            return errors.AccessDeniedError('permission denied %s %s' % (action, path), step=step, key=key)
        if code == errno.EROFS:
            return errors.AccessDeniedError('read-only file system %s %s' % (action, path), step=step, key=key)
        if code in (errno.EIO,):
            return errors.IntegrityError('I/O error %s %s' % (action, path), step=step, key=key)
        return errors.ObjstoreError('%s %s failed: %s' % (action, path, reason), step=step, key=key)

    def _check_key(self, key, allow_empty=False, what='key'):
        if not isinstance(key, str):
            raise errors.ConfigError('localfs %s must be a string, got %r' % (what, key), step='key', key=key)
        if not key:
            if allow_empty:
                return []
            raise errors.ConfigError('localfs %s is empty' % what, step='key', key=key)
        if key.startswith('/') or '\\' in key and os.sep == '\\':
            raise errors.ConfigError("localfs %s '%s' is absolute: keys are relative to archive_data_dir"
                                     % (what, key), step='key', key=key)
        if '\x00' in key:
            raise errors.ConfigError("localfs %s '%s' contains a NUL byte" % (what, key), step='key', key=key)
        parts = key.split('/')
        if allow_empty and parts[-1] == '':
            parts = parts[:-1]
        for part in parts:
            if part in ('', '.', '..'):
                raise errors.ConfigError("localfs %s '%s' has an empty, '.' or '..' path segment" % (what, key),
                                         step='key', key=key)
        if parts and parts[-1].startswith(TMP_PREFIX) and what == 'key':
            raise errors.ConfigError("localfs key '%s' uses the reserved name prefix %s" % (key, TMP_PREFIX),
                                     step='key', key=key)
        return parts

    def path_for(self, key):
        """The file holding ``key``."""
        return os.path.join(self.root, *self._check_key(key))

    def _target_owner(self):
        """(uid, gid) to give new files, or None to keep ours."""
        if self._owner is None:
            owner = False
            if hasattr(os, 'geteuid') and os.geteuid() == 0:
                try:
                    info = os.stat(self.root)
                    if info.st_uid != 0 or info.st_gid != 0:
                        owner = (info.st_uid, info.st_gid)
                except OSError:
                    owner = False
            self._owner = owner
        return self._owner or None

    def _chown(self, path_or_fd):
        owner = self._target_owner()
        if owner:
            if isinstance(path_or_fd, int):
                os.fchown(path_or_fd, owner[0], owner[1])
            else:
                os.chown(path_or_fd, owner[0], owner[1])

    def _makedirs(self, directory, key):
        """Create ``directory`` below the root, fsyncing each new entry's parent."""
        if os.path.isdir(directory):
            return
        rel = os.path.relpath(directory, self.root)
        current = self.root
        if not os.path.isdir(current):
            raise errors.BucketMissingError('localfs directory %s does not exist (archive_data_dir)' % self.root,
                                            step='write', key=key)
        for part in rel.split(os.sep):
            parent, current = current, os.path.join(current, part)
            try:
                os.mkdir(current)
            except OSError as exc:
                if exc.errno == errno.EEXIST and os.path.isdir(current):
                    continue
                if exc.errno in (errno.EEXIST, errno.ENOTDIR):
                    raise errors.ObjstoreError('cannot create directory %s for key %s: a file is in the way'
                                               % (current, key), step='write', key=key)
                raise self._error(exc, 'creating directory', current, key)
            try:
                self._chown(current)
                _fsync_dir(parent)
            except OSError as exc:
                raise self._error(exc, 'creating directory', current, key)

    # -- interface -----------------------------------------------------------
    def check_access(self, create_bucket=False):
        root = self.root
        if not os.path.exists(root):
            if not create_bucket:
                raise errors.BucketMissingError('localfs directory %s does not exist (archive_data_dir); create it '
                                                'or set create_bucket' % root, step='check_access')
            try:
                os.makedirs(root)
            except OSError as exc:
                if not (exc.errno == errno.EEXIST and os.path.isdir(root)):
                    raise self._error(exc, 'creating directory', root)
        if not os.path.isdir(root):
            raise errors.ConfigError('localfs archive_data_dir %s is not a directory' % root, step='check_access')
        try:
            fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX + 'probe-', dir=root)
        except OSError as exc:
            raise self._error(exc, 'writing', root)
        try:
            os.close(fd)
        finally:
            try:
                os.unlink(probe)
            except OSError:
                pass

    def list(self, prefix=''):
        parts = self._check_key(prefix, allow_empty=True, what='prefix')
        if prefix and not prefix.endswith('/'):
            dir_parts, name_prefix = parts[:-1], parts[-1]
        else:
            dir_parts, name_prefix = parts, ''
        if not os.path.isdir(self.root):
            raise errors.BucketMissingError('localfs directory %s does not exist (archive_data_dir)' % self.root,
                                            step='list')
        start = os.path.join(self.root, *dir_parts) if dir_parts else self.root
        key_prefix = ''.join(p + '/' for p in dir_parts)
        if not os.path.isdir(start):
            return
        yield from self._walk(start, key_prefix, name_prefix)

    def _walk(self, directory, key_prefix, name_prefix=''):
        try:
            with os.scandir(directory) as iterator:
                entries = [e for e in iterator if e.name.startswith(name_prefix) and not e.name.startswith(TMP_PREFIX)]
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return
            raise self._error(exc, 'listing', directory)
        entries.sort(key=_sort_name)
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from self._walk(entry.path, key_prefix + entry.name + '/')
                    continue
                if not entry.is_file():
                    continue
                size = entry.stat().st_size
            except OSError as exc:
                if exc.errno == errno.ENOENT:  # deleted while we walked
                    continue
                raise self._error(exc, 'listing', entry.path)
            yield ObjectInfo(key_prefix + entry.name, size=size)

    def stat(self, key):
        path = self.path_for(key)
        try:
            info = os.stat(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise self._error(exc, 'reading', path, key)
        if not stat_mod.S_ISREG(info.st_mode):
            return None
        return ObjectInfo(key, size=info.st_size)

    def open(self, key):
        path = self.path_for(key)
        try:
            handle = open(path, 'rb')
        except (IOError, OSError) as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
                raise errors.ObjectMissingError('object %s does not exist (%s)' % (key, path), step='read', key=key)
            raise self._error(exc, 'reading', path, key)
        try:
            mode = os.fstat(handle.fileno()).st_mode
        except OSError as exc:
            handle.close()
            raise self._error(exc, 'reading', path, key)
        if not stat_mod.S_ISREG(mode):
            handle.close()
            raise errors.ObjectMissingError('object %s does not exist (%s is not a file)' % (key, path),
                                            step='read', key=key)
        return handle

    def put(self, key, stream, size=None, immutable=False, retain_seconds=None, metadata=None, source_md5=None):
        path = self.path_for(key)
        directory = os.path.dirname(path)
        self._makedirs(directory, key)
        try:
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
        except OSError as exc:
            raise self._error(exc, 'writing', path, key)
        written = 0
        reading = False
        try:
            try:
                while True:
                    reading = True
                    chunk = stream.read(CHUNK)
                    reading = False
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        count = os.write(fd, view)
                        view = view[count:]
                    written += len(chunk)
                if size is not None and written != size:
                    raise errors.IntegrityError('object %s: read %d bytes but %d were announced'
                                                % (key, written, size), step='write', key=key)
                os.fchmod(fd, 0o666 & ~_umask())
                self._chown(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            tmp = None
            _fsync_dir(directory)
        except OSError as exc:
            if reading:
                raise  # the source stream failed, not this store
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST) and os.path.isdir(path):
                raise errors.ObjstoreError('cannot write object %s: %s is a directory' % (key, path),
                                           step='write', key=key)
            raise self._error(exc, 'writing', path, key)
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def delete(self, key):
        path = self.path_for(key)
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return
            if exc.errno in (errno.EISDIR, errno.EPERM) and os.path.isdir(path):
                return  # a directory is not an object
            raise self._error(exc, 'deleting', path, key)
