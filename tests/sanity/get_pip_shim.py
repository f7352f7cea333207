# ansible-test bootstraps pip in each sanity virtual environment with a get-pip script that it
# downloads from a host that is not reachable here. This stand-in does the same job with the
# interpreter's own ensurepip, then installs the requested pip version from the package index.
import subprocess
import sys

subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
