"""A throwaway redis-server for the scale-out tests: a free loopback port,
a temporary directory, no persistence (--save "" --appendonly no), stopped
by stop(). `available()` is False when the binary is missing (the caller
prints a SKIP line)."""
import shutil
import socket
import subprocess
import tempfile
import time

from lib import free_port


def available():
    return shutil.which("redis-server") is not None


class RedisServer:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="lm-redis-")
        self.proc = None
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        """Start (again, on the same port: an empty Redis, as after a crash)."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=0.2)
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    s.close()
                    return
                s.close()
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start on port %d" % self.port)

    def cmd(self, *args):
        """One command (RESP written by hand, no client library): the raw reply."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args)).encode())
        data = s.recv(65536)
        s.close()
        return data

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
