#!/bin/sh
# The demo, on a fresh Debian 12 machine:  ./demo.sh [--keep] [-- pytest args...]
#
# Installs what it needs (PostgreSQL 15, zstd, lz4 from Debian only when missing; a virtualenv at
# ${PGRESTORE_VENV:-$HOME/.cache/pytest-pgrestore/venv} with .[demo,html]), then runs
# python -m pytest_pgrestore.demo: SeaweedFS S3 on 127.0.0.1, a PostgreSQL 15 source with a real
# base backup and archived WAL, and the drills in drills/ restored from it.  Nothing leaves this
# machine.  Exits with pytest's status.
set -eu
cd "$(dirname "$0")"

need_apt=""
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt="$need_apt postgresql-15"
command -v zstd >/dev/null 2>&1 || need_apt="$need_apt zstd"
command -v lz4 >/dev/null 2>&1 || need_apt="$need_apt lz4"
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need_apt="$need_apt python3-venv"
if [ -n "$need_apt" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "demo.sh: missing Debian packages:$need_apt" >&2
        echo "demo.sh: install them as root (apt-get install -y$need_apt) and run again" >&2
        exit 1
    fi
    echo "demo.sh: installing$need_apt"
    apt-get update -qq
    # shellcheck disable=SC2086  # a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt >/dev/null
fi

HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
VENV=${PGRESTORE_VENV:-$HOME/.cache/pytest-pgrestore/venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "demo.sh: creating virtualenv $VENV"
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
    "$here $hash "test|"$here $hash "demo,html) ;;
    *)
        echo "demo.sh: installing pytest-pgrestore[demo,html] into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[demo,html]"
        printf '%s %s\n' "$hash" "demo,html" > "$stamp"
        ;;
esac

exec "$VENV/bin/python" -m pytest_pgrestore.demo "$@"
