# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Loopback ports for the tests (standard library only: sshnodes.py also runs as a plain script)."""

from __future__ import absolute_import, division, print_function

import socket


def free_port():
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
