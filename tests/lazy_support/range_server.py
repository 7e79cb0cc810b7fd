#!/usr/bin/env python3
"""A small HTTP/1.1 file server with Range support (python3 -m http.server has none), for the
lazy-mount tests and benches. Serves DIR on 127.0.0.1; prints the port on stdout once listening.
Every request is logged to LOG (if given) as `METHOD PATH RANGE BYTES`.

usage: range_server.py DIR [LOG]"""
import http.server, os, re, sys, threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def note(self, rng, n):
        if LOG:
            with LOCK, open(LOG, "a") as f:
                f.write(f"{self.command} {self.path} {rng or '-'} {n}\n")

    def do_HEAD(self):
        self.do_GET(body=False)

    def do_GET(self, body=True):
        path = os.path.realpath(os.path.join(ROOT, self.path.lstrip("/").split("?")[0]))
        if not path.startswith(ROOT + os.sep) or not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = os.path.getsize(path)
        rng = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if m.group(1) == "":
                start, end = max(0, size - int(m.group(2))), size - 1
            else:
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start > end or start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        n = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(n))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                left = n
                while left:
                    chunk = f.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
        self.note(rng, n if body else 0)


ROOT = os.path.realpath(sys.argv[1])
LOG = sys.argv[2] if len(sys.argv) > 2 else None
LOCK = threading.Lock()
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
