"""Websocket round trips to a Jupyter kernel, for scripts/bench's notebooks section
(run by .venv-notebooks' python, which has websocket-client): opens the kernel's
channels at URL with the given headers and times N kernel_info_request -> reply
round trips. Prints the milliseconds as a JSON list."""

import json
import sys
import time
import uuid

import websocket

url, n = sys.argv[1], int(sys.argv[2])
headers = sys.argv[3:]
ws = websocket.create_connection(url, header=headers, timeout=60, suppress_origin=True)
session = uuid.uuid4().hex


def request():
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "bench", "session": session,
                   "msg_type": "kernel_info_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "content": {},
    }))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("msg_type") == "kernel_info_reply" and msg["parent_header"].get("msg_id") == msg_id:
            return


for _ in range(20):  # warm-up: the kernel's first replies are slow
    request()
out = []
for _ in range(n):
    t0 = time.perf_counter()
    request()
    out.append((time.perf_counter() - t0) * 1000)
ws.close()
print(json.dumps(out))
