"""A custom KServe-style transformer: named iris features in, class names out. Takes
the arguments KServe gives a transformer container (--model_name, --predictor_host,
--http_port) and calls the predictor over V1."""

import argparse
import json
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--predictor_host", required=True)
    parser.add_argument("--http_port", type=int, required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def answer(self, status, doc):
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.answer(200, {"name": args.model_name, "ready": True})

        def do_POST(self):
            if self.path != f"/v1/models/{args.model_name}:predict":
                return self.answer(404, {"error": f"no route {self.path}"})
            doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rows = [[float(item[f]) for f in FEATURES] for item in doc["instances"]]
            req = urllib.request.Request(
                f"http://{args.predictor_host}/v1/models/{args.model_name}:predict",
                data=json.dumps({"instances": rows}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                predictions = json.load(r)["predictions"]
            self.answer(200, {"predictions": [CLASSES[int(p)] for p in predictions]})

    ThreadingHTTPServer(("127.0.0.1", args.http_port), Handler).serve_forever()


if __name__ == "__main__":
    main()
