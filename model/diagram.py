"""The task state diagram, drawn from :data:`model.transitions.TRANSITIONS` and nothing else.

One graph, three renderings: :func:`mermaid` and :func:`dot` return text, :func:`render` draws a
PNG or SVG with matplotlib (no graphviz needed). All share :func:`edges` and :func:`queue_ops`:

* every state of :class:`TaskState` is a node (``deleted`` is where new tasks come from and
  where removed ones go);
* transitions with the same source, target and actor are merged into one edge whose label lists
  their names, one per line; edges are coloured by actor;
* a transition whose targets equal its sources keeps the state (``write_result``,
  ``extend_lease``, the aggregation checks) and is drawn as self-loops;
* queue-level operations (no source or target state: ``pause``, ``unpause``, ``remove_queue``)
  are listed in a side box.

>>> next(e for e in edges() if e.names == ("dequeue",)).label
'dequeue'
>>> [t.name for t in queue_ops()]
['pause', 'unpause', 'remove_queue']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from model.states import Actor, TaskState
from model.transitions import TRANSITIONS, Transition

if TYPE_CHECKING:  # matplotlib is imported only when drawing
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

#: Okabe–Ito colours, distinguishable with colour-blindness.
ACTOR_COLORS: dict[Actor, str] = {
    Actor.CLIENT: "#0072B2",
    Actor.SERVER: "#009E73",
    Actor.INSPECTOR: "#D55E00",
}
IMAGE_FORMATS = ("png", "svg")


@dataclass(frozen=True)
class Edge:
    """Every transition one actor performs from ``source`` to ``target``, merged."""

    source: TaskState
    target: TaskState
    actor: Actor
    names: tuple[str, ...]

    @property
    def label(self) -> str:
        """The transition names, one per line."""
        return "\n".join(self.names)

    @property
    def is_loop(self) -> bool:
        return self.source is self.target


def _pairs(t: Transition) -> Iterator[tuple[TaskState, TaskState]]:
    # A transition that maps a set of states onto itself keeps each task's state; the cartesian
    # product (pending → archived via write_result, …) would be wrong.
    if set(t.sources) == set(t.targets):
        yield from ((s, s) for s in t.sources)
    else:
        yield from t.edges


def edges() -> list[Edge]:
    """The merged, labelled edges, in table order of their first transition."""
    merged: dict[tuple[TaskState, TaskState, Actor], list[str]] = {}
    for t in TRANSITIONS.values():
        for source, target in _pairs(t):
            merged.setdefault((source, target, t.actor), []).append(t.name)
    return [Edge(s, d, a, tuple(names)) for (s, d, a), names in merged.items()]


def queue_ops() -> list[Transition]:
    """Transitions that act on the queue rather than move a task (no source or target state)."""
    return [t for t in TRANSITIONS.values() if not t.sources and not t.targets]


# --- text renderings ---------------------------------------------------------------------------


def mermaid() -> str:
    """A Mermaid ``flowchart`` of the diagram: same nodes, edges, labels, colours and side boxes.

    >>> print(mermaid().splitlines()[0])
    flowchart TB
    """
    lines = ["flowchart TB", "  %% Generated from model.transitions.TRANSITIONS by model.diagram."]
    lines += [f'  {s.value}(["{s.value}"])' for s in TaskState]
    all_edges = edges()
    lines += [f'  {e.source.value} -->|"{_mermaid_text(e.label)}"| {e.target.value}' for e in all_edges]
    for actor, color in ACTOR_COLORS.items():  # Mermaid styles links by their position
        indexes = ",".join(str(i) for i, e in enumerate(all_edges) if e.actor is actor)
        lines.append(f"  linkStyle {indexes} stroke:{color},stroke-width:2px")
    lines.append('  subgraph actors["actors"]')
    lines += [f'    actor_{a.value}["{a.value}"]:::{a.value}' for a in Actor]
    lines.append("  end")
    ops = "<br/>".join(f"{t.name} ({t.actor})" for t in queue_ops())
    lines.append('  subgraph queue_level["queue-level operations (no task moves)"]')
    lines.append(f'    queue_ops["{ops}"]')
    lines.append("  end")
    lines += [f"  classDef {a.value} stroke:{c},color:{c},stroke-width:2px" for a, c in ACTOR_COLORS.items()]
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def dot() -> str:
    """A Graphviz DOT digraph of the diagram (for anyone who has graphviz; we do not need it).

    >>> print(dot().splitlines()[0])
    digraph asynq_task_states {
    """
    lines = ["digraph asynq_task_states {",
             "  // Generated from model.transitions.TRANSITIONS by model.diagram.",
             '  graph [rankdir=TB, label="Asynq task states", labelloc=t];',
             '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4"];',
             '  edge [fontsize=10];']
    lines += [f"  {_q(s.value)};" for s in TaskState]
    lines += [f"  {_q(e.source.value)} -> {_q(e.target.value)} [label={_q(e.label)}, "
              f"color={_q(ACTOR_COLORS[e.actor])}, fontcolor={_q(ACTOR_COLORS[e.actor])}];"
              for e in edges()]
    lines.append('  subgraph cluster_actors {\n    label="actors";')
    lines += [f"    {_q('actor_' + a.value)} [label={_q(a.value)}, shape=plaintext, "
              f"fontcolor={_q(c)}];" for a, c in ACTOR_COLORS.items()]
    lines.append("  }")
    ops = "\n".join(f"{t.name} ({t.actor})" for t in queue_ops())
    box = "queue-level operations (no task moves)\n" + ops
    lines.append(f"  queue_ops [shape=note, label={_q(box)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# --- matplotlib rendering ------------------------------------------------------------------------

P, S, A, R = TaskState.PENDING, TaskState.SCHEDULED, TaskState.ACTIVE, TaskState.RETRY
AR, C, AG, D = TaskState.ARCHIVED, TaskState.COMPLETED, TaskState.AGGREGATING, TaskState.DELETED

#: Canvas size in data units (1 unit = 1 inch at the figure size used).
WIDTH, HEIGHT = 21.0, 14.0
#: Node centres, hand-placed: a row of sources (scheduled, retry, archived) above a row of
#: working states, every node at its own x so that its edge down to ``deleted`` passes between
#: the nodes below. ``deleted`` is a wide bar at the bottom, so the many edges into it arrive
#: side by side instead of converging on one point.
POSITIONS: dict[TaskState, tuple[float, float]] = {
    S: (4.6, 10.1), R: (10.6, 10.1), AR: (16.2, 10.1),
    AG: (2.0, 5.4), P: (7.4, 5.4), A: (13.2, 5.4), C: (18.8, 5.4),
    D: (10.5, 0.7),
}
NODE_SIZE = (2.4, 0.85)
DELETED_SIZE = (20.2, 0.7)

#: Curvature overrides for edges that would otherwise run through a node, keyed by
#: (source, target); matplotlib's arc3 ``rad`` (positive bends to the right of travel).
ARC: dict[tuple[TaskState, TaskState], float] = {
    (S, AR): -0.25,  # over the top of retry and its loop
    (C, P): -0.22,  # under active
}
#: Where along an edge its label sits (0 = source, 1 = target) when the middle is crowded.
LABEL_T: dict[tuple[TaskState, TaskState, Actor], float] = {
    (S, P, Actor.SERVER): 0.3, (S, P, Actor.INSPECTOR): 0.7,
    (R, P, Actor.SERVER): 0.25, (R, P, Actor.INSPECTOR): 0.62,
    (R, AG, Actor.SERVER): 0.35, (AG, AR, Actor.INSPECTOR): 0.62,
    (P, AR, Actor.INSPECTOR): 0.75, (AR, P, Actor.INSPECTOR): 0.72,
    (S, AR, Actor.INSPECTOR): 0.3, (P, A, Actor.SERVER): 0.4, (A, P, Actor.SERVER): 0.4,
}
#: Self-loops: side of the node, horizontal offset of the loop, and label offset from the
#: loop's apex (dx, dy) with its horizontal alignment.
LOOP_AT: dict[TaskState, tuple[str, float, float, float, str]] = {
    S: ("top", 0.0, 0.55, -0.25, "left"), R: ("top", 0.6, 0.55, -0.25, "left"),
    AR: ("top", 0.0, 0.55, -0.25, "left"), P: ("top", -0.6, -0.55, -0.25, "right"),
    A: ("top", 0.6, 0.55, -0.1, "left"), C: ("top", 0.0, 0.55, -0.25, "left"),
    AG: ("top", 0.0, 0.0, 0.55, "center"),
}
#: Heights, as fractions of the gap between bar and node, of the labels on a node's edges to
#: ``deleted``: low for the upper row, whose edges pass between the nodes of the lower row.
DELETED_LABEL_FRACTIONS = {"upper": (0.12, 0.33), "lower": (0.25, 0.7)}


@dataclass(frozen=True)
class _Placed:
    """An edge with its geometry: endpoints, arc curvature and label centre."""

    edge: Edge
    start: tuple[float, float]
    end: tuple[float, float]
    rad: float
    label_at: tuple[float, float]


def _layout() -> list[_Placed]:
    """Geometry of every non-loop edge: parallel edges fan out, edges to ``deleted`` sit side by side."""
    placed: list[_Placed] = []
    plain = [e for e in edges() if not e.is_loop]
    by_pair: dict[frozenset[TaskState], list[Edge]] = {}
    for e in plain:
        by_pair.setdefault(frozenset((e.source, e.target)), []).append(e)
    for group in by_pair.values():
        placed += _place_deleted(group) if D in (group[0].source, group[0].target) else _place_pair(group)
    return placed


def _place_pair(group: list[Edge]) -> list[_Placed]:
    out = []
    first = group[0]
    for i, e in enumerate(group):
        base = ARC.get((e.source, e.target), -ARC.get((e.target, e.source), 0.0))
        offset = (i - (len(group) - 1) / 2) * 0.16
        # Keep the fan on one geometric side: arc3's sign flips with the direction of travel.
        rad = base + (offset if e.source is first.source else -offset)
        start, end = POSITIONS[e.source], POSITIONS[e.target]
        at = LABEL_T.get((e.source, e.target, e.actor), 0.5)
        out.append(_Placed(e, start, end, rad, _on_arc(start, end, rad, at)))
    return out


def _place_deleted(group: list[Edge]) -> list[_Placed]:
    """Straight edges between a node and the bar, spread sideways, labels staggered in height."""
    out = []
    for i, e in enumerate(group):
        node = e.target if e.source is D else e.source
        (x, y), half = POSITIONS[node], NODE_SIZE[1] / 2
        dx = (i - (len(group) - 1) / 2) * 0.55
        top, bar = (x + dx, y - half), (x + 1.6 * dx, POSITIONS[D][1] + DELETED_SIZE[1] / 2)
        start, end = (bar, top) if e.source is D else (top, bar)
        low, high = DELETED_LABEL_FRACTIONS["upper" if y > POSITIONS[P][1] else "lower"]
        frac = low + (high - low) * i / (len(group) - 1) if len(group) > 1 else (low + high) / 2
        label = (bar[0] + (top[0] - bar[0]) * frac, bar[1] + (top[1] - bar[1]) * frac)
        out.append(_Placed(e, start, end, 0.0, label))
    return out


def _on_arc(start: tuple[float, float], end: tuple[float, float], rad: float,
            at: float) -> tuple[float, float]:
    """The point at parameter ``at`` of matplotlib's ``arc3`` quadratic Bézier."""
    (x1, y1), (x2, y2) = start, end
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    u = 1 - at
    return (u * u * x1 + 2 * u * at * cx + at * at * x2, u * u * y1 + 2 * u * at * cy + at * at * y2)


def render(path: str | Path, format: str = "png") -> Path:
    """Draw the diagram to ``path`` as ``png`` or ``svg`` with matplotlib and return the path.

    Raises ValueError naming ``format`` for anything else, before writing anything.
    """
    if format not in IMAGE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(IMAGE_FORMATS)}, got {format!r}")
    from matplotlib import rc_context

    out = Path(path)
    with rc_context({"svg.hashsalt": "keysim"}):
        figure().savefig(out, format=format, metadata={"Date": None} if format == "svg" else None)
    return out


