"""A local HTTP server for tests of remote inputs: honours Range requests, counts bytes served.

Serves one folder on 127.0.0.1 (a free port) from a daemon thread; every request and the bytes
of every response body are counted per file, so a test can check that a window read of a
Cloud-Optimized GeoTIFF transferred only a small part of it. The server stops itself after
``lifetime_s`` seconds even if a test forgets to stop it.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeServer:
    """A threaded HTTP server of ``root`` with byte-range support and byte counters.

    Attributes:
        bytes_served: ``{file name: body bytes sent}``.
        requests: ``{file name: number of GET requests}``.
    """

    def __init__(self, root: Path, lifetime_s: float = 600.0) -> None:
        self.root = Path(root)
        self.bytes_served: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(server.root), **kwargs)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._get(self, body=True)

            def do_HEAD(self) -> None:
                server._get(self, body=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    def url(self, name: str) -> str:
        """The http URL of a file of the served folder."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> RangeServer:
        """Start serving (returns itself)."""
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.bytes_served.clear()
            self.requests.clear()

    def _get(self, handler: SimpleHTTPRequestHandler, body: bool) -> None:
        name = handler.path.split("?", 1)[0].lstrip("/")
        path = self.root / name
        if not path.is_file():
            handler.send_error(404)
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        match = _RANGE.match(handler.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start = max(0, size - int(match.group(2)))
            status = 206
        if start >= size:
            handler.send_error(416)
            return
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        handler.end_headers()
        if not body:
            return
        with path.open("rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        with self._lock:
            self.bytes_served[name] += len(data)
            self.requests[name] += 1
        handler.wfile.write(data)
