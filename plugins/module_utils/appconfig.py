# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set the object-store part of an application config file, and nothing else.

Supported files:

* Anchore ``config.yaml``: ``services.catalog.object_store``,
  ``services.catalog.analysis_archive`` (and the legacy ``archive``).
* StellaOps YAML: ``scanner.artifactStore``.
* StellaOps environment file: ``SCANNER__ARTIFACTSTORE__*`` keys.

The edit is text level: the YAML block of the section is found by
indentation and replaced, every other byte of the file is kept. PyYAML is
only used to check that the result parses, that the section reads back
equal to what was asked, and that the rest of the document did not change.

Plain Python: no Ansible import.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import tempfile

from ansible_collections.storeshift.objstore.plugins.module_utils.errors import ConfigError
from ansible_collections.storeshift.objstore.plugins.module_utils.specs import StoreSpec

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover - bare targets only
    yaml = None
    HAS_YAML = False

MASK = '********'
APPS = ('anchore', 'stellaops')
ANCHORE_SECTIONS = ('object_store', 'analysis_archive', 'archive')
STELLAOPS_SECTIONS = ('artifact_store',)
ENV_PREFIX = 'SCANNER__ARTIFACTSTORE__'
_ENV_PREFIXES = ('SCANNER__ARTIFACTSTORE__', 'STELLAOPS_SCANNER__ARTIFACTSTORE__')

# Normalised (lower case, no '_' or '-') key names whose values are secrets.
_SECRET_NAMES = frozenset(('secretkey', 'apikey', 'password', 'sessiontoken', 'secretaccesskey', 'accesskeysecret'))

_KEY_LINE = re.compile(r'^(?P<indent>[ ]*)(?P<key>"[^"]*"|\'[^\']*\'|[^\s#:\'"][^:#]*?)[ ]*:(?P<rest>(?:[ \t].*)?)$')
_ENV_LINE = re.compile(r'^(?P<lead>\s*(?:export\s+)?)(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?P<eq>\s*=\s*)(?P<value>.*)$')


def is_secret_name(name):
    norm = str(name).lower().replace('_', '').replace('-', '')
    if norm.startswith(('scannerartifactstore', 'stellaopsscannerartifactstore')):
        norm = norm.split('artifactstore', 1)[1]
    return norm in _SECRET_NAMES or norm.endswith('password')


# ---------------------------------------------------------------------------
# Masking (for --diff and return values)
# ---------------------------------------------------------------------------

def mask_text(text):
    """``text`` with the value of every secret key masked (YAML, env files, DSNs)."""
    out = []
    for line in text.splitlines(True):
        body = line.rstrip('\r\n')
        ending = line[len(body):]
        match = _KEY_LINE.match(body)
        if match and match.group('rest').strip() and not match.group('rest').strip().startswith('#') \
                and is_secret_name(match.group('key').strip('\'"')):
            body = '%s%s: %s' % (match.group('indent'), match.group('key'), MASK)
        else:
            env = _ENV_LINE.match(body)
            if env and env.group('value') and is_secret_name(env.group('key')):
                body = '%s%s%s%s' % (env.group('lead'), env.group('key'), env.group('eq'), MASK)
        # passwords inside DSNs / URLs
        body = re.sub(r'(://[^:/@\s]*:)[^@\s]+@', r'\1' + MASK + '@', body)
        out.append(body + ending)
    return ''.join(out)


def mask_data(data):
    if isinstance(data, dict):
        return dict((k, (MASK if v not in (None, '') else v) if is_secret_name(k) else mask_data(v))
                    for k, v in data.items())
    if isinstance(data, list):
        return [mask_data(v) for v in data]
    return data


# ---------------------------------------------------------------------------
# Desired values
# ---------------------------------------------------------------------------

def stellaops_artifact_store(store):
    """Map an Anchore-shape spec dict to StellaOps' ``scanner.artifactStore`` mapping."""
    spec = StoreSpec.from_dict(store, name='store')
    cfg = spec.config
    if spec.driver == 'rustfs':
        out = {'driver': 'rustfs', 'endpoint': cfg['endpoint'], 'bucket': cfg['bucket']}
        if cfg.get('timeout_seconds') is not None:
            out['timeoutSeconds'] = cfg['timeout_seconds']
        if cfg.get('api_key_header'):
            out['apiKeyHeader'] = cfg['api_key_header']
        if cfg.get('api_key'):
            out['apiKey'] = cfg['api_key']
        return out
    if spec.driver == 's3':
        out = {'driver': 's3'}
        if cfg.get('url'):
            out['endpoint'] = cfg['url']
        out['bucket'] = cfg['bucket']
        if cfg.get('region'):
            out['region'] = cfg['region']
        if cfg.get('access_key'):
            out['accessKey'] = cfg['access_key']
        if cfg.get('secret_key'):
            out['secretKey'] = cfg['secret_key']
        return out
    raise ConfigError("StellaOps scanner.artifactStore supports the rustfs and s3 drivers, not '%s'" % spec.driver,
                      step='config')


