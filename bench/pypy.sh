#!/bin/sh
# bench/vs_twemproxy.py with ringcache's router and nodes on PyPy: a measured prototype.
#
# Usage: bench/pypy.sh [vs_twemproxy.py options], e.g. bench/pypy.sh --nodes 1 --seconds 5
#
# Debian's PyPy is 7.3.11 (Python 3.9) and ringcache needs 3.11, so this runs a copy of the
# committed tree (in $PYPY_WORK, default /tmp/ringcache-pypy) with its 3.10+ spots made 3.9
# code: dataclass slots/kw_only, one runtime type union, and the generated protobuf module's
# runtime version check (PyPy 3.9 gets protobuf 6, pure Python). Nothing else changes.
# Installs pypy3 with apt-get when run as root and it is missing.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
work=${PYPY_WORK:-/tmp/ringcache-pypy}

if ! command -v pypy3 >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pypy3 pypy3-venv pypy3-dev >/dev/null
fi
if [ ! -x "$work/venv/bin/python" ]; then
  pypy3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q twisted "protobuf>=5" mmh3 pyyaml prometheus_client
fi

rm -rf "$work/tree"
mkdir -p "$work/tree"
git -C "$root" archive HEAD | tar -x -C "$work/tree"
cd "$work/tree"
sed -i 's/, slots=True, kw_only=True)/)/; s/, slots=True)/)/' router/*.py router/*/*.py
sed -i 's/^    default_group: str$/    default_group: str = ""/' router/config/topology.py
sed -i 's/^Event = Get | Store.*$/Event = object/' router/memcache/text.py
sed -i 's/^_runtime_version.ValidateProtobufRuntimeVersion(/_unchecked = (/' shared/ringcache_pb2.py
# bench/harness.py starts ringcache with the tree's .venv/bin/python: make that PyPy.
mkdir -p .venv/bin
printf '#!/bin/sh\nexec %s/venv/bin/python "$@"\n' "$work" > .venv/bin/python
chmod +x .venv/bin/python
exec "$root/.venv/bin/python" bench/vs_twemproxy.py "$@"
