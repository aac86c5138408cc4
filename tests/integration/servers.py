"""Real servers for the tests: Redis, PostgreSQL, MariaDB and an HTTP origin for the sources,
and etcd for a topology kept there; each a child process on free loopback ports, installed
from Debian's packages when missing."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import Process, free_port, port_open, start_process, stop_process

# command -> the Debian package that provides it
PACKAGES = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "openssl": "openssl",
    "initdb": "postgresql",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "etcd": "etcd-server",
    "etcdctl": "etcd-client",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "curl": "curl",
    "nc": "netcat-openbsd",
}
_apt_updated = False


def find_command(command: str) -> str | None:
    """The path of ``command``; PostgreSQL's binaries live in a versioned directory."""
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if found is None and command in ("initdb", "postgres", "pg_isready"):
        matches = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{command}"))
        found = matches[-1] if matches else None
    return found


def require(*commands: str) -> dict[str, str]:
    """The paths of ``commands``, installing their packages with apt-get first when any is
    missing and we are root; fails the test, naming the packages, when we cannot."""
    global _apt_updated
    missing = sorted({PACKAGES[c] for c in commands if find_command(c) is None})
    if missing:
        if os.geteuid() != 0:
            pytest.fail(f"these tests need the Debian packages {' '.join(missing)}: "
                        f"run `sudo apt-get install {' '.join(missing)}`", pytrace=False)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
        if not _apt_updated:
            subprocess.run([*apt, "update", "-qq"], env=env, check=True)
            _apt_updated = True
        subprocess.run([*apt, "install", "-y", "-qq", *missing], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    paths = {c: find_command(c) for c in commands}
    if None in paths.values():
        pytest.fail(f"installed {' '.join(missing)} but still missing "
                    f"{[c for c, p in paths.items() if p is None]}", pytrace=False)
    return paths


def _owned_tempdir(user: str | None, prefix: str) -> Path:
    """A fresh directory the server's user owns; as root that is the package's service user,
    because PostgreSQL and MariaDB refuse to run as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if user is not None:
        shutil.chown(path, user, user)
    return path


def _service_user(name: str) -> str | None:
    return name if os.geteuid() == 0 else None


class Server:
    """A server process that can be stopped and started again on the same port and data,
    which live in ``dir`` until ``close()``."""

    port: int
    dir: Path
    proc: Process | None = None
    stop_signal = signal.SIGTERM

    @contextmanager
    def serving(self) -> Iterator[Server]:
        """Set up, start, and in the end stop the server and remove its files."""
        try:
            self.prepare()
            self.start()
            yield self
        finally:
            self.close()

    def prepare(self) -> None:
        """Make the data directory before the first start."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return port_open(self.port)

    def start(self) -> None:
        self.proc = start_process(self.command(), self.ready, timeout=30, **self.popen_kwargs())

    def popen_kwargs(self) -> dict:
        return {}

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, self.stop_signal, timeout=10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def make_certificates(directory: Path, host: str) -> None:
    """A throwaway CA (ca.crt) and a certificate for ``host`` it signed (server.crt, .key)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=ringcache test CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={host}")
    (directory / "san.ext").write_text(f"subjectAltName=DNS:{host}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")


class RedisServer(Server):
    """Plain TCP on ``port``, a unix socket, and TLS on ``tls_port`` with a certificate for
    ``localhost`` signed by ``ca_file``; besides the default user, ``reader`` (password
    ``s3cret``) may only GET and PING."""

    def __init__(self):
        self.paths = require("redis-server", "redis-cli", "openssl")
        self.port = free_port()
        self.tls_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ringcache-redis-"))
        self.socket = self.dir / "redis.sock"
        self.ca_file = self.dir / "ca.crt"

    def prepare(self) -> None:
        make_certificates(self.dir, "localhost")

    def command(self) -> list[str]:
        return [self.paths["redis-server"], "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--tls-port", str(self.tls_port), "--tls-cert-file", str(self.dir / "server.crt"),
                "--tls-key-file", str(self.dir / "server.key"), "--tls-ca-cert-file",
                str(self.ca_file), "--tls-auth-clients", "no",
                "--user", "reader", "on", ">s3cret", "~*", "+get", "+ping"]

    def ready(self) -> bool:
        return self.socket.exists() and port_open(self.port)

    def cli(self, *args: str, stdin: bytes | None = None) -> str:
        """Run redis-cli against this server (``-x``: the last argument is read from stdin)."""
        done = subprocess.run([self.paths["redis-cli"], "-p", str(self.port), *args],
                              input=stdin, capture_output=True, check=True, timeout=10)
        return done.stdout.decode().strip()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


class PostgresServer(Server):
    """A cluster of its own (initdb), trusting local connections, user ``postgres``."""

    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for the router's connections

    def __init__(self):
        self.paths = require("initdb")
        bin_dir = os.path.dirname(self.paths["initdb"])
        self.postgres = os.path.join(bin_dir, "postgres")
        self.user = _service_user("postgres")
        self.port = free_port()
        self.dir = _owned_tempdir(self.user, "ringcache-postgres-")

    def prepare(self) -> None:
        subprocess.run([self.paths["initdb"], "-D", str(self.dir / "data"), "-A", "trust",
                        "-U", "postgres", "-E", "UTF8", "--no-sync"],
                       user=self.user, check=True, capture_output=True, timeout=60)

    def command(self) -> list[str]:
        return [self.postgres, "-D", str(self.dir / "data"), "-p", str(self.port),
                "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]

    def popen_kwargs(self) -> dict:
        return {"user": self.user}

    def ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def execute(self, *statements: tuple[str, tuple]) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            for sql, params in statements:
                connection.execute(sql, params)


class MariaDBServer(Server):
    """A data directory of its own (mariadb-install-db); ``root`` without a password over TCP."""

    def __init__(self):
        self.paths = require("mariadbd", "mariadb-install-db")
        self.user = _service_user("mysql")
        self.port = free_port()
        self.dir = _owned_tempdir(self.user, "ringcache-mariadb-")

    def prepare(self) -> None:
        user = ["--user=" + self.user] if self.user else []
        subprocess.run([self.paths["mariadb-install-db"], "--no-defaults",
                        f"--datadir={self.dir / 'data'}", *user,
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=60)

    def command(self) -> list[str]:
        user = ["--user=" + self.user] if self.user else []
        return [self.paths["mariadbd"], "--no-defaults", f"--datadir={self.dir / 'data'}", *user,
                f"--port={self.port}", "--bind-address=127.0.0.1",
                f"--socket={self.dir / 'mariadb.sock'}", f"--pid-file={self.dir / 'mariadb.pid'}",
                "--skip-log-bin", "--skip-name-resolve", "--innodb-buffer-pool-size=16M"]

    def ready(self) -> bool:
        import pymysql

        try:
            pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=2).close()
        except pymysql.err.OperationalError:
            return False
        return True

    def url(self, database: str) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def execute(self, *statements: tuple[str, tuple], database: str | None = None) -> None:
        import pymysql

        connection = pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                                     database=database, autocommit=True)
        try:
            with connection.cursor() as cursor:
                for sql, params in statements:
                    cursor.execute(sql, params or None)
        finally:
            connection.close()


def make_etcd_certificates(directory: Path) -> None:
    """ca.pem, and server.pem and client.pem it signed (keys beside them). etcd's JSON
    gateway dials etcd's own gRPC port with the server certificate, so that one serves
    as a client too (both purposes): etcd refuses the gateway's calls otherwise."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ringcache etcd test CA")
    uses = {"server": "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
            "client": "extendedKeyUsage=clientAuth\n"}
    for name, extensions in uses.items():
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=ringcache etcd {name}")
        (directory / f"{name}.ext").write_text(extensions)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext")


class EtcdServer(Server):
    """One etcd member on free loopback ports (client and peer), its data in ``dir``, so
    that it can be killed and started again with what it held. With ``tls`` its client
    port speaks TLS, and with ``client_certs`` requires a client certificate: ca.pem,
    server.pem and client.pem (with their keys) in ``dir``. ``token_ttl``: seconds an
    idle auth token lives."""

    stop_signal = signal.SIGKILL  # the outage the tests are about; its data is fsynced

    def __init__(self, tls: bool = False, client_certs: bool = False,
                 token_ttl: int | None = None):
        self.client_certs = client_certs
        self.paths = require("etcd", "etcdctl", "openssl")
        self.port = free_port()
        self.peer_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ringcache-etcd-"))
        self.tls = tls
        self.token_ttl = token_ttl
        self.root_password: str | None = None  # once auth is enabled

    def prepare(self) -> None:
        if self.tls:
            make_etcd_certificates(self.dir)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def url(self, key: str = "/ringcache/topology", port: int | None = None) -> str:
        prefix = "etcd+https" if self.tls else "etcd"
        return f"{prefix}://127.0.0.1:{port or self.port}{key}"

    def command(self, port: int | None = None) -> list[str]:
        client = f"{self.scheme}://127.0.0.1:{port or self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        tls = ["--cert-file", str(self.dir / "server.pem"), "--key-file",
               str(self.dir / "server.key")] if self.tls else []
        if self.client_certs:
            tls += ["--client-cert-auth", "--trusted-ca-file", str(self.dir / "ca.pem")]
        ttl = ["--auth-token-ttl", str(self.token_ttl)] if self.token_ttl else []
        return [self.paths["etcd"], "--name", "test", "--data-dir", str(self.dir / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"test={peer}", "--logger", "zap", "--log-level", "error",
                *tls, *ttl]

    def ready(self, port: int | None = None) -> bool:
        try:
            self.ctl("endpoint", "health", port=port, timeout=5)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return False
        return True

    def start_on(self, port: int) -> Process:
        """The same member and data on another client port (a place the tests' routers do
        not watch): to change what etcd holds while they cannot see it."""
        return start_process(self.command(port), lambda: self.ready(port), timeout=30)

    def ctl(self, *args: str, stdin: bytes | None = None, port: int | None = None,
            timeout: float = 15) -> str:
        """etcdctl against this member (as root once auth is enabled)."""
        tls = ["--cacert", str(self.dir / "ca.pem")] if self.tls else []
        if self.client_certs:
            tls += ["--cert", str(self.dir / "client.pem"), "--key", str(self.dir / "client.key")]
        user = ["--user", f"root:{self.root_password}"] if self.root_password else []
        endpoint = f"{self.scheme}://127.0.0.1:{port or self.port}"
        done = subprocess.run([self.paths["etcdctl"], "--endpoints", endpoint, *tls, *user,
                               "--dial-timeout", "2s", "--command-timeout", f"{int(timeout)}s",
                               *args], input=stdin, capture_output=True, check=True,
                              timeout=timeout + 5, env={**os.environ, "ETCDCTL_API": "3"})
        return done.stdout.decode()

    def put(self, key: str, value: bytes, port: int | None = None) -> None:
        """Write ``value`` by other means than ringcache (etcdctl)."""
        self.ctl("put", key, stdin=value, port=port)

    def revision(self, key: str, port: int | None = None) -> int:
        """The key's mod_revision (0 when absent)."""
        out = json.loads(self.ctl("get", key, "-w", "json", port=port))
        kvs = out.get("kvs") or []
        return int(kvs[0]["mod_revision"]) if kvs else 0

    def enable_auth(self, user: str, password: str, prefix: str) -> None:
        """A root user, and ``user`` who may read and write keys under ``prefix`` only."""
        self.ctl("user", "add", "root", "--new-user-password", "rootpw")
        self.ctl("user", "grant-role", "root", "root")
        self.ctl("user", "add", user, "--new-user-password", password)
        self.ctl("role", "add", "ringcache")
        self.ctl("role", "grant-permission", "ringcache", "--prefix=true", "readwrite", prefix)
        self.ctl("user", "grant-role", user, "ringcache")
        self.ctl("auth", "enable")
        self.root_password = "rootpw"


# An HTTP origin in its own process: GET answers from values.json (raw request path, and
# " " and the Authorization header if one was sent -> text), 500 for /items/boom, waits 2 s
# for paths under /slow/, and logs every request's client port and raw path.
ORIGIN_SCRIPT = r'''
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, directory = int(sys.argv[1]), sys.argv[2]

class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the router's pool is exercised

    def do_GET(self):
        with open(os.path.join(directory, "requests.log"), "a") as log:
            log.write(f"{self.client_address[1]} {self.path}\n")
        with open(os.path.join(directory, "values.json")) as f:
            values = json.load(f)
        wanted = " ".join(filter(None, [self.path, self.headers["Authorization"]]))
        if self.path.startswith("/slow/"):
            time.sleep(2)
        if self.path == "/items/boom":
            self.answer(500, b"the origin broke")
        elif wanted in values:
            self.answer(200, values[wanted].encode())
        else:
            self.answer(404, b"no such item")

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", port), Origin).serve_forever()
'''


class HTTPOrigin(Server):
    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ringcache-origin-"))

    def prepare(self) -> None:
        self.set_values({})

    def command(self) -> list[str]:
        return [sys.executable, "-c", ORIGIN_SCRIPT, str(self.port), str(self.dir)]

    def set_values(self, values: dict[str, str]) -> None:
        """Serve ``values`` (raw request path -> body) from now on."""
        tmp = self.dir / "values.json.tmp"
        tmp.write_text(json.dumps(values))
        tmp.replace(self.dir / "values.json")

    def requests(self) -> list[tuple[int, str]]:
        """(client port, raw path) of every GET so far."""
        log = self.dir / "requests.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [(int(port), path) for port, path in (line.split(" ", 1) for line in lines)]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# What a test's timing of a server timeout may fall short of it. The router's timers run
# on Twisted's reactor clock (the wall clock), the tests time with the monotonic clock: one
# full-suite run on a box loaded by a spinning process timed four 0.5 s source timeouts
# at 0.4990-0.4997 s (not seen again in repeated runs under heavier load, nor any jump
# between the two clocks). A timeout cut short by design would miss by far more.
CLOCK_SLACK = 0.01


def timed_error(call) -> tuple[str, float]:
    """The SERVER_ERROR text ``call()`` raises through pymemcache, and how long it took."""
    from pymemcache.exceptions import MemcacheServerError

    started = time.monotonic()
    with pytest.raises(MemcacheServerError) as error:
        call()
    return error.value.args[0].decode(), time.monotonic() - started


def wait_for(predicate, timeout: float = 10.0):
    """``predicate()`` once it is true (a SERVER_ERROR counts as false), or its last value
    after ``timeout`` seconds: for what a restarted server or a reconnect takes."""
    from pymemcache.exceptions import MemcacheServerError

    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except MemcacheServerError:
            result = None
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)