def _env_value(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


# ---------------------------------------------------------------------------
# YAML block editing
# ---------------------------------------------------------------------------

def _newline(text):
    first = text.find('\n')
    return '\r\n' if first > 0 and text[first - 1] == '\r' else '\n'


def _indent_of(line):
    return len(line) - len(line.lstrip(' '))


def _is_content(line):
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith('#')


def _is_doc_marker(line):
    stripped = line.rstrip()
    return stripped in ('---', '...') or stripped.startswith('--- ') or stripped.startswith('%')


def _block_end(lines, start, indent):
    """Index one past the last line of the block whose key line is ``lines[start]``.

    The block holds the following lines indented deeper than ``indent``
    (blank and comment lines included); trailing blank lines and comments at
    or left of ``indent`` belong to what follows.
    """
    last = start
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if _is_doc_marker(line):
            break
        if _is_content(line):
            if _indent_of(line) <= indent:
                break
            last = i
        elif line.strip() and _indent_of(line) > indent:
            last = i  # a comment inside the block
    return last + 1


def _find_child(lines, lo, hi, parent_indent, key):
    """(line index, indent) of mapping key ``key`` directly under the parent, or (None, child_indent)."""
    child_indent = None
    for i in range(lo, hi):
        line = lines[i].rstrip('\r\n')
        if not _is_content(line) or _is_doc_marker(line):
            continue
        ind = _indent_of(line)
        if ind <= parent_indent:
            continue
        if child_indent is None:
            child_indent = ind
        if ind != child_indent:
            continue
        match = _KEY_LINE.match(line)
        if match and match.group('key').strip('\'"') == key:
            return i, ind
    return None, child_indent


def _dump_block(value, indent, newline):
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=False, indent=2, allow_unicode=True, width=1000)
    pad = ' ' * indent
    return ''.join(pad + line + newline for line in text.splitlines())


def _doc_range(lines):
    """The line range of the first YAML document."""
    lo = 0
    for i, line in enumerate(lines):
        if _is_content(line) and not line.startswith('%'):
            if line.rstrip() == '---' or line.startswith('--- '):
                lo = i + 1
            break
    hi = len(lines)
    for i in range(lo, len(lines)):
        if lines[i].rstrip() in ('---', '...'):
            hi = i
            break
    return lo, hi


def replace_yaml_block(text, path, value):
    """Return ``text`` with the mapping at ``path`` (list of keys) set to ``value``."""
    newline = _newline(text)
    lines = text.splitlines(True)
    lo, hi = _doc_range(lines)
    parent_indent = -1
    unit = 2
    for depth, key in enumerate(path):
        index, child_indent = _find_child(lines, lo, hi, parent_indent, key)
        if child_indent is not None and parent_indent >= 0 and child_indent > parent_indent:
            unit = child_indent - parent_indent
        last = depth == len(path) - 1
        if index is None:
            # Create the missing key (and everything below it) at the end of the parent block.
            indent = child_indent if child_indent is not None else parent_indent + (unit if parent_indent >= 0 else 1)
            indent = max(indent, 0)
            nested = value
            for inner in reversed(path[depth + 1:]):
                nested = {inner: nested}
            block = _dump_block({key: nested}, indent, newline)
            insert_at = hi
            while insert_at > lo and not _is_content(lines[insert_at - 1]):
                insert_at -= 1
            if insert_at > 0 and not lines[insert_at - 1].endswith(('\n', '\r')):
                lines[insert_at - 1] = lines[insert_at - 1] + newline
            lines[insert_at:insert_at] = [block]
            return ''.join(lines)
        line = lines[index].rstrip('\r\n')
        match = _KEY_LINE.match(line)
        rest = match.group('rest').strip()
        indent = match.group('indent')
        end = _block_end(lines, index, len(indent))
        if last:
            if rest and not rest.startswith('#'):
                key_line = '%s%s:%s' % (indent, match.group('key'), newline)
            else:
                key_line = lines[index] if lines[index].endswith(('\n', '\r')) else lines[index] + newline
            # keep the child indentation the block already uses
            child = None
            for j in range(index + 1, end):
                if _is_content(lines[j]):
                    child = _indent_of(lines[j])
                    break
            if child is None or child <= len(indent):
                child = len(indent) + unit
            if value is None or value == {}:
                key_line = '%s%s: %s%s' % (indent, match.group('key'), 'null' if value is None else '{}', newline)
                block = ''
            else:
                block = _dump_block(value, child, newline)
            replacement = key_line + block
            if end == len(lines) and not lines[end - 1].endswith(('\n', '\r')):
                replacement = replacement[:-len(newline)]  # the file had no final newline
            lines[index:end] = [replacement]
            return ''.join(lines)
        if rest and not rest.startswith('#'):
            raise ConfigError("cannot edit %s: key '%s' holds an inline (flow-style or scalar) value"
                              % ('.'.join(path), key), step='config')
        lo, hi, parent_indent = index + 1, end, len(indent)
    return ''.join(lines)


