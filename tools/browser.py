"""The offline browser every check shares: Debian's Chromium driven by Playwright, with
every request outside 127.0.0.1 blocked and recorded.

    with OfflineBrowser("/usr/bin/chromium") as ob:
        page = ob.new_context(viewport={"width": 1440, "height": 900}).new_page()
        ...
    ob.blocked   # the URLs that were refused

Also :func:`serve`, a quiet static server on 127.0.0.1 for a built site.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--metrics-recording-only",
    "--no-default-browser-check",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def is_local(url: str) -> bool:
    """True for data:/blob: URLs and URLs on this machine."""
    return url.startswith(("data:", "blob:")) or urlparse(url).hostname in LOCAL_HOSTS


class OfflineBrowser:
    """Context manager: Playwright started, Chromium launched headless from
    ``chromium`` (never a downloaded browser); closed on exit."""

    def __init__(self, chromium: str):
        self.chromium = chromium
        self.blocked: list[str] = []

    def __enter__(self):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(
            executable_path=self.chromium, headless=True, args=CHROMIUM_ARGS
        )
        return self

    def __exit__(self, *exc):
        self.browser.close()
        self._playwright.stop()

    def new_context(self, on_blocked=None, **options):
        """A browser context (``options`` as Playwright's ``new_context``) whose
        requests outside this machine are aborted, recorded in ``self.blocked`` and
        passed to ``on_blocked(url)`` if given. Service workers are blocked."""

        def route(route_, request):
            if is_local(request.url):
                route_.continue_()
                return
            self.blocked.append(request.url)
            if on_blocked:
                on_blocked(request.url)
            route_.abort("blockedbyclient")

        context = self.browser.new_context(service_workers="block", **options)
        context.route("**/*", route)
        return context


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(site: Path):
    """Serve the folder ``site`` on 127.0.0.1 (a free port) in a daemon thread.
    Returns ``(server, base_url)``; ``server.shutdown()`` stops it."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
