"""The fast upstream of `scripts/bench`'s serving section: a minimal keep-alive HTTP/1.1
server (asyncio protocol) that answers every request with a fixed V2 inference
response, so that latency measured through Hearth's proxy is the proxy's own.
Listens on 127.0.0.1:$PORT (Hearth sets PORT for custom predictors)."""

import asyncio
import os

BODY = b'{"model_name":"fast","outputs":[{"name":"y","shape":[1],"datatype":"FP32","data":[1.0]}]}'
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


class Server(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(RESPONSE)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", int(os.environ["PORT"]))
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
