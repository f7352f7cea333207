import os
import sys

# The collection is importable as ansible_collections.storeshift.objstore once `make link` has run.
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
_COLLECTIONS = os.path.join(_ROOT, '.build', 'collections')
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)
