"""A custom predictor that reports what reached it: V1 `:predict` answers with the
body's size and digest, whether it came chunked, how long it took to arrive (first
byte to last), and how many whole requests this process has read. Listens on
127.0.0.1:$PORT (Hearth sets PORT for custom containers)."""

import hashlib
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMPLETED = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def read_body(self):
        """The body and the seconds from its first byte to its last."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts, first = [], None
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                first = first or time.monotonic()
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts), time.monotonic() - first, True
        length = int(self.headers.get("Content-Length", "0"))
        first = time.monotonic()
        body = self.rfile.read(length)
        return body, time.monotonic() - first, False

    def do_GET(self):
        # Model metadata, with what framing the request arrived in.
        answer = json.dumps({"name": "echo", "platform": "echo", "inputs": [], "outputs": [],
                             "transfer_encoding": self.headers.get("Transfer-Encoding"),
                             "content_length": self.headers.get("Content-Length")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_POST(self):
        global COMPLETED
        body, spread, chunked = self.read_body()
        COMPLETED += 1
        answer = json.dumps({"predictions": [{
            "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "chunked": chunked,
            "arrival_seconds": spread, "completed": COMPLETED}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
