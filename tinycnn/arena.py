"""A static memory plan for one forward pass: tensor lifetimes -> offsets in one arena (issue 22).

Each tensor has a size in bytes and a lifetime, the index of the op that writes it (``first``)
to the index of the last op that reads it (``last``), both inclusive: at op ``t`` its inputs and
its output are all live, so they never share bytes unless the op says it may. That is the
``alias``: a tensor may name an input that dies at the op that makes it (``alias.last ==
first``) and take that input's buffer: an elementwise op writing element ``i`` after reading
element ``i`` (a lookup table, a broadcast multiply or add) or a Reshape, whose bytes do not
move. Aliased tensors form one *buffer* (the largest size, the union of the lifetimes).

The plan is TensorFlow Lite Micro's GreedyMemoryPlanner: buffers largest first (ties: the
earlier first), each at the lowest aligned offset where it overlaps no placed buffer whose
lifetime overlaps its own. The arena is the end of the highest buffer. The lower bound of
any plan of these buffers is the largest sum of sizes live at one op.

Pure Python (no torch, no onnx): the C writer and the tests give it hand-made lifetimes alike.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 4  # bytes: every buffer starts at a multiple of this


@dataclass(frozen=True)
class Tensor:
    name: str
    size: int  # bytes
    first: int  # op that writes it
    last: int  # last op that reads it (== first if nothing reads it)
    alias: str | None = None  # an input dying at `first` whose buffer this tensor may take


@dataclass(frozen=True)
class Buffer:
    names: tuple[str, ...]  # the tensors that share it, the first one its owner
    size: int
    first: int
    last: int

    def overlaps(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class Plan:
    offsets: dict  # tensor name -> byte offset in the arena
    arena_bytes: int
    lower_bound: int
    buffers: tuple[Buffer, ...]


def _check(tensors: list[Tensor]) -> dict:
    by_name = {}
    for t in tensors:
        if t.name in by_name:
            raise ValueError(f"tensor {t.name!r} is listed twice")
        if t.size < 0 or t.last < t.first:
            raise ValueError(f"tensor {t.name!r} has size {t.size} and lifetime {t.first}..{t.last}")
        by_name[t.name] = t
    for t in tensors:
        if t.alias is not None:
            source = by_name.get(t.alias)
            if source is None or source.last != t.first:
                raise ValueError(f"tensor {t.name!r} may take {t.alias!r}'s buffer only if that tensor "
                                 f"exists and dies at op {t.first}")
    return by_name


def buffers(tensors: list[Tensor]) -> list[Buffer]:
    """The tensors grouped into buffers along their alias chains."""
    by_name = _check(tensors)
    root = {}
    for t in sorted(tensors, key=lambda t: t.first):
        root[t.name] = root[t.alias] if t.alias is not None else t.name
    groups = {}
    for t in tensors:
        groups.setdefault(root[t.name], []).append(by_name[t.name])
    out = []
    for owner, members in groups.items():
        members.sort(key=lambda t: t.first)
        out.append(Buffer(tuple(m.name for m in members), max(m.size for m in members),
                          min(m.first for m in members), max(m.last for m in members)))
    return sorted(out, key=lambda b: (b.first, b.names[0]))


def lower_bound(bufs: list[Buffer]) -> int:
    """The largest sum of bytes of buffers live at one op."""
    if not bufs:
        return 0
    ops = range(min(b.first for b in bufs), max(b.last for b in bufs) + 1)
    return max(sum(b.size for b in bufs if b.first <= t <= b.last) for t in ops)


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _lowest_offset(buf: Buffer, placed: list[tuple[int, Buffer]], alignment: int) -> int:
    offset = 0
    for start, other in sorted((p for p in placed if p[1].overlaps(buf)), key=lambda p: p[0]):
        if offset + buf.size <= start:
            break
        offset = max(offset, _align(start + other.size, alignment))
    return offset


def plan(tensors: list[Tensor], alignment: int = ALIGNMENT) -> Plan:
    """Greedy-by-size offsets for ``tensors`` (see the module docstring)."""
    bufs = buffers(tensors)
    placed: list[tuple[int, Buffer]] = []
    for buf in sorted(bufs, key=lambda b: (-b.size, b.first, b.names[0])):
        placed.append((_lowest_offset(buf, placed, alignment), buf))
    offsets = {name: start for start, buf in placed for name in buf.names}
    arena = max((start + buf.size for start, buf in placed), default=0)
    return Plan(offsets, _align(arena, alignment), lower_bound(bufs), tuple(bufs))


def overlapping(p: Plan) -> list[tuple[str, str]]:
    """Pairs of buffers live at once whose bytes overlap (empty for a valid plan)."""
    spans = [(p.offsets[b.names[0]], b) for b in p.buffers]
    bad = []
    for i, (start, b) in enumerate(spans):
        for other_start, other in spans[i + 1:]:
            if b.overlaps(other) and start < other_start + other.size and other_start < start + b.size \
                    and b.size and other.size:
                bad.append((b.names[0], other.names[0]))
    return bad
