"""Runtimes serve a restored PGDATA: a local server process, or a docker container.

The interface is :mod:`.base`; :func:`choose` picks the implementation ``--restore-runtime`` asks
for.  Nothing is imported here at load time: docker and testcontainers are imported only when
docker is asked for, or ``auto`` probes for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import Runtime

__all__ = ["choose"]

log = logging.getLogger(__name__)


def choose(settings, major: int | None, *, evidence: dict) -> Runtime | None:
    """The runtime for one restore attempt, as ``--restore-runtime`` (local, docker, auto) asks.

    ``local`` is chosen at once.  ``docker`` and ``auto`` wait for the backup's major version
    (None until it is known: the image and, for auto, the probe depend on it); their choice and
    its reason go to ``evidence["runtime"]``."""
    from ._local import LocalRuntime

    if settings.runtime == "local":
        return LocalRuntime(settings, evidence=evidence)
    if major is None:
        return None
    from ._docker import DockerRuntime, docker_or_local

    runtime: Runtime | None
    if settings.runtime == "docker":
        runtime = DockerRuntime(settings, evidence=evidence)
        why = f"docker: --restore-runtime=docker (from {settings.origins.get('runtime', 'default')})"
    else:
        runtime, why = docker_or_local(settings, major, evidence=evidence)
        if runtime is None:
            runtime = LocalRuntime(settings, evidence=evidence)
    log.info("restore runtime %s", why)
    evidence["runtime"] = why
    return runtime
