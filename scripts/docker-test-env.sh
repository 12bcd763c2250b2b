#!/bin/sh
# Run a command next to a private Docker daemon, for the docker-runtime tests:
#
#   scripts/docker-test-env.sh PYTHON -m pytest tests/integration/test_docker.py ...
#
# - installs docker.io (and iproute2/util-linux) from Debian when dockerd is missing (as root);
# - starts dockerd in a fresh network namespace with only loopback and a bridge of its own
#   (no iptables, no forwarding, no masquerading: nothing can leave this machine);
# - builds postgres:15 and postgres:18 images from the PostgreSQL installed here, no pull;
# - runs the command inside that namespace with DOCKER_HOST, TESTCONTAINERS_RYUK_DISABLED=true and
#   PGR_TEST_DOCKER=required (docker tests then fail instead of skipping without a daemon);
# - stops dockerd and removes its state.  Exits with the command's status.
#
# PYTHON (env) is the interpreter with the docker SDK (default: the command itself when it is a
# python, else python3).
# PGR_DOCKER_IMAGES (env) lists the majors to build (default 15,18).  Needs root.
set -eu
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "docker-test-env.sh: needs root (network namespaces, dockerd)" >&2
    exit 1
fi
need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v unshare >/dev/null 2>&1 || need="$need util-linux"
if [ -n "$need" ]; then
    echo "docker-test-env.sh: installing$need"
    apt-get update -qq
    # shellcheck disable=SC2086  # a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
if [ -z "${PYTHON:-}" ]; then
    case "$(basename "$1")" in
        python*) PYTHON=$1 ;;  # the command's own interpreter has the docker SDK
        *) PYTHON=python3 ;;
    esac
fi
PY=$PYTHON
exec "$PY" tests/docker_support.py run --images "${PGR_DOCKER_IMAGES:-15,18}" -- "$@"
