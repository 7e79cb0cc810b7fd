#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that makes a loopback server look far away: every chunk is delivered
DELAY_MS after it arrived (each way, so the round trip grows by 2 x DELAY_MS) and each direction
is capped at RATE bits/s for all connections together (one shared link). It counts what the
server sends and the HTTP requests the clients make, and writes `bytes requests` to STATS after
every change.

usage: shape-proxy.py TARGET_PORT DELAY_MS RATE_MBIT STATS
Prints the port it listens on, then serves until killed."""
import asyncio, os, sys

TARGET, DELAY, RATE, STATS = int(sys.argv[1]), float(sys.argv[2]) / 1000, float(sys.argv[3]) * 1e6 / 8, sys.argv[4]
count = {"bytes": 0, "requests": 0}
free_at = {"up": 0.0, "down": 0.0}


def save():
    tmp = STATS + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{count['bytes']} {count['requests']}\n")
    os.replace(tmp, STATS)


async def pump(reader, writer, way):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def deliver():
        while True:
            at, data = await queue.get()
            if data is None:
                break
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                break
        try:
            writer.close()
        except Exception:
            pass

    task = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            now = loop.time()
            # The link: this chunk leaves when the ones before it are through.
            free_at[way] = max(free_at[way], now) + len(data) / RATE
            await queue.put((max(now + DELAY, free_at[way] + DELAY), data))
            if way == "down":
                count["bytes"] += len(data)
            else:
                for verb in (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"PATCH "):
                    count["requests"] += data.count(b"\r\n" + verb) + data.startswith(verb)
            save()
    except (ConnectionError, OSError):
        pass
    await queue.put((0, None))
    await task


async def handle(creader, cwriter):
    try:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", TARGET)
    except OSError:
        cwriter.close()
        return
    await asyncio.gather(pump(creader, swriter, "up"), pump(sreader, cwriter, "down"))


async def main():
    save()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    async with srv:
        await srv.serve_forever()


asyncio.run(main())
