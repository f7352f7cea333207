#!/usr/bin/env bash
# ansible-test downloads a get-pip bootstrap script from a host that is unreachable here;
# put our stand-in (ensurepip + pip from the package index) in its cache under every name it may ask for.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for version in 23_3 24_0 24_1 24_2 24_3 25_0 25_1 25_2 25_3 26_0; do
  cp "$here/get_pip_shim.py" "$cache/get_pip_$version.py"
done
