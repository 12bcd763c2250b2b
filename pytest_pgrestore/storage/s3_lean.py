"""GetObject on the hot path at a third of boto3's CPU.

A pgBackRest backup is one object per relation file: thousands of GETs of a few KB each.  A
boto3 ``get_object`` call costs ~1.8 ms of CPU on this project's reference machine (event
hooks, parameter validation, response parsing), and the GIL makes that the restore's
bottleneck, not the network.  Here botocore still does the part it is trusted with — the
credentials chain, endpoint and addressing style, the SigV4 signature (``S3SigV4Auth``, the
signer botocore itself uses) — and urllib3 sends the request: ~0.6 ms per object.

Only a GET is ever sent.  Anything unusual goes back to the full client, which retries and maps
the error to ours: a status other than 200/206, a connection that fails before the response, a
proxy in the environment, credentials that cannot be read.  The ``Authorization`` header is
never logged or put in an error.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError
from botocore.httpsession import get_cert_path
from botocore.utils import percent_encode

__all__ = ["LeanGet"]

log = logging.getLogger(__name__)

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_HEADERS = {"Range": "Range", "IfMatch": "If-Match"}
_PROBE = "pgrestore-probe-key"
_USER_AGENT = "pytest-pgrestore (lean GetObject)"  # how these GETs show in the server's access log


class LeanGet:
    """GETs of one bucket, signed like the client would sign them, sent through one urllib3 pool."""

    def __init__(self, client: Any, credentials: Any, bucket: str, *, verify: str | None,
                 maxsize: int = 32) -> None:
        self.usable = credentials is not None and not any(os.environ.get(v) for v in _PROXY_VARS)
        self.credentials = credentials
        self.region = client.meta.region_name
        self.base = ""
        self.pool = None
        if not self.usable:
            return
        # The client's own endpoint resolution and addressing style (path or virtual-hosted):
        # the URL it would use for a key, learned once from a presigned URL for a probe key.
        try:
            probe = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": _PROBE},
                                                  ExpiresIn=60)
        except BotoCoreError:  # credentials that cannot be read now: the client reports it properly
            self.usable = False
            return
        base, sep, _ = probe.partition(f"/{_PROBE}?")
        if not sep or urlsplit(base).scheme not in ("http", "https"):
            self.usable = False
            return
        self.base = base
        ca = get_cert_path(True if verify is None else verify)
        self.pool = urllib3.PoolManager(
            maxsize=maxsize, block=False, retries=False,
            ca_certs=ca if isinstance(ca, str) else None, cert_reqs="CERT_REQUIRED",
            timeout=urllib3.Timeout(connect=5, read=60))

    def get(self, key: str, extra: dict[str, str]) -> dict[str, Any] | None:
        """A GetObject-like response (``Body``, ``ContentRange``, ``ETag``, ``ContentLength``), or
        None: the caller asks the full client then (which also explains any error)."""
        if not self.usable:
            return None
        url = f"{self.base}/{percent_encode(key, safe='/~')}"
        request = AWSRequest(method="GET", url=url, headers={_HEADERS[k]: v for k, v in extra.items()})
        try:
            frozen = self.credentials.get_frozen_credentials()
            S3SigV4Auth(frozen, "s3", self.region).add_auth(request)
        except BotoCoreError:  # a credential refresh that failed: the client reports it properly
            return None
        headers = dict(request.headers.items())
        headers["User-Agent"] = _USER_AGENT
        try:
            resp = self.pool.request("GET", url, headers=headers, preload_content=False, decode_content=False,
                                     redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            log.debug("lean GET of %s failed before a response (%s); asking the client", key, type(exc).__name__)
            return None
        if resp.status not in (200, 206) or "Content-Length" not in resp.headers or \
                ("Range" in extra and resp.status != 206):  # a server that ignored Range: the client says so
            resp.close()  # its body is never read (it may be a whole object): the connection goes
            return None
        return {"Body": _Body(resp), "ContentRange": resp.headers.get("Content-Range"),
                "ETag": resp.headers.get("ETag"), "ContentLength": int(resp.headers["Content-Length"])}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.clear()


class _Body:
    """The response body as botocore's StreamingBody is used here: ``read(n)`` and ``close()``."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp

    def read(self, n: int = -1) -> bytes:
        data = self.resp.read(None if n is None or n < 0 else n, decode_content=False)
        if not data and n and self.resp.length_remaining:  # cut off (or closed) before its Content-Length
            raise urllib3.exceptions.ProtocolError(f"body ended {self.resp.length_remaining} bytes short of its Content-Length")
        return data

    def close(self) -> None:
        if self.resp.length_remaining:  # not read to its end: the connection is dropped, never reused
            self.resp.close()
        else:
            self.resp.release_conn()
