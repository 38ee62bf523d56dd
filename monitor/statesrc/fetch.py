"""HTTP GETs for remote state: urllib, with credentials that never follow a redirect away.

urllib's redirect handler copies every header onto the new request, Authorization
included, whatever host the redirect names; a state backend (or HCP Terraform's signed
download URL) that redirects to storage elsewhere must not receive the token.
"""

from __future__ import annotations

import http.client
import urllib.request
from typing import IO, cast
from urllib.parse import urlsplit

CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")


class _KeepCredentialsHome(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            for name in CREDENTIAL_HEADERS:
                new.remove_header(name)
        return new


_OPENER = urllib.request.build_opener(_KeepCredentialsHome)


def open_url(request: urllib.request.Request, timeout: float) -> http.client.HTTPResponse:
    """`urlopen`, except that credentials are dropped on a redirect to another host."""
    return cast(http.client.HTTPResponse, _OPENER.open(request, timeout=timeout))
