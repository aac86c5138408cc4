"""The consistent-hash ring: placement read by eye, exact moves on joins and leaves, digests."""

from __future__ import annotations

import random

import pytest

from router.cluster.ring import RING_SIZE, HashRing, murmur3_32, routing_key


def by_eye(data: bytes) -> int:
    """Point ``NAME-I`` sits at the number "I" + "NAME"; a key sits at its own number.

    Like groupcache's test swapping in strconv.Atoi: node "6" with 3 points sits at
    6, 16 and 26, so owners can be read off the key.
    """
    name, sep, i = data.partition(b"-")
    return int(i + name) if sep else int(data)


def nodes(count: int, weight: float = 1.0) -> list[tuple[str, float]]:
    return [(f"node-{i}", weight) for i in range(count)]


class TestByEye:
    ring = HashRing([("6", 1), ("4", 1), ("2", 1)], vnodes=3, hash_fn=by_eye)

    @pytest.mark.parametrize(
        "key, owner",
        [(b"2", "2"), (b"11", "2"), (b"23", "4"), (b"27", "2"), (b"0", "2"), (b"26", "6"), (b"15", "6")],
    )
    def test_owner_is_first_point_at_or_after_the_key(self, key, owner):
        # Points: 2 4 6 12 14 16 22 24 26; 27 wraps around to 2.
        assert self.ring.owner(key) == owner

    def test_adding_a_node_takes_only_the_keys_before_its_points(self):
        grown = HashRing([("6", 1), ("4", 1), ("2", 1), ("8", 1)], vnodes=3, hash_fn=by_eye)
        # 8, 18 and 28 now exist: 27 moves from 2 to 8, the rest stay.
        assert [grown.owner(k) for k in (b"2", b"11", b"23", b"27")] == ["2", "2", "4", "8"]

    def test_owners_walk_clockwise_skipping_repeats(self):
        assert self.ring.owners(b"5", 3) == ["6", "2", "4"]
        assert self.ring.owners(b"25", 2) == ["6", "2"]

    def test_shares_are_exact_arcs(self):
        shares = self.ring.shares()
        # Node "2" owns (26, 2**32) plus [0, 2], (6, 12] and (16, 22].
        assert shares["2"] == (RING_SIZE - 26 + 2 + 6 + 6) / RING_SIZE
        assert shares["4"] == 6 / RING_SIZE
        assert shares["6"] == 6 / RING_SIZE
        assert sum(shares.values()) == 1.0

    def test_equal_points_go_to_the_lower_name(self):
        ring = HashRing([("b", 1), ("a", 1)], vnodes=1, hash_fn=lambda data: 7)
        assert ring.owner(b"anything") == "a"
        assert ring.shares() == {"a": 1.0, "b": 0.0}

    def test_weight_sets_the_number_of_points(self):
        ring = HashRing([("1", 2), ("3", 0.1)], vnodes=2, hash_fn=by_eye)
        # "1" gets round(2*2)=4 points (1, 11, 21, 31); "3" gets max(1, round(0.2))=1 point (3).
        assert [ring.owner(str(k).encode()) for k in (1, 2, 3, 4, 11, 31, 32)] == ["1", "3", "3", "1", "1", "1", "1"]


class TestMurmur:
    def test_default_hash_is_unsigned_murmur3_32(self):
        assert murmur3_32(b"foo") == 4138058784
        assert routing_key("scores", b"k1") == b"scores:k1"

    def test_placement_is_pinned(self):
        # Every router must place keys identically, across versions too: a change here
        # moves keys on a live deployment and must come with a new placement version.
        ring = HashRing([("node-a", 1), ("node-b", 1), ("node-c", 1)])
        assert [ring.owner(routing_key("scores", str(i).encode())) for i in range(8)] == [
            "node-c", "node-c", "node-b", "node-b", "node-c", "node-a", "node-a", "node-b"
        ]
        assert ring.digest == "ebbcad2e11608842"

    def test_empty_ring(self):
        ring = HashRing([])
        with pytest.raises(LookupError):
            ring.owner(b"k")
        assert ring.owners(b"k", 3) == []
        assert ring.shares() == {}

    @pytest.mark.parametrize(
        "args, problem",
        [
            (([("a", 1), ("a", 2)],), "duplicate node name 'a'"),
            (([("a", 0)],), "weight must be positive"),
            (([("a", float("nan"))],), "weight must be positive"),
            (([("a", 1)], 0), "vnodes must be a positive integer"),
        ],
    )
    def test_bad_input(self, args, problem):
        with pytest.raises(ValueError, match=problem):
            HashRing(*args)


