#!/usr/bin/env python3
"""Bounded HTTP load for the balancer-pair trial (images/balancer/trial/vrrp.sh).

Sends RATE requests a second for SECONDS to http://127.0.0.1:PORT/PATH, each on a new
TCP connection, on a fixed schedule: a slow or hung request never delays the
next one. One process, no fork per request, so a busy machine does not bend
the timings the way a loop of curl does. Stops by itself.

Writes one line per request to OUT:
    START END CODE KIND SERVED_BY LAG_MS
START and END are Unix times in seconds (microseconds), CODE the HTTP status
(000 when there was none), KIND one of ok, http, timeout, refused, reset,
eof, error, SERVED_BY the X-Served-By header or "-", and LAG_MS how late the
request left against its schedule: more than a few milliseconds means this
process itself did not get the CPU (the machine, not the lab, stalled).
"""

import argparse
import asyncio
import time


async def one(port: int, path: str, timeout: float, due: float, out: list) -> None:
    start = time.time()
    code, kind, served = "000", "error", "-"
    writer = None
    try:
        async with asyncio.timeout(timeout) if hasattr(asyncio, "timeout") else _Deadline(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            code = parts[1] if len(parts) > 1 else "000"
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "x-served-by":
                    served = value.strip()
            await reader.read()  # the body, until the server closes
            kind = "ok" if code == "200" else "http"
    except (asyncio.TimeoutError, TimeoutError):
        kind = "timeout"
    except ConnectionRefusedError:
        kind = "refused"
    except ConnectionResetError:
        kind = "reset"
    except asyncio.IncompleteReadError:
        kind = "eof"
    except OSError:
        kind = "error"
    finally:
        if writer is not None:
            writer.close()
    lag_ms = max(0.0, (start - due) * 1000)
    out.append(f"{start:.6f} {time.time():.6f} {code} {kind} {served} {lag_ms:.0f}\n")


class _Deadline:
    """asyncio.timeout for Pythons older than 3.11."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        self.handle = loop.call_later(self.seconds, task.cancel)
        return self

    async def __aexit__(self, exc_type, exc, tb):
        self.handle.cancel()
        if exc_type is asyncio.CancelledError:
            raise asyncio.TimeoutError from exc
        return False


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out: list = []
    tasks = []
    t0 = time.time()
    for i in range(int(a.seconds * a.rate)):
        due = t0 + i / a.rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(a.port, a.path, a.timeout, due, out)))
    await asyncio.gather(*tasks)
    with open(a.out, "w") as f:
        f.writelines(sorted(out))


if __name__ == "__main__":
    asyncio.run(main())