def _get_path(doc, path):
    node = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None, False
        node = node[key]
    return node, True


def _set_path(doc, path, value):
    node = doc
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def _load_yaml(text, what):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = ' at line %d column %d' % (mark.line + 1, mark.column + 1) if mark else ''
        raise ConfigError('%s is not valid YAML%s: %s' % (what, where, getattr(exc, 'problem', exc)), step='config')


def _same(a, b):
    """Equality that tells booleans from integers (True != 1)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _normalise(value):
    """Plain dict/list/scalar copy (Ansible may hand over its own str/dict subclasses)."""
    if isinstance(value, dict):
        return dict((str(k), _normalise(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def edit_yaml(text, path, value, what='config file'):
    """(new_text, old_value) for a YAML file with ``path`` set to ``value``."""
    if not HAS_YAML:
        raise ConfigError('PyYAML is required on the target to edit %s' % what, step='config')
    value = _normalise(value)
    old_doc = _load_yaml(text, what) if text.strip() else {}
    if old_doc is None:
        old_doc = {}
    if not isinstance(old_doc, dict):
        raise ConfigError('%s does not hold a YAML mapping' % what, step='config')
    old_value, found = _get_path(old_doc, path)
    if found and _same(old_value, value):
        return text, old_value
    new_text = replace_yaml_block(text, path, value)
    new_doc = _load_yaml(new_text, '%s (after the edit)' % what)
    got, found_new = _get_path(new_doc, path)
    if not found_new or not _same(got, value):
        raise ConfigError('editing %s: %s did not read back equal after the edit; the file was left unchanged'
                          % (what, '.'.join(path)), step='config')
    expected = _load_yaml(text, what) if text.strip() else {}
    expected = expected or {}
    _set_path(expected, path, value)
    if not _same(expected, new_doc):
        raise ConfigError('editing %s: the edit of %s would have changed other settings; the file was left unchanged'
                          % (what, '.'.join(path)), step='config')
    return new_text, old_value


# ---------------------------------------------------------------------------
# Environment files
# ---------------------------------------------------------------------------

def _env_quote(value):
    if value == '' or re.search(r'[\s#"\'\\$`]', value):
        return '"%s"' % value.replace('\\', '\\\\').replace('"', '\\"')
    return value


def _env_unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
        inner = value[1:-1]
        if value[0] == '"':
            inner = inner.replace('\\"', '"').replace('\\\\', '\\')
        return inner
    return value


def _env_suffix(key):
    upper = key.upper()
    for prefix in _ENV_PREFIXES:
        if upper.startswith(prefix):
            return key[len(prefix):], key[:len(prefix)]
    return None, None


def edit_env(text, desired):
    """(new_text, old_values) with the SCANNER__ARTIFACTSTORE__* keys set to ``desired``.

    ``desired`` maps camelCase names (driver, endpoint, ...) to values.
    Existing lines keep their position and spelling; keys no longer wanted
    are removed; new keys are added after the last existing one.
    """
    newline = _newline(text)
    lines = text.splitlines(True)
    wanted = dict((name.lower(), (name, _env_value(value))) for name, value in desired.items())
    old = {}
    prefix = None
    last_index = None
    out = []
    seen = set()
    for line in lines:
        body = line.rstrip('\r\n')
        match = _ENV_LINE.match(body)
        suffix = None
        if match and not body.lstrip().startswith('#'):
            suffix, found_prefix = _env_suffix(match.group('key'))
        if suffix is None:
            out.append(line)
            continue
        prefix = prefix or found_prefix
        name = suffix.lower()
        old[name] = _env_unquote(match.group('value'))
        if name in wanted and name not in seen:
            seen.add(name)
            value = wanted[name][1]
            if _env_unquote(match.group('value')) == value:
                out.append(line)
            else:
                ending = line[len(body):]
                out.append('%s%s%s%s%s' % (match.group('lead'), match.group('key'), match.group('eq'),
                                           _env_quote(value), ending))
            last_index = len(out) - 1
        # else: a key not wanted any more (or a duplicate): dropped
    old_values = dict((k, v) for k, v in old.items())
    if set(old_values) == set(wanted) and all(old_values[k] == wanted[k][1] for k in wanted) \
            and len([1 for line in lines if _is_env_store_line(line)]) == len(wanted):
        return text, old_values
    missing = [name for name in desired if name.lower() not in seen]
    if missing:
        prefix = prefix or ENV_PREFIX
        added = ['%s%s=%s%s' % (prefix, name.upper(), _env_quote(_env_value(desired[name])), newline)
                 for name in missing]
        if last_index is None:
            if out and not out[-1].endswith(('\n', '\r')):
                out[-1] = out[-1] + newline
            out.extend(added)
        else:
            if not out[last_index].endswith(('\n', '\r')):
                out[last_index] = out[last_index] + newline
            out[last_index + 1:last_index + 1] = added
    return ''.join(out), old_values


def _is_env_store_line(line):
    body = line.rstrip('\r\n')
    match = _ENV_LINE.match(body)
    return bool(match) and not body.lstrip().startswith('#') and _env_suffix(match.group('key'))[0] is not None


def looks_like_env(path, text):
    if path.endswith('.env'):
        return True
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith('#'):
            continue
        return bool(_ENV_LINE.match(stripped)) and ':' not in stripped.split('=', 1)[0]
    return False


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def plan(path, app, section, store, text=None):
    """Compute the edit. Returns a dict with before, after, changed, old, new, kind."""
    if app not in APPS:
        raise ConfigError("app must be one of %s, got '%s'" % (', '.join(APPS), app), step='config')
    if text is None:
        text = read_text(path)
    if app == 'anchore':
        section = section or 'object_store'
        if section not in ANCHORE_SECTIONS:
            raise ConfigError("section '%s' does not apply to Anchore (expected one of: %s)"
                              % (section, ', '.join(ANCHORE_SECTIONS)), step='config')
        StoreSpec.from_dict(store, name='store')
        value = _normalise(store)
        new_text, old = edit_yaml(text, ['services', 'catalog', section], value, path)
        kind = 'yaml'
    else:
        section = section or 'artifact_store'
        if section not in STELLAOPS_SECTIONS:
            raise ConfigError("section '%s' does not apply to StellaOps (expected artifact_store)" % section,
                              step='config')
        value = stellaops_artifact_store(store)
        if looks_like_env(path, text):
            new_text, old = edit_env(text, value)
            kind = 'env'
        else:
            new_text, old = edit_yaml(text, ['scanner', 'artifactStore'], value, path)
            kind = 'yaml'
    return {'before': text, 'after': new_text, 'changed': new_text != text, 'old': old, 'new': value,
            'kind': kind, 'section': section}


def read_text(path):
    if not os.path.isabs(path):
        raise ConfigError('path must be absolute, got %s' % path, step='config')
    if not os.path.isfile(path):
        raise ConfigError('config file %s does not exist' % path, step='config')
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        raise ConfigError('config file %s cannot be read: %s' % (path, exc.strerror or exc), step='config')
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        raise ConfigError('config file %s is not UTF-8 text' % path, step='config')


def backup_file(path):
    """Copy ``path`` (mode and times kept) next to itself; return the copy's path.

    The name keeps the extension (``config.storeshift-20260102T030405.yaml``,
    ``scanner.storeshift-20260102T030405.env``) so that tools that recognise a
    config format by its suffix still read the backup.
    """
    import shutil
    import time
    directory, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    stamp = time.strftime('%Y%m%dT%H%M%S')
    candidate = os.path.join(directory, '%s.storeshift-%s%s' % (stem, stamp, ext))
    counter = 1
    while os.path.exists(candidate):
        counter += 1
        candidate = os.path.join(directory, '%s.storeshift-%s-%d%s' % (stem, stamp, counter, ext))
    shutil.copy2(path, candidate)
    st = os.stat(path)
    try:
        os.chown(candidate, st.st_uid, st.st_gid)
    except OSError:
        pass
    return candidate


def write_text(path, text):
    """Atomically replace ``path``, keeping its mode and owner (never widening the mode)."""
    st = os.stat(path)
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(text.encode('utf-8'))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, st.st_mode & 0o7777)
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            pass
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
