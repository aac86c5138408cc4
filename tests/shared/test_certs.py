"""`ringcache certs`: two CAs, each certificate for one purpose, keys private."""

from __future__ import annotations

import os
import stat

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

from shared.cli import main

FILES = {"ca", "router", "node", "clients-ca", "server", "client"}


def load(directory, name) -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes())


def test_certs_makes_two_cas_and_one_certificate_per_purpose(tmp_path, capsys):
    out = tmp_path / "certs"
    assert main(["certs", str(out), "--node", "node-a", "--node", "10.0.0.5",
                 "--router-host", "cache.example"]) == 0
    assert capsys.readouterr().out.startswith("wrote ca.pem, ca.key, router.pem")
    assert {p.stem for p in out.iterdir()} == FILES
    for name in FILES:
        assert stat.S_IMODE(os.stat(out / f"{name}.key").st_mode) == 0o600
    ca, clients_ca = load(out, "ca"), load(out, "clients-ca")
    issuers = {name: load(out, name).issuer for name in FILES}
    assert issuers == {"ca": ca.subject, "router": ca.subject, "node": ca.subject,
                       "clients-ca": clients_ca.subject, "server": clients_ca.subject,
                       "client": clients_ca.subject}

    def purposes(name):
        return list(load(out, name).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert (purposes("router"), purposes("node")) == ([EKU.CLIENT_AUTH], [EKU.SERVER_AUTH])
    assert (purposes("client"), purposes("server")) == ([EKU.CLIENT_AUTH], [EKU.SERVER_AUTH])
    names = load(out, "node").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == ["node-a", "10.0.0.5"]
    names = load(out, "server").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == ["cache.example"]


def test_certs_never_replaces_a_ca_and_refuses_bad_names(tmp_path, capsys):
    assert main(["certs", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["certs", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"ringcache certs: {tmp_path}/ca.pem exists; choose a new "
                                       "directory rather than replace a CA\n")
    assert main(["certs", str(tmp_path / "new"), "--node", "a b"]) == 2
    assert capsys.readouterr().err == "ringcache certs: 'a b' is neither an IP address nor a host name\n"
    assert not (tmp_path / "new").exists()