class TestOwners:
    ring = HashRing(nodes(5))

    def test_distinct_capped_and_led_by_owner(self):
        for i in range(500):
            key = f"key-{i}".encode()
            two = self.ring.owners(key, 2)
            every = self.ring.owners(key, 99)
            assert len(two) == 2 and two[0] == self.ring.owner(key)
            assert sorted(every) == sorted(self.ring.weights) and every[:2] == two

    def test_zero(self):
        assert self.ring.owners(b"k", 0) == []


class TestMoves:
    @pytest.mark.parametrize("count", [3, 4, 9])
    def test_join_moves_exactly_the_new_nodes_share(self, count):
        before, after = HashRing(nodes(count)), HashRing(nodes(count + 1))
        new = f"node-{count}"
        moved = before.diff(after)
        assert moved == after.shares()[new]
        assert moved == pytest.approx(1 / (count + 1), abs=0.03)
        assert {dst for _, dst in before.moves(after)} == {new}
        assert sum(before.moves(after).values()) == pytest.approx(moved, abs=1e-12)

    @pytest.mark.parametrize("count", [4, 5, 10])
    def test_leave_moves_exactly_the_leavers_share(self, count):
        before, after = HashRing(nodes(count)), HashRing(nodes(count - 1))
        leaver = f"node-{count - 1}"
        assert before.diff(after) == before.shares()[leaver]
        assert {src for src, _ in before.moves(after)} == {leaver}

    def test_diff_with_itself_is_zero(self):
        ring = HashRing(nodes(4))
        assert ring.diff(ring) == 0.0
        assert ring.moves(HashRing(reversed(nodes(4)))) == {}

    def test_diff_matches_sampled_keys(self):
        before = HashRing([("node-a", 1), ("node-b", 1), ("node-c", 1)])
        after = HashRing([("node-a", 1), ("node-b", 2), ("node-d", 1)])
        rng = random.Random(7)
        samples = 20_000
        changed = sum(
            before.owner(key) != after.owner(key)
            for key in (rng.randbytes(12) for _ in range(samples))
        )
        # Binomial standard error at p≈0.6, n=20000 is 0.0035; allow four of them.
        assert before.diff(after) == pytest.approx(changed / samples, abs=0.014)

    def test_diff_of_rings_with_an_injected_hash(self):
        before = HashRing([("6", 1), ("4", 1), ("2", 1)], vnodes=3, hash_fn=by_eye)
        after = HashRing([("6", 1), ("4", 1), ("2", 1), ("8", 1)], vnodes=3, hash_fn=by_eye)
        # "8" takes (6, 8], (16, 18] and (26, 28] from "2".
        assert before.moves(after) == {("2", "8"): 6 / RING_SIZE}


class TestShares:
    def test_shares_follow_weights(self):
        shares = HashRing([("node-a", 1), ("node-b", 1), ("node-c", 2)]).shares()
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
        # 160 points per unit of weight leave a few points of spread around weight/total.
        assert shares["node-a"] == pytest.approx(0.25, abs=0.04)
        assert shares["node-b"] == pytest.approx(0.25, abs=0.04)
        assert shares["node-c"] == pytest.approx(0.50, abs=0.04)


class TestDigest:
    base = [("node-a", 1), ("node-b", 1), ("node-c", 2)]

    def test_independent_of_order(self):
        assert HashRing(self.base).digest == HashRing(reversed(self.base)).digest

    @pytest.mark.parametrize(
        "changed, vnodes",
        [
            ([("node-a", 1), ("node-b", 1), ("node-c", 1)], 160),
            ([("node-a", 1), ("node-b", 1), ("node-d", 2)], 160),
            ([("node-a", 1), ("node-b", 1)], 160),
            (base, 100),
        ],
    )
    def test_changes_with_the_placement(self, changed, vnodes):
        assert HashRing(changed, vnodes).digest != HashRing(self.base).digest

    def test_names_equal_rings_equally(self):
        # The digest names the placement, so the same points written two ways agree.
        assert HashRing([("a", 1), ("b", 2)], 160).digest == HashRing([("a", 0.5), ("b", 1)], 320).digest

    def test_differs_with_the_hash(self):
        numbered = [("1", 1), ("2", 1)]
        assert HashRing(numbered, hash_fn=by_eye).digest != HashRing(numbered).digest
