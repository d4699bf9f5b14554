"""What a browser may not do to the API: send it a form, or call it from another site's page.

A page on any site can make the visitor's browser send a "simple" request (a form post, a `text/plain`
fetch) to Neutrino without asking first: no CORS preflight, no token needed where anonymous calls are
allowed (`neutrino dev`), and a sync task runs before the page is refused the answer. Two checks, run
for every operation of the gateway and polling routers before the caller is authenticated:

- A request with a body must declare it `application/json`. A browser sends that type cross-site only
  after a CORS preflight, which Neutrino never answers, so the request never leaves the browser.
- A request from a browser must come from the server's own origin. Browsers send `Origin` on every
  cross-origin request and on every POST/DELETE; they send `Sec-Fetch-Site` on every request. An
  `Origin` that is neither this server's own origin nor in NEUTRINO_ALLOWED_ORIGINS, or
  `Sec-Fetch-Site: cross-site` without such an `Origin`, is 403.

The own origin is the one Django's CSRF check uses: `<scheme>://<Host header>`, where the scheme
follows SECURE_PROXY_SSL_HEADER and the Host is validated against ALLOWED_HOSTS (and taken from
X-Forwarded-Host when USE_X_FORWARDED_HOST is on). A browser cannot choose the Host it sends, so a
page of another site always shows an Origin that differs from it. NEUTRINO_ALLOWED_ORIGINS adds exact
origins (`https://neutrino.example.com`) for a proxy that rewrites the Host header.

What this cannot do: tell a browser from a program that imitates one (a program needs a token anyway
where anonymous calls are off), or stop DNS rebinding, where the attacker's page and the request share
an origin: ALLOWED_HOSTS does that, by refusing Host names the server does not answer to.
Programs (the Python client, curl) send neither header and pass.
"""

from __future__ import annotations

from django.http import HttpRequest

from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import CrossSiteRequest, UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"
# An Origin is echoed in the error to help whoever configures a proxy; a longer one is cut.
MAX_ECHOED_ORIGIN = 200


def own_origin(request: HttpRequest) -> str:
    """This server's origin as the request reached it (DisallowedHost, a 400, for a Host not allowed)."""
    return f"{request.scheme}://{request.get_host()}".lower()


def refuse_cross_site(request: HttpRequest) -> None:
    """Raise CrossSiteRequest (403) for a browser request sent by a page of another origin."""
    origin = request.headers.get("Origin")
    if origin is not None:
        normalised = origin.strip().rstrip("/").lower()
        if normalised == own_origin(request) or normalised in neutrino_settings().allowed_origins:
            return
        shown = origin[:MAX_ECHOED_ORIGIN]
        raise CrossSiteRequest(
            f"cross-site request refused: the page at {shown!r} is not this server's origin "
            f"({own_origin(request)!r}); the API answers programs (which send no Origin header) and pages of "
            "its own origin. Add an origin you trust to NEUTRINO_ALLOWED_ORIGINS.",
            origin=shown,
        )
    if request.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site":
        raise CrossSiteRequest(
            "cross-site request refused: the browser says another site's page sent it (Sec-Fetch-Site: "
            "cross-site); the API answers programs and pages of its own origin."
        )


def has_body(request: HttpRequest) -> bool:
    """Whether the request declares a body (read before the body itself, which may be large)."""
    if "HTTP_TRANSFER_ENCODING" in request.META:
        return True
    length = (request.META.get("CONTENT_LENGTH") or "").strip()
    # Anything but a plain zero counts: a malformed length must not slip a body past the check.
    return bool(length) and not (length.isdigit() and int(length) == 0)


def require_json(request: HttpRequest) -> None:
    """Raise UnsupportedMediaType (415) for a body that is not declared `application/json`."""
    content_type = request.META.get("CONTENT_TYPE", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        declared = f"{content_type[:100]!r}" if content_type else "no Content-Type"
        raise UnsupportedMediaType(
            f"send the body as {JSON_MEDIA_TYPE} (header 'Content-Type: {JSON_MEDIA_TYPE}'), not {declared}"
        )


def browser_guard(request: HttpRequest) -> None:
    """Both checks, cross-site first: a page of another site learns nothing else about the request."""
    refuse_cross_site(request)
    if has_body(request):
        require_json(request)