def figure() -> Figure:
    """The diagram as a matplotlib Figure (no pyplot, no global state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(0, HEIGHT)
    ax.set_aspect("equal")
    ax.axis("off")
    _draw(ax)
    return fig


def overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of boxes that intersect among edge and loop labels, titles and node boxes.

    Used by the tests to keep the drawing readable (node names sit inside their own boxes and
    are not counted).
    """
    fig.draw_without_rendering()  # lays out the texts' bbox patches
    ax = fig.axes[0]
    boxes = [(str(p.get_gid()), p.get_window_extent()) for p in ax.patches
             if str(p.get_gid()).startswith("node:")]
    for text in ax.texts:
        if text.get_gid() != "node-name":  # a node's name sits inside its own box
            patch = text.get_bbox_patch()
            boxes.append((text.get_text(), (patch if patch is not None else text).get_window_extent()))
    return [(a, b) for i, (a, abox) in enumerate(boxes) for b, bbox in boxes[i + 1:]
            if abox.overlaps(bbox)]


def _draw(ax: Axes) -> None:
    boxes = {state: _node(ax, state) for state in TaskState}
    for p in _layout():
        _arrow(ax, p, boxes)
    loops: dict[TaskState, list[Edge]] = {}
    for e in edges():
        if e.is_loop:
            loops.setdefault(e.source, []).append(e)
    for state, group in loops.items():
        _loop(ax, state, group)
    _legend(ax)
    _side_box(ax)
    ax.text(0.3, HEIGHT - 0.3, "Asynq task lifecycle (reference design)", fontsize=18,
            weight="bold", va="top")
    ax.text(0.3, HEIGHT - 0.85, "generated from model.transitions.TRANSITIONS: each arrow lists "
                                "every transition one actor performs between two states",
            fontsize=11, va="top", color="#444444")


