"""`ringcache topology push FILE URL [--yes]` and `ringcache topology get URL`: the routers'
topology in etcd.

push validates FILE with the parse every router uses, shows what the change moves
against what etcd holds now (router/cluster/plan.py: keys moved per node pair, each
node's share), asks on a terminal unless --yes, and writes FILE's text with a
compare-and-swap on the revision it read: a push that raced another is refused and
writes nothing. Every router watching the key then reloads it.
"""

from __future__ import annotations

import json
import sys

from router.cluster.plan import plan, ring_for
from router.config import etcd
from router.config.origin import Reader
from router.config.topology import Topology, TopologyError
from shared.cli import ArgumentParser

PROG = "ringcache topology"


class Refused(Exception):
    """Not done, for a reason that is not bad input (exit status 1)."""


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="The routers' topology, kept in etcd.")
    commands = parser.add_subparsers(dest="command", metavar="push|get", required=True,
                                     parser_class=ArgumentParser)
    push = commands.add_parser("push", help="validate FILE, show the plan, write it to URL")
    push.add_argument("file", metavar="FILE", help="the topology file to push")
    push.add_argument("url", metavar="URL", help="etcd://HOST:PORT/KEY (etcd+https:// for TLS)")
    push.add_argument("--yes", action="store_true", help="write without asking")
    push.add_argument("--base-dir", metavar="DIR",
                      help="where the file's relative paths are checked (default: its directory)")
    get = commands.add_parser("get", help="print the topology at URL")
    get.add_argument("url", metavar="URL", help="etcd://HOST:PORT/KEY (etcd+https:// for TLS)")
    get.add_argument("--json", action="store_true",
                     help="print JSON: the document, its revision and ring digest")
    for sub in (push, get):
        etcd.add_arguments(sub)
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    prog = f"{PROG} {args.command}"
    try:
        url = etcd.EtcdURL.parse(args.url)
        credentials = etcd.credentials_from(args)
        if args.command == "push":
            new, text = _validated(args.file, args.base_dir)
            if not args.yes and not sys.stdin.isatty():
                raise ValueError("stdin is not a terminal to ask on: add --yes to push "
                                 "without asking")
            work = lambda client: _push(client, url, new, text, args.file, args.yes)  # noqa: E731
        else:
            work = lambda client: _get(client, url, args.json)  # noqa: E731
    except (ValueError, TopologyError) as exc:  # bad input: one line, exit 2
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(url, credentials, work)
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except (Refused, etcd.EtcdError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1


def _validated(path: str, base_dir: str | None) -> tuple[Topology, bytes]:
    """FILE parsed as a router parses it, and its bytes (pushed unchanged)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    return Reader(base_dir).load(path), data


def _run(url, credentials, work) -> int:
    """``work(client)`` (a coroutine answering the exit status) in a reactor of its own."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    client = etcd.EtcdClient(url, reactor, credentials)
    outcome: list = []

    async def run():
        try:
            outcome.append(await work(client))
        except BaseException as exc:  # noqa: BLE001 - handed back to main
            outcome.append(exc)
        finally:
            await client.close()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()).addBoth(
        lambda _: reactor.stop()))
    reactor.run(installSignalHandlers=False)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


async def _current(client, url) -> tuple[object, Topology | None, str | None]:
    """What the key holds: its KeyValue (None: absent), parsed, or why it does not parse."""
    kv, _ = await client.get(url.key)
    if kv is None:
        return None, None, None
    try:
        return kv, Reader().parse(kv.value.decode("utf-8"), url.text, kv.mod_revision), None
    except UnicodeDecodeError:
        return kv, None, "not UTF-8 text"
    except TopologyError as exc:
        return kv, None, str(exc)


async def _push(client, url, new: Topology, text: bytes, path: str, yes: bool) -> int:
    kv, current, problem = await _current(client, url)
    if kv is not None and kv.value == text:
        print(f"{url.text} already holds {path} (revision {kv.mod_revision}); nothing to push")
        return 0
    if kv is None:
        print(f"{url.text} holds no topology yet: {path} will be its first")
    elif current is None:
        print(f"what {url.text} holds now (revision {kv.mod_revision}) is not a valid "
              f"topology ({problem}); every router refused it")
    print(plan_table(plan(ring_for(current) if current else None, new), kv))
    if not yes:
        answer = input(f"Write {path} to {url.text}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise Refused("nothing written")
    base = kv.mod_revision if kv is not None else 0
    written, revision = await client.put_if(url.key, text, base)
    if not written:
        now = f"revision {revision}" if revision else "deleted"
        raise Refused(f"refused: {url.text} changed after it was read (revision {base}, now "
                      f"{now}): another push won; nothing written, push again to see the new plan")
    print(f"pushed {path} to {url.text}: revision {revision}, ring digest {ring_for(new).digest}")
    return 0


def plan_table(result: dict, kv) -> str:
    """The plan for people: the digests, the share of keys that moves, per node pair,
    and each node's share of the ring before and after."""
    revision = f" (revision {kv.mod_revision})" if kv is not None else ""
    lines = [f"ring digest {result['digest'] or '(none)'}{revision} -> {result['new_digest']}",
             f"keys moved: {result['moved']:.1%}"]
    pairs = [(f"{m['from']} -> {m['to']}", m["share"]) for m in result["moves"]]
    width = max([len(p) for p, _ in pairs] + [0])
    lines += [f"  {pair:<{width}}  {share:6.1%}" for pair, share in pairs]
    names = sorted(set(result["shares_before"]) | set(result["shares_after"]))
    width = max(len(n) for n in names + ["node"])
    lines.append(f"  {'node':<{width}}  before   after")
    for name in names:
        before, after = result["shares_before"].get(name), result["shares_after"].get(name)
        lines.append(f"  {name:<{width}}  {_share(before):>6}  {_share(after):>6}")
    return "\n".join(lines)


def _share(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


async def _get(client, url, as_json: bool) -> int:
    kv, current, problem = await _current(client, url)
    if kv is None:
        raise Refused(f"{url.text} holds no topology")
    if as_json:
        print(json.dumps({
            "url": url.text, "key": url.key, "revision": kv.mod_revision,
            "created_revision": kv.create_revision, "version": kv.version,
            "digest": ring_for(current).digest if current else None, "error": problem,
            "document": kv.value.decode("utf-8", "replace")}, indent=2))
    else:
        sys.stdout.write(kv.value.decode("utf-8", "replace"))
    return 0
