"""A throwaway PostgreSQL server for the scale-out tests: Debian's initdb and
postgres (/usr/lib/postgresql/*/bin) on a free loopback port with a temporary
data directory, password authentication (scram) for one user, stopped and
removed at the end. As root the server runs as `nobody` (postgres refuses
root) through setpriv. Stdlib only."""
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time

from lib import free_port

USER = "lm"
PASSWORD = "lm-test-pw-%d" % os.getpid()


def pg_bin():
    """The newest Debian PostgreSQL bin directory with initdb and postgres, or None."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres", "psql")):
            return d
    return None


class Postgres:
    def __init__(self):
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL binaries")
        self.dir = tempfile.mkdtemp(prefix="lm-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        os.mkdir(self.sock)
        self.port = free_port()
        self.proc = None
        self.prefix = []
        if os.geteuid() == 0:
            os.chown(self.dir, 65534, 65534)
            os.chown(self.sock, 65534, 65534)
            self.prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        pw = os.path.join(self.dir, "pw")
        with open(pw, "w") as f:
            f.write(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(pw, 65534, 65534)
        subprocess.run(self.prefix + [os.path.join(self.bin, "initdb"), "-D", self.data, "-U", USER,
                                      "--pwfile", pw, "--auth", "scram-sha-256", "-E", "UTF8",
                                      "--no-instructions"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir)
        os.unlink(pw)
        self.start()

    def conninfo(self, var="LM_PG_PASSWORD"):
        return "host=127.0.0.1 port=%d dbname=postgres user=%s password=env:%s" % (self.port, USER, var)

    def env(self, var="LM_PG_PASSWORD"):
        return {var: PASSWORD}

    def start(self, timeout=30):
        self.log = open(os.path.join(self.dir, "pg.log"), "a")
        self.proc = subprocess.Popen(
            self.prefix + [os.path.join(self.bin, "postgres"), "-D", self.data, "-p", str(self.port),
                           "-k", self.sock, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on",
                           "-c", "max_connections=50"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited: " + self.logtext())
            if self.sql("SELECT 1", check_rc=False) == "1":
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not start: " + self.logtext())

    def stop(self, sig=signal.SIGINT, timeout=30):
        """Fast shutdown (SIGINT): connections are cut, as an outage does."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def sql(self, query, check_rc=True):
        """One query through psql; its unaligned output (stripped)."""
        return self.sql_db("postgres", query, check_rc)

    def sql_db(self, db, query, check_rc=True):
        """sql() in database db."""
        e = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="3")
        r = subprocess.run([os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", USER, "-d", db, "-X", "-A", "-t", "-q", "-c", query],
                           env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        if check_rc and r.returncode != 0:
            raise RuntimeError("psql: %s" % r.stderr.decode(errors="replace"))
        return r.stdout.decode().strip()

    def logtext(self):
        try:
            with open(os.path.join(self.dir, "pg.log")) as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
