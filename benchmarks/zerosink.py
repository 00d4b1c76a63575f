"""An SMTP sink that costs (almost) nothing, for measuring the client: 127.0.0.1:PORT.

    python benchmarks/zerosink.py PORT [--delay SECONDS]

Unlike aiosmtpd (which reads the message line by line, ~5 ms of CPU each), it never looks
at the message's lines: after DATA it only searches the bytes for CRLF.CRLF. Commands are
answered as they come (250 to everything, 354 to DATA), so a pipelining client gets its
replies in one write and smtplib gets each on its own; EHLO offers PIPELINING, SIZE and
8BITMIME. Each connection is served by a process of its own (forked on accept), so the sink
is never one core's worth of Python. `--delay` waits that long before answering each final
dot, like a distant relay (20 ms: a transatlantic round trip plus the relay's own work).

Prints "ready" when listening and, when stopped with SIGINT, how many messages it took.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

EHLO = b"250-zerosink\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250 8BITMIME\r\n"
END = b"\r\n.\r\n"


def serve(conn: socket.socket, delay: float, count: Any) -> None:
    """One SMTP session: answer until QUIT or the client goes."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sendall(b"220 zerosink ESMTP\r\n")
    buf = bytearray()
    in_data, searched = False, 0
    while True:
        chunk = conn.recv(1 << 18)
        if not chunk:
            return
        buf += chunk
        out: list[bytes] = []
        while True:
            if in_data:
                # The body may start with the terminator's own CRLF (the DATA line's).
                end = buf.find(END, max(0, searched - 4))
                if end < 0:
                    searched = len(buf)
                    break
                del buf[:end + len(END)]
                in_data, searched = False, 0
                with count.get_lock():
                    count.value += 1
                if delay:
                    time.sleep(delay)
                out.append(b"250 2.0.0 queued\r\n")
                continue
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                break
            verb = bytes(buf[:4]).upper()
            del buf[:line_end + 2]
            if verb in (b"EHLO", b"HELO"):
                out.append(EHLO)
            elif verb == b"DATA":
                out.append(b"354 go ahead\r\n")
                in_data, searched = True, 0
                buf[:0] = b"\r\n"  # so that an empty body's ".\r\n" still ends it
            elif verb == b"QUIT":
                conn.sendall(b"".join(out) + b"221 bye\r\n")
                return
            else:
                out.append(b"250 ok\r\n")
        if out:
            conn.sendall(b"".join(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    count = multiprocessing.Value(ctypes.c_longlong, 0)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    stopping = []
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    children: list[int] = []
    print("ready", flush=True)
    listener.settimeout(0.2)
    while not stopping:
        try:
            conn, _ = listener.accept()
        except (TimeoutError, InterruptedError):
            children = [pid for pid in children if os.waitpid(pid, os.WNOHANG) == (0, 0)]
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            listener.close()
            try:
                serve(conn, args.delay, count)
            finally:
                os._exit(0)
        conn.close()
        children.append(pid)
    for pid in children:  # sessions still open end when their clients quit
        os.waitpid(pid, 0)
    print(count.value, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
