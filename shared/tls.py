"""TLS from PEM files for both roles: a server identity that may require its clients to hold
a certificate from a CA, and a client that checks its server's certificate against a CA.

Loading fails early with one line naming the file, so a bad path or a key that does not
match its certificate stops a process at start rather than failing every handshake.
"""

from __future__ import annotations

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.protocols.tls import TLSMemoryBIOFactory

_BEGIN = b"-----BEGIN CERTIFICATE-----"


class TLSConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file."""


def server_options(cert: str, key: str, ca: str | None = None) -> ssl.CertificateOptions:
    """A server's TLS settings: ``cert`` (leaf first, then any intermediates) and ``key``;
    with ``ca``, every client must present a certificate that CA signed."""
    leaf, *chain = _certificates(cert)
    private = _private_key(key)
    trust = {"trustRoot": ssl.trustRootFromCertificates(_certificates(ca))} if ca else {}
    options = ssl.CertificateOptions(
        privateKey=private, certificate=leaf.original, extraCertChain=[c.original for c in chain],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2, **trust)
    _check(options, cert, key)
    return options


def client_options(hostname: str, ca: str | None, cert: str | None = None,
                   key: str | None = None):
    """A client's TLS settings for a server at ``hostname`` (a DNS name or an IP address,
    which the server's certificate must name), trusting only ``ca`` (None: the system's
    trusted CAs); with ``cert`` and ``key``, the client shows that certificate when asked."""
    identity = None
    if cert is not None:
        leaf, *_ = _certificates(cert)
        identity = ssl.PrivateCertificate.fromCertificateAndKeyPair(
            leaf, ssl.KeyPair(_private_key(key)))
        _check(ssl.CertificateOptions(privateKey=identity.privateKey.original,
                                      certificate=identity.original), cert, key)
    return ssl.optionsForClientTLS(
        hostname, trustRoot=ssl.trustRootFromCertificates(_certificates(ca)) if ca else None,
        clientCertificate=identity, extraCertificateOptions={
            "raiseMinimumTo": ssl.TLSVersion.TLSv1_2})


class TLSServerEndpoint:
    """A stream server endpoint whose connections speak TLS over ``endpoint``'s."""

    def __init__(self, endpoint, options):
        self._endpoint = endpoint
        self._options = options

    def listen(self, factory):
        return self._endpoint.listen(TLSMemoryBIOFactory(self._options, False, factory))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError as exc:
        raise TLSConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _certificates(path: str) -> list[ssl.Certificate]:
    data = _read(path)
    blocks = [_BEGIN + part for part in data.split(_BEGIN)[1:]]
    try:
        certs = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as exc:  # pyOpenSSL's errors are lists of OpenSSL reasons
        raise TLSConfigError(f"{path}: not a PEM certificate: {exc}") from None
    if not certs:
        raise TLSConfigError(f"{path}: holds no PEM certificate")
    return certs


def _private_key(path: str):
    try:
        return crypto.load_privatekey(crypto.FILETYPE_PEM, _read(path))
    except TLSConfigError:
        raise
    except Exception as exc:
        raise TLSConfigError(f"{path}: not a PEM private key: {exc}") from None


def _check(options: ssl.CertificateOptions, cert: str, key: str) -> None:
    try:
        options.getContext()  # builds the OpenSSL context, checking the key fits the cert
    except SSL.Error as exc:
        raise TLSConfigError(f"{key} is not the private key of {cert}: {exc}") from None