def _size(state: TaskState) -> tuple[float, float]:
    return DELETED_SIZE if state is D else NODE_SIZE


def _node(ax: Axes, state: TaskState) -> FancyBboxPatch:
    from matplotlib.patches import FancyBboxPatch

    (x, y), (w, h) = POSITIONS[state], _size(state)
    box = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.25",
                         facecolor="#e8e8e8" if state is D else "#fdf6e3", edgecolor="#333333",
                         linewidth=1.6, zorder=3)
    box.set_gid(f"node:{state.value}")
    ax.add_patch(box)
    text = "deleted: no keys (new tasks come from here, removed tasks go here)" if state is D else state.value
    ax.text(x, y, text, ha="center", va="center", fontsize=14, weight="bold", zorder=4, gid="node-name")
    return box


def _arrow(ax: Axes, p: _Placed, boxes: dict[TaskState, FancyBboxPatch]) -> None:
    from matplotlib.patches import FancyArrowPatch

    color = ACTOR_COLORS[p.edge.actor]
    ax.add_patch(FancyArrowPatch(p.start, p.end, connectionstyle=f"arc3,rad={p.rad}",
                                 arrowstyle="-|>", mutation_scale=18, color=color, linewidth=1.8,
                                 patchA=boxes[p.edge.source], patchB=boxes[p.edge.target], zorder=2))
    _label(ax, *p.label_at, p.edge.label, color)


