"""TLS on the router's client ports, against a real router: pymemcache's tls_context on the
memcached port (as memcached's -Z), here requiring client certificates, and HTTPS."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheUnexpectedCloseError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from shared.net import write_now
from tests.integration.cluster import Cluster
from tests.integration.security.peers import make_certs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def client_context(certs, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs["clients-ca.pem"])
    if with_certificate:
        context.load_cert_chain(certs["client.pem"], certs["client.key"])
    return context


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, certs):
    router_extra = (
        f"  memcache_tls: {{cert: {certs['server.pem']}, key: {certs['server.key']}, "
        f"ca: {certs['clients-ca.pem']}}}\n"
        f"  http_tls: {{cert: {certs['server.pem']}, key: {certs['server.key']}}}\n")
    c = Cluster(tmp_path_factory.mktemp("tls"), nodes=1, router_extra=router_extra,
                https=ssl.create_default_context(cafile=certs["clients-ca.pem"])).start()
    yield c
    c.stop()


def test_pymemcache_with_tls_context_and_a_client_certificate_is_served(cluster, certs):
    client = cluster.memcache(tls_context=client_context(certs, with_certificate=True),
                              default_noreply=False)
    assert client.set("sessions:tls", b"over TLS") is True
    assert client.get("sessions:tls") == b"over TLS"
    assert client.get("scores:Tom") == b"value-of-Tom"
    assert client.get_many(["sessions:tls", "scores:Jack"]) == {
        "sessions:tls": b"over TLS", "scores:Jack": b"value-of-Jack"}
    client.close()


def test_the_memcached_port_refuses_clients_without_a_certificate_and_plaintext(cluster, certs):
    no_certificate = cluster.memcache(tls_context=client_context(certs, with_certificate=False))
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE"):
        no_certificate.get("sessions:tls")
    plaintext = Client(("127.0.0.1", cluster.memcache_port), timeout=2, connect_timeout=2)
    with pytest.raises(MemcacheUnexpectedCloseError):
        plaintext.get("sessions:tls")


def test_https_is_served_to_a_client_that_trusts_the_ca(cluster, certs):
    status, body = cluster.http("GET", "/healthz")
    assert status == 200
    assert cluster.http_json("GET", "/v1/ring")["nodes"][0]["state"] == "up"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"https://127.0.0.1:{cluster.http_port}/healthz", timeout=5,
                               context=ssl.create_default_context())  # the system's CAs only
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.http_port}/healthz", timeout=5)


def test_write_now_never_writes_around_a_wrapping_transport():
    class Socket(StringTransport):
        """A TCP-looking transport that must not be written to directly."""

        socket, connected, disconnecting, dataBuffer, _tempDataLen = object(), True, False, b"", 0

        def writeSomeData(self, data):
            raise AssertionError("wrote around the wrapper (a TLS layer would be bypassed)")

    wrapper = ProtocolWrapper(WrappingFactory(Factory.forProtocol(Protocol)), Protocol())
    raw = Socket()
    wrapper.makeConnection(raw)
    assert wrapper.socket is raw.socket  # what ProtocolWrapper.__getattr__ hands out
    write_now(wrapper, b"answer")
    assert raw.value() == b"answer"
