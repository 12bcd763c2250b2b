#!/bin/sh
# Install what the test suite needs, then run it:  ./test.sh [pytest args...]
#
# - PostgreSQL 15, zstd, lz4, pgbackrest, and what barman[cloud]'s psycopg2 builds with, from Debian
#   (apt-get only when something is missing; as root)
# - a virtualenv at ${PGRESTORE_VENV:-$HOME/.cache/pytest-pgrestore/venv} with .[test]
#   (a venv under /root is fine: the suite copies the binaries the server needs to a readable cache)
# - python -m mypy pytest_pgrestore (the package type-checks clean), then
#   python -m pytest tests -p no:cacheprovider -ra "$@"  (without tests when "$@" names paths)
#
# Exits 1 when mypy finds a type error, else with pytest's status; "no tests collected" (5) is a
# failure, never a silent pass.
set -eu
cd "$(dirname "$0")"

need_apt=""
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt="$need_apt postgresql-15"
command -v zstd >/dev/null 2>&1 || need_apt="$need_apt zstd"
command -v lz4 >/dev/null 2>&1 || need_apt="$need_apt lz4"
# the pgBackRest format's integration tests make real pgBackRest backups (they skip without it)
want_apt=""
command -v pgbackrest >/dev/null 2>&1 || want_apt=" pgbackrest"
# the HTML drill report is checked in a real headless browser (that test skips without it)
command -v chromium >/dev/null 2>&1 || want_apt="$want_apt chromium"
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need_apt="$need_apt python3-venv"
# barman[cloud] (the barman format's tests drive the real barman-cloud) pulls psycopg2, which PyPI
# ships for Linux as source only: it builds against libpq with gcc and the Python headers
command -v pg_config >/dev/null 2>&1 || need_apt="$need_apt libpq-dev"
command -v gcc >/dev/null 2>&1 || need_apt="$need_apt gcc"
"$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need_apt="$need_apt python3-dev"
# the barman and pgBackRest tests serve S3 over TLS with a self-signed certificate made by openssl
command -v openssl >/dev/null 2>&1 || need_apt="$need_apt openssl"
if [ "$(id -u)" -ne 0 ]; then
    if [ -n "$need_apt" ]; then
        echo "test.sh: missing Debian packages:$need_apt" >&2
        echo "test.sh: install them as root (apt-get install -y$need_apt$want_apt) and run again" >&2
        exit 1
    fi
    [ -z "$want_apt" ] || echo "test.sh: no$want_apt: its tests will be skipped (apt-get install$want_apt)" >&2
elif [ -n "$need_apt$want_apt" ]; then
    echo "test.sh: installing$need_apt$want_apt"
    apt-get update -qq
    # shellcheck disable=SC2086  # a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt$want_apt >/dev/null
fi

HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
VENV=${PGRESTORE_VENV:-$HOME/.cache/pytest-pgrestore/venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "test.sh: creating virtualenv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
# (Re)install when this checkout is not the one the venv imports, or pyproject.toml changed:
# the venv is shared between clones.
stamp="$VENV/.pgrestore-stamp"
hash=$(cksum < pyproject.toml)
here=$(pwd -P)/pytest_pgrestore
there=$(cd / && "$VENV/bin/python" -c 'import os, pytest_pgrestore as p; print(os.path.dirname(os.path.realpath(p.__file__)))' 2>/dev/null) || there=""
case "$there $(cat "$stamp" 2>/dev/null || true)" in
    "$here $hash "test) ;;
    *)
        echo "test.sh: installing pytest-pgrestore[test] into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"
        printf '%s %s\n' "$hash" "test" > "$stamp"
        ;;
esac

# The package type-checks clean first (mypy reads [tool.mypy] from pyproject.toml): a type error
# fails the run before any test does.
if ! "$VENV/bin/python" -m mypy pytest_pgrestore; then
    echo "test.sh: mypy found type errors in pytest_pgrestore (listed above): fix them, the tests did not run" >&2
    exit 1
fi

# tests/ unless the arguments name paths of their own; a hung test fails after 15 min (pytest-timeout)
# instead of eating the CI budget: --timeout=N overrides it
paths=tests
for arg in "$@"; do
    case "$arg" in -*) ;; *) [ -e "${arg%%::*}" ] && paths="" ;; esac
done
status=0
# As root the session runs next to a private Docker daemon (its own loopback-only network
# namespace, images built from the PostgreSQL installed here), so the docker-runtime tests run
# instead of skipping; elsewhere they skip with the reason.  Two workers by default
# (PGRESTORE_TEST_WORKERS=0 runs serially): every server a test starts is its own.
workers=${PGRESTORE_TEST_WORKERS:-2}
xdist=""
[ "$workers" -gt 0 ] && xdist="-n $workers"
wrap=""
[ "$(id -u)" -eq 0 ] && wrap="scripts/docker-test-env.sh"
# shellcheck disable=SC2086  # $wrap, $paths and $xdist are empty or plain words
$wrap "$VENV/bin/python" -m pytest $paths $xdist -p no:cacheprovider -ra -o timeout=900 "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: nothing was proven, failing" >&2
fi
exit "$status"