def _label(ax: Axes, x: float, y: float, text: str, color: str, align: str = "center") -> None:
    ax.text(x, y, text, ha=align, va="center", fontsize=10, color=color, zorder=5,
            linespacing=1.15,
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": color,
                  "linewidth": 0.8, "alpha": 0.93})


def _loop(ax: Axes, state: TaskState, group: list[Edge]) -> None:
    """Self-loops above or below a node, nested one per actor, each labelled near its apex."""
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MPath

    (x, y), (_, h) = POSITIONS[state], NODE_SIZE
    side, dx, label_dx, label_dy, align = LOOP_AT[state]
    sign = 1 if side == "top" else -1
    y0, cx = y + sign * h / 2, x + dx
    for i, e in enumerate(group):
        color, spread, reach = ACTOR_COLORS[e.actor], 0.3 + 0.2 * i, 0.9 + 0.35 * i
        verts = [(cx - spread, y0), (cx - spread - 0.35, y0 + sign * reach),
                 (cx + spread + 0.35, y0 + sign * reach), (cx + spread, y0)]
        path = MPath(verts, [MPath.MOVETO, MPath.CURVE4, MPath.CURVE4, MPath.CURVE4])
        ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=14, color=color,
                                     linewidth=1.6, zorder=2))
        apex = y0 + sign * reach * 0.75
        lx = cx + (label_dx + spread if align == "left" else -spread + label_dx if align == "right"
                   else label_dx)
        _label(ax, lx, apex + sign * label_dy, e.label, color, align)


def _legend(ax: Axes) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, linewidth=3, label=a.value) for a, c in ACTOR_COLORS.items()]
    ax.legend(handles=handles, title="actor", loc="upper right", fontsize=12, title_fontsize=12,
              frameon=True, bbox_to_anchor=(0.995, 0.995))


def _side_box(ax: Axes) -> None:
    """The queue-level operations, which move no task, in a framed one-line box under the title."""
    from matplotlib.artist import Artist
    from matplotlib.offsetbox import AnchoredOffsetbox, HPacker, TextArea

    parts: list[Artist] = [TextArea("queue-level operations (move no task):", textprops={"fontsize": 11.5,
                                                                         "weight": "bold"})]
    parts += [TextArea(f"{t.name} ({t.actor})", textprops={"fontsize": 11.5, "color": ACTOR_COLORS[t.actor]})
              for t in queue_ops()]
    box = AnchoredOffsetbox(loc="upper left", child=HPacker(children=parts, pad=0, sep=14),
                            bbox_to_anchor=(0.3 / WIDTH, (HEIGHT - 1.35) / HEIGHT),
                            bbox_transform=ax.transAxes, frameon=True, borderpad=0.2, pad=0.4)
    box.patch.set_edgecolor("#888888")
    ax.add_artist(box)
