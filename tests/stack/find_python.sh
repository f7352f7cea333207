#!/usr/bin/env bash
# Print the path of a Python interpreter of version $1 (e.g. 3.12), or fail saying what is missing.
set -u
want=${1:?usage: find_python.sh 3.12}
for cand in "python$want" "$HOME/.pyenv/versions/$want"*/bin/python3 "/usr/bin/python$want" "/usr/local/bin/python$want"; do
  for path in $cand; do
    if command -v "$path" >/dev/null 2>&1 && "$path" -c "import sys, venv; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" 2>/dev/null; then
      command -v "$path"; exit 0
    fi
  done
done
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for path in "$root"/versions/"$want"*/bin/python3; do
    [ -x "$path" ] && { echo "$path"; exit 0; }
  done
fi
echo "error: Python $want with venv is required (tried python$want, pyenv versions $want.*). Install it, e.g. 'pyenv install $want'." >&2
exit 1
