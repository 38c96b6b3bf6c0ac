"""The hello example app: a tiny web process for the Deis quickstart.

Every response names the unit that served it (DEIS_UNIT) and carries the value of the
GREETING config var, so you can watch round-robin routing and config changes.
`GET /burn?ms=N` first burns about N ms of cpu (at most 1000), so a request load makes
the unit busy: watch `deis autoscale:set` add units.
"""

import hashlib
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

UNIT = os.environ.get("DEIS_UNIT", "unknown")
RELEASE = os.environ.get("DEIS_RELEASE", "v0")
BLOCK = b"\0" * (256 * 1024)


def burn(ms):
    """Uses about `ms` milliseconds of this thread's cpu. hashlib lets go of the GIL on
    large inputs, so concurrent requests keep several cores busy."""
    until = time.thread_time() + min(max(ms, 0), 1000) / 1000
    while time.thread_time() < until:
        hashlib.sha256(BLOCK).digest()


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the router can pool connections
    # http.server writes the head and the body separately. Buffer the response so it
    # leaves in one write (flushed after each request), and turn Nagle's algorithm off:
    # otherwise every keep-alive response waits ~40 ms for the peer's delayed ACK.
    wbufsize = -1
    disable_nagle_algorithm = True

    def do_GET(self):
        greeting = os.environ.get("GREETING", "Hello")
        url = urlsplit(self.path)
        if url.path == "/healthz":
            body = b"ok\n"
        elif url.path == "/burn":
            try:
                ms = int(parse_qs(url.query).get("ms", ["50"])[0])
            except ValueError:
                ms = 50
            burn(ms)
            body = f"{greeting} from {UNIT} ({RELEASE}), burnt {ms} ms\n".encode()
        else:
            body = f"{greeting} from {UNIT} ({RELEASE})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stdout.write(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")
        sys.stdout.flush()


def main():
    port = int(os.environ.get("PORT", "5000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Hello)
    server.daemon_threads = True

    def stop(_signum, _frame):
        # Finish in-flight requests, then exit: a graceful stop for rolling deploys.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"{UNIT} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
    print(f"{UNIT} stopped", flush=True)


if __name__ == "__main__":
    main()
