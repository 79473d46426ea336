"""The static memory plan (issue 22, item 1) on hand-made lifetimes."""
import random

import pytest

from tinycnn.arena import Tensor, buffers, lower_bound, overlapping, plan


def test_a_chain_needs_two_buffers_of_the_largest_pair():
    # a -> b -> c -> d, each read by the next op only: two buffers are live at a time
    ts = [Tensor("a", 100, 0, 1), Tensor("b", 60, 1, 2), Tensor("c", 80, 2, 3), Tensor("d", 8, 3, 3)]
    p = plan(ts)
    assert p.lower_bound == 160 and p.arena_bytes == 160
    assert p.offsets == {"a": 0, "b": 100, "c": 0, "d": 80}
    assert not overlapping(p)


def test_a_skip_connection_keeps_its_source_alive():
    ts = [Tensor("x", 40, 0, 3), Tensor("y", 40, 1, 2), Tensor("z", 40, 2, 3), Tensor("s", 40, 3, 3)]
    p = plan(ts)
    assert p.lower_bound == 120 and p.arena_bytes == 120 and not overlapping(p)


def test_in_place_ops_share_the_buffer_of_an_input_that_dies_there():
    ts = [Tensor("x", 64, 0, 2), Tensor("g", 4, 1, 2), Tensor("y", 64, 2, 2, alias="x")]
    assert [b.names for b in buffers(ts)] == [("x", "y"), ("g",)]
    # x is read at op 2, which writes y over it: one buffer, never two
    ts = [Tensor("x", 64, 0, 2), Tensor("g", 4, 1, 2), Tensor("y", 64, 2, 3, alias="x")]
    p = plan(ts)
    assert p.offsets["x"] == p.offsets["y"] and p.lower_bound == 68 == p.arena_bytes


def test_an_alias_of_a_tensor_that_lives_on_is_refused():
    with pytest.raises(ValueError, match="dies at op 1"):
        plan([Tensor("x", 8, 0, 2), Tensor("y", 8, 1, 2, alias="x")])
    with pytest.raises(ValueError, match="listed twice"):
        plan([Tensor("x", 8, 0, 1), Tensor("x", 8, 1, 1)])


def test_offsets_are_aligned_and_sizes_rounded():
    p = plan([Tensor("a", 5, 0, 1), Tensor("b", 3, 0, 1), Tensor("c", 7, 1, 1)])
    assert all(o % 4 == 0 for o in p.offsets.values()) and p.arena_bytes % 4 == 0
    assert p.arena_bytes >= p.lower_bound == 15


def test_no_two_live_tensors_overlap_on_random_lifetimes():
    rng = random.Random(0)
    for case in range(300):
        ops = rng.randint(1, 25)
        ts = []
        for i in range(rng.randint(1, 30)):
            first = rng.randrange(ops)
            ts.append(Tensor(f"t{i}", rng.choice([0, 1, 3, 4, 17, 64, 100, 784, 7840]), first,
                             rng.randint(first, min(ops - 1, first + rng.randint(0, 6)))))
        for t in list(ts):  # a few in-place outputs of tensors that die where they are made
            dying = [s for s in ts if s.last == t.first and s.name != t.name and s.first < t.first]
            if dying and rng.random() < 0.2 and all(u.alias != dying[0].name for u in ts):
                ts[ts.index(t)] = Tensor(t.name, t.size, t.first, t.last, alias=dying[0].name)
        p = plan(ts)
        assert not overlapping(p), case
        assert p.arena_bytes >= p.lower_bound == lower_bound(list(p.buffers))
        assert p.arena_bytes <= sum(b.size + 3 for b in p.buffers)
        for b in p.buffers:
            assert len({p.offsets[n] for n in b.names}) == 1
