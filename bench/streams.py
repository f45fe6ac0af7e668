#!/usr/bin/env python3
"""Many long-lived SSE streams, for bench/streams.sh. Standard library only (asyncio).

  streams.py upstream PORT EVENTS
      An SSE upstream on 127.0.0.1:PORT: every GET gets a chunked text/event-stream of EVENTS
      events, one a second, 64 bytes each, carrying the send time; then the end of the body.

  streams.py client HOST PORT PATH STREAMS RAMP [HEADER ...]
      Opens STREAMS connections (RAMP per second), GET PATH on each with the HEADERs
      ("Name: value"), reads every event, and prints one JSON line: streams opened, completed
      (every event and the end of the body), failed, and the per-event delivery delay (receive
      time minus send time, ms) p50/p99/max. "OPEN n" lines go to stderr as streams get their
      response headers, so the caller can sample memory with all streams open.

  streams.py websockets HOST PORT PATH COUNT RAMP [HEADER ...]
      The same for WebSockets: COUNT upgrades (RAMP per second), each held open without a
      message until the upstream closes it (EVENTS seconds after the upgrade, with a close
      frame). Prints opened, completed (the close frame arrived) and failed.
"""

import asyncio
import base64
import hashlib
import json
import sys
import time

EVENT_BYTES = 64
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def count_failure(results, error):
    results["failed"] += 1
    kind = type(error).__name__ + ": " + str(error)[:60]
    results["errors"][kind] = results["errors"].get(kind, 0) + 1


async def ramp_up(count, ramp, one):
    """Starts `count` runs of `one()`, `ramp` per second (in twentieths), and waits for all."""
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(one()))
        if (i + 1) % max(1, ramp // 20) == 0:
            await asyncio.sleep(1 / 20)
    await asyncio.gather(*tasks)


async def upstream(port, events):
    async def serve(reader, writer):
        try:
            key = None
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            if key is not None:
                # An idle WebSocket: the upgrade, nothing for EVENTS seconds, a close frame.
                accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                await writer.drain()
                await asyncio.sleep(events)
                writer.write(b"\x88\x00")
                await writer.drain()
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(events):
                stamp = f"data: {time.time():.6f} ".encode()
                data = stamp + b"x" * (EVENT_BYTES - len(stamp) - 2) + b"\n\n"
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
                await asyncio.sleep(1)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096, limit=65536)
    async with server:
        await server.serve_forever()


async def client(host, port, path, streams, ramp, headers):
    delays = []
    results = {"opened": 0, "completed": 0, "failed": 0, "errors": {}}
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
    request += "".join(f"{h}\r\n" for h in headers) + "\r\n"

    async def one():
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=65536)
            writer.write(request.encode())
            await writer.drain()
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(status.decode(errors="replace").strip() or "no status")
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            results["opened"] += 1
            print(f"OPEN {results['opened']}", file=sys.stderr, flush=True)
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    break
                chunk = await reader.readexactly(size + 2)
                now = time.time()
                for line in chunk.split(b"\n"):
                    if line.startswith(b"data: "):
                        delays.append((now - float(line[6:].split(b" ")[0])) * 1000)
            results["completed"] += 1
            writer.close()
        except Exception as error:  # noqa: BLE001 - every failure is counted by its kind
            count_failure(results, error)

    await ramp_up(streams, ramp, one)
    delays.sort()
    pick = lambda q: round(delays[min(len(delays) - 1, int(q * len(delays)))], 2) if delays else None
    results.update(events=len(delays), p50_ms=pick(0.50), p99_ms=pick(0.99), max_ms=pick(1.0))
    print(json.dumps(results), flush=True)


async def websockets(host, port, path, count, ramp, headers):
    results = {"opened": 0, "completed": 0, "failed": 0, "errors": {}}
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    request += "".join(f"{h}\r\n" for h in headers) + "\r\n"

    async def one():
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request.encode())
            await writer.drain()
            status = await reader.readline()
            if b" 101 " not in status:
                raise RuntimeError(status.decode(errors="replace").strip() or "no status")
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            results["opened"] += 1
            print(f"OPEN {results['opened']}", file=sys.stderr, flush=True)
            if (await reader.readexactly(2)) != b"\x88\x00":
                raise RuntimeError("not a close frame")
            results["completed"] += 1
            writer.close()
        except Exception as error:  # noqa: BLE001 - every failure is counted by its kind
            count_failure(results, error)

    await ramp_up(count, ramp, one)
    print(json.dumps(results), flush=True)


def main():
    mode = sys.argv[1]
    if mode == "upstream":
        asyncio.run(upstream(int(sys.argv[2]), int(sys.argv[3])))
    elif mode == "client":
        host, port, path, streams, ramp = sys.argv[2:7]
        asyncio.run(client(host, int(port), path, int(streams), int(ramp), sys.argv[7:]))
    elif mode == "websockets":
        host, port, path, count, ramp = sys.argv[2:7]
        asyncio.run(websockets(host, int(port), path, int(count), int(ramp), sys.argv[7:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
