"""`ringcache certs DIR [--node HOST ...] [--router-host HOST ...]`: throwaway certificates
for a demo or a test cluster, made with the `cryptography` package.

Two separate CAs, so that no certificate a client holds can ever reach a node:
  ca.pem        the cluster CA: node.pem (serverAuth only, naming every --node HOST)
                and router.pem (clientAuth only). OpenSSL checks those purposes, so a
                node's certificate cannot act as a router, nor a router's as a node.
  clients-ca.pem  the CA of the client ports: server.pem (the router's memcached TLS and
                HTTPS listeners, naming every --router-host HOST) and client.pem (for a
                listener that requires client certificates).
Keys are written readable by their owner only. For production, issue certificates from
your own CA: these are for trying the feature out.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU
from cryptography.x509.oid import NameOID

from shared.cli import ArgumentParser

LOOPBACK = ("localhost", "127.0.0.1", "::1")
FILES = ("ca.pem", "ca.key", "router.pem", "router.key", "node.pem", "node.key",
         "clients-ca.pem", "clients-ca.key", "server.pem", "server.key", "client.pem", "client.key")


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="ringcache certs",
                            description="Make a throwaway CA and certificates for a demo.")
    parser.add_argument("dir", metavar="DIR", help="directory to write them to (made if missing)")
    parser.add_argument("--node", action="append", default=[], metavar="NAME_OR_HOST",
                        help="a name or address routers dial nodes by (repeatable; default: "
                             "localhost, 127.0.0.1, ::1)")
    parser.add_argument("--router-host", action="append", default=[], metavar="NAME_OR_HOST",
                        help="a name or address clients dial the router by (repeatable; same default)")
    parser.add_argument("--days", type=int, default=365, help="validity (default 365)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.days < 1:
        return _refuse(f"--days must be at least 1, got {args.days}")
    taken = [name for name in FILES if os.path.exists(os.path.join(args.dir, name))]
    if taken:
        return _refuse(f"{os.path.join(args.dir, taken[0])} exists; "
                       "choose a new directory rather than replace a CA")
    try:
        for host in args.node + args.router_host:
            _name(host)  # refuse a bad name before writing anything
        os.makedirs(args.dir, exist_ok=True)
        written = write_all(args.dir, args.node or LOOPBACK, args.router_host or LOOPBACK, args.days)
    except (ValueError, OSError) as exc:
        return _refuse(str(exc))
    print(f"wrote {', '.join(written)} to {args.dir}")
    return 0


def _refuse(message: str) -> int:
    print(f"ringcache certs: {message}", file=sys.stderr)
    return 2


def write_all(directory: str, node_hosts: list[str], router_hosts: list[str], days: int) -> list[str]:
    """Make both CAs and the four certificates; the names of the files written."""
    node_hosts, router_hosts = [_name(h) for h in node_hosts], [_name(h) for h in router_hosts]
    cluster = _authority("ringcache cluster CA", days)
    clients = _authority("ringcache clients CA", days)
    made = {
        "ca": cluster,
        "router": _issue(cluster, "ringcache router", [], EKU.CLIENT_AUTH, days),
        "node": _issue(cluster, "ringcache node", node_hosts, EKU.SERVER_AUTH, days),
        "clients-ca": clients,
        "server": _issue(clients, "ringcache router (client ports)", router_hosts,
                         EKU.SERVER_AUTH, days),
        "client": _issue(clients, "ringcache client", [], EKU.CLIENT_AUTH, days),
    }
    written = []
    for name, (key, cert) in made.items():
        _write(os.path.join(directory, f"{name}.key"), _key_pem(key), private=True)
        _write(os.path.join(directory, f"{name}.pem"), _cert_pem(cert), private=False)
        written += [f"{name}.pem", f"{name}.key"]
    return written


def _name(text: str):
    """A subjectAltName entry: an IP address as such, anything else as a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if not text or any(c.isspace() or c in "/:@" for c in text):
        raise ValueError(f"{text!r} is neither an IP address nor a host name")
    return x509.DNSName(text)


def _authority(common_name: str, days: int):
    key = _new_key()
    name = _subject(common_name)
    builder = (_builder(name, name, key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_usage(cert_sign=True), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    return key, _sign(builder, key)


def _issue(authority, common_name: str, names: list, purpose, days: int):
    ca_key, ca_cert = authority
    key = _new_key()
    builder = (_builder(_subject(common_name), ca_cert.subject, key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_usage(cert_sign=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, _sign(builder, ca_key)


def _new_key():
    return ec.generate_private_key(ec.SECP256R1())


def _subject(common_name: str):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject, issuer, public_key, days: int):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # some clock skew
            .not_valid_after(now + datetime.timedelta(days=days)))


def _usage(cert_sign: bool):
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def _sign(builder, key):
    return builder.sign(key, hashes.SHA256())


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: str, data: bytes, private: bool) -> None:
    # O_EXCL: never replace a file that appeared since we looked.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
