"""A client that sends to an echo server and never reads (issue 12, item 9).

  python3 echo_no_reader.py PID PORT
Sends 64 KiB chunks without ever reading until the server stops accepting
(no progress for 1 s), 128 MiB were sent, or 10 s passed; prints what was
sent and how much the server process (PID) grew (VmRSS). Exit status 1 if
the server took 128 MiB or grew by more than 32 MiB: it does not honour
pause_writing/drain.
"""
import select
import socket
import sys
import time

LIMIT_SENT = 128 << 20
LIMIT_GROWTH = 32 << 20


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    before = rss(pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    chunk = b"x" * 65536
    sent = 0
    start = last_progress = time.monotonic()
    while sent < LIMIT_SENT and time.monotonic() - start < 10:
        _, w, _ = select.select([], [s], [], 0.2)
        now = time.monotonic()
        if w:
            try:
                n = s.send(chunk)
            except BlockingIOError:
                n = 0
            if n:
                sent += n
                last_progress = now
        if now - last_progress > 1.0:
            break
    growth = rss(pid) - before
    s.close()
    ok = sent < LIMIT_SENT and growth <= LIMIT_GROWTH
    print(f"sent {sent / 2**20:.1f} MiB without reading; server RSS grew "
          f"{growth / 2**20:.1f} MiB (limits: {LIMIT_SENT >> 20} MiB sent, "
          f"{LIMIT_GROWTH >> 20} MiB growth): {'ok' if ok else 'UNBOUNDED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
