"""The HTTP example's origin: GET /pages/NAME answers the page, 404 for any other name."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

PAGES = {"hello": "Hello from the origin\n", "a/b c": "a key with a slash and a space\n"}


class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the router reuses its connections
    # One write per response, sent at once: head and body written apart on a keep-alive
    # connection meet Nagle's algorithm and the client's delayed ACK (~40 ms a request).
    wbufsize = -1  # buffered; the server flushes once the response is complete
    disable_nagle_algorithm = True  # TCP_NODELAY

    def do_GET(self):
        name = unquote(self.path.removeprefix("/pages/")) if self.path.startswith("/pages/") else None
        body = PAGES.get(name)
        self.send_response(200 if body is not None else 404)
        payload = (body or "no such page\n").encode()
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f"origin on http://127.0.0.1:{port}/pages/ ({', '.join(PAGES)})", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Origin).serve_forever()
