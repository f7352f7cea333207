# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: run a command when a named task starts (fault injection at an exact step).

Enabled only by tests/integration/test_cutover_faults.py through ANSIBLE_CALLBACK_PLUGINS and
ANSIBLE_CALLBACKS_ENABLED=node_fault. STORESHIFT_FAULT_PLAN is a JSON list of actions:

    [{"task": "Verify | compare the destination with the source", "argv": ["python", "nodes.py", "down", "node2"]},
     {"task": "Rescue | wait for the unreachable nodes", "argv": [...], "delay": 5}]

Each action fires once, at the first start of a task of exactly that name, before the task is
sent to any host: the command runs to completion first (or, with ``delay``, in the background
after that many seconds). Every firing is appended to STORESHIFT_FAULT_LOG (JSON lines).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = '''
    name: node_fault
    type: aggregate
    short_description: run a command when a named task starts (tests only)
    description:
      - Fault injection for the cutover tests; see the module docstring.
    requirements:
      - enabled through ANSIBLE_CALLBACKS_ENABLED
'''

import json
import os
import subprocess
import threading
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'node_fault'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._plan = json.loads(os.environ.get('STORESHIFT_FAULT_PLAN') or '[]')
        self._log = os.environ.get('STORESHIFT_FAULT_LOG')
        self._fired = set()

    def _record(self, action, rc):
        if self._log:
            with open(self._log, 'a') as handle:
                handle.write(json.dumps({'task': action['task'], 'argv': action['argv'], 'rc': rc, 'at': time.time()}) + '\n')

    def _run(self, action):
        rc = subprocess.call(action['argv'])
        self._record(action, rc)

    def _delayed(self, action):
        time.sleep(float(action['delay']))
        self._run(action)

    def v2_playbook_on_task_start(self, task, is_conditional):
        names = (str(task.name or '').strip(), task.get_name().strip())
        for index, action in enumerate(self._plan):
            if index in self._fired or action['task'] not in names:
                continue
            self._fired.add(index)
            if action.get('delay'):
                thread = threading.Thread(target=self._delayed, args=(action,))
                thread.daemon = True
                thread.start()
            else:
                self._run(action)
