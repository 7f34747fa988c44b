#!/usr/bin/env python3
"""A webhook sink for the latency run of `make bench-http`: answers every POST with 202 (keep-alive) and
records, for each event, its arrival time minus its `ce-benchts` header (the publisher's send time, in ms),
with microsecond clock resolution (nginx's $msec has only milliseconds, too coarse here).

Usage: latency_sink.py PORT_FILE OUT_FILE. Binds a free loopback port and writes it to PORT_FILE; on
SIGTERM writes one latency in ms per line to OUT_FILE and exits.
"""
import asyncio
import signal
import sys
import time

latencies = []


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.time() * 1000
            length = 0
            sent = None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"ce-benchts":
                    sent = float(value)
            if length:
                await reader.readexactly(length)
            if sent is not None:
                latencies.append(arrived - sent)
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(port_file, out_file):
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    with open(port_file, "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    with open(out_file, "w") as f:
        f.writelines(f"{value:.3f}\n" for value in latencies)


asyncio.run(main(sys.argv[1], sys.argv[2]))
