"""The etcd client's pieces that need no etcd: URLs, credentials, answers, the watch stream."""

from __future__ import annotations

import base64
import json

import pytest
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from router.config.etcd import (
    Compacted,
    Credentials,
    EtcdError,
    EtcdURL,
    EtcdUnavailable,
    _answer,
    _Messages,
)
from tests.helpers import outcomes


def test_the_key_is_the_path_with_its_slash_and_endpoints_are_a_list():
    url = EtcdURL.parse("etcd://10.0.0.1:2379,10.0.0.2/ringcache/topo%20logy")
    assert url.scheme == "http" and url.key == "/ringcache/topo logy"
    assert url.endpoints == (("10.0.0.1", 2379), ("10.0.0.2", 2379))
    assert [url.base(i) for i in range(3)] == ["http://10.0.0.1:2379", "http://10.0.0.2:2379",
                                               "http://10.0.0.1:2379"]
    assert EtcdURL.parse("etcd+https://[::1]:2379/k").base(0) == "https://[::1]:2379"


@pytest.mark.parametrize("text, problem", [
    ("http://h:2379/k", "expected etcd://HOST:PORT/KEY"),
    ("etcd://h:2379", "no key"),
    ("etcd://h:2379/", "no key"),
    ("etcd://h:port/k", "expected HOST:PORT"),
    ("etcd://user@h:2379/k", "--etcd-user"),
    ("etcd://h:2379/k?x=1", "no ?query"),
])
def test_bad_urls_say_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match=problem.replace("?", r"\?")):
        EtcdURL.parse(text)


def test_credentials_come_from_flags_else_the_environment(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    env = {"RINGCACHE_ETCD_USER": "env-user", "RINGCACHE_ETCD_PASSWORD": "env-pw",
           "RINGCACHE_ETCD_CA": "/env/ca.pem"}
    assert Credentials.gather(environ=env) == Credentials("/env/ca.pem", None, None, "env-user",
                                                          "env-pw")
    got = Credentials.gather(ca="/flag/ca.pem", user="flag-user",
                             password_file=str(tmp_path / "pw"), environ=env)
    assert (got.ca, got.user, got.password) == ("/flag/ca.pem", "flag-user", "s3cret")
    assert Credentials.gather(environ={}) == Credentials()


@pytest.mark.parametrize("kwargs, env, problem", [
    ({"cert": "c.pem"}, {}, "both --etcd-cert and --etcd-key"),
    ({"user": "u"}, {}, "has no password"),
    ({}, {"RINGCACHE_ETCD_PASSWORD": "pw"}, "without a user"),
    ({"user": "u", "password_file": "/nonexistent/pw"}, {}, "cannot read the etcd password file"),
])
def test_incomplete_credentials_are_refused(kwargs, env, problem):
    with pytest.raises(ValueError, match=problem):
        Credentials.gather(environ=env, **kwargs)


def test_answers_map_to_errors():
    ok = json.dumps({"header": {"revision": "3"}}).encode()
    assert _answer(200, ok, "w") == {"header": {"revision": "3"}}
    expired = json.dumps({"error": "etcdserver: invalid auth token",
                          "message": "etcdserver: invalid auth token", "code": 16}).encode()
    with pytest.raises(EtcdError) as error:
        _answer(401, expired, "http://e:2379")
    assert error.value.code == 16 and str(error.value) == "http://e:2379: etcdserver: invalid auth token"
    with pytest.raises(EtcdUnavailable):
        _answer(503, json.dumps({"message": "no leader", "code": 14}).encode(), "w")
    with pytest.raises(EtcdError, match=r"not an etcd JSON answer \(HTTP 400: Client sent"):
        _answer(400, b"Client sent an HTTP request to an HTTPS server.\n", "w")
    with pytest.raises(EtcdUnavailable, match="etcd 3.4 or newer"):
        _answer(404, b'{"code": 5, "message": "Not Found"}', "w")


class _Transport:
    stopped = False

    def stopProducing(self):
        self.stopped = True


def stream(messages: list):
    got = []
    protocol = _Messages(got.append)
    protocol.makeConnection(_Transport())
    return protocol, got


def _event(value: bytes, revision: int) -> dict:
    return {"kv": {"key": "aw==", "mod_revision": str(revision),
                   "value": base64.b64encode(value).decode()}}


@pytest.mark.parametrize("split", [None, 1, 7])
def test_the_watch_stream_is_one_message_a_line_however_it_arrives(split):
    lines = [{"result": {"created": True}}, {"result": {"events": [_event(b"v", 4)]}}]
    data = b"".join(json.dumps(m).encode() + b"\n" for m in lines)
    protocol, got = stream(lines)
    chunks = [data] if split is None else [data[i:i + split] for i in range(0, len(data), split)]
    for chunk in chunks:
        protocol.dataReceived(chunk)
    assert got == lines
    done = outcomes(protocol.finished)
    protocol.connectionLost(Failure(ResponseDone()))
    assert done == [None]


def test_a_bad_message_or_a_broken_stream_fails_the_watch_and_closes_it():
    protocol, got = stream([])
    done = outcomes(protocol.finished)
    protocol.dataReceived(b"{not json\n")
    assert done[0].check(ValueError) and protocol.transport.stopped
    protocol, got = stream([])
    done = outcomes(protocol.finished)
    protocol.connectionLost(Failure(ConnectionResetError("reset")))
    assert done[0].check(EtcdUnavailable)


def test_cancelling_the_watch_closes_the_connection():
    protocol, got = stream([])
    done = outcomes(protocol.finished)
    protocol.finished.cancel()
    assert protocol.transport.stopped and done[0].check(CancelledError)


def test_compacted_says_from_where():
    assert Compacted(7).revision == 7 and "from 7 on" in str(Compacted(7))
