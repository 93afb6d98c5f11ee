"""The state diagram: every transition of the table appears, identically, in all renderings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from model import diagram
from model.diagram import ACTOR_COLORS, Edge, dot, edges, figure, mermaid, overlaps, queue_ops, render
from model.states import Actor, TaskState
from model.transitions import TRANSITIONS

EdgeSet = set[tuple[str, str, tuple[str, ...]]]


@pytest.fixture(scope="module")
def drawn() -> Figure:
    return figure()


def expected_edges() -> EdgeSet:
    return {(e.source.value, e.target.value, e.names) for e in edges()}


def mermaid_edges(text: str) -> EdgeSet:
    found = re.findall(r'^  (\w+) -->\|"([^"]*)"\| (\w+)$', text, flags=re.MULTILINE)
    return {(s, t, tuple(label.split("<br/>"))) for s, label, t in found}


def dot_edges(text: str) -> EdgeSet:
    found = re.findall(r'^  "(\w+)" -> "(\w+)" \[label="([^"]*)"', text, flags=re.MULTILINE)
    return {(s, t, tuple(label.split("\\n"))) for s, t, label in found}


def texts(fig: Figure) -> Iterator[str]:
    for artist in fig.findobj(Text):
        assert isinstance(artist, Text)
        yield artist.get_text()


# --- the graph -----------------------------------------------------------------------------------


def test_every_transition_is_an_edge_label_or_a_queue_op_exactly_once_per_pair() -> None:
    on_edges = {name for e in edges() for name in e.names}
    in_box = {t.name for t in queue_ops()}
    assert on_edges | in_box == set(TRANSITIONS)
    assert on_edges.isdisjoint(in_box)
    assert in_box == {"pause", "unpause", "remove_queue"}


def test_parallel_transitions_merge_into_one_edge_per_actor() -> None:
    by_key = {(e.source, e.target, e.actor): e for e in edges()}
    assert len(by_key) == len(edges())
    assert by_key[(TaskState.ACTIVE, TaskState.RETRY, Actor.SERVER)].label == \
        "retry_failure\nretry_nonfailure\nrecover"
    assert by_key[(TaskState.SCHEDULED, TaskState.PENDING, Actor.SERVER)].names == ("forward",)
    assert by_key[(TaskState.SCHEDULED, TaskState.PENDING, Actor.INSPECTOR)].names == \
        ("run_task", "run_all_scheduled")


def test_state_preserving_transitions_are_self_loops_not_a_product() -> None:
    loops = {(e.source, n) for e in edges() if e.is_loop for n in e.names}
    assert {s for s, n in loops if n == "write_result"} == set(TaskState) - {TaskState.DELETED}
    assert (TaskState.ACTIVE, "extend_lease") in loops
    assert (TaskState.AGGREGATING, "reclaim_stale_aggregation_sets") in loops
    assert all(not (n == "write_result" and not e.is_loop) for e in edges() for n in e.names)


def test_every_pair_of_the_table_is_drawn() -> None:
    pairs = {(e.source, e.target) for e in edges()}
    for t in TRANSITIONS.values():
        if set(t.sources) != set(t.targets):
            assert set(t.edges) <= pairs, t.name


# --- text renderings ---------------------------------------------------------------------------------


def test_mermaid_and_dot_draw_the_same_graph() -> None:
    assert mermaid_edges(mermaid()) == expected_edges()
    assert dot_edges(dot()) == expected_edges()
    for state in TaskState:
        assert f'  {state.value}(["{state.value}"])' in mermaid()
        assert f'  "{state.value}";' in dot()


@pytest.mark.parametrize("render_text", [mermaid, dot], ids=["mermaid", "dot"])
def test_every_transition_name_appears_in_text_output(render_text: object) -> None:
    assert callable(render_text)
    # Line breaks are escaped in DOT ("\n") and HTML in Mermaid ("<br/>").
    words = set(re.findall(r"\w+", render_text().replace("\\n", " ").replace("<br/>", " ")))
    assert [name for name in TRANSITIONS if name not in words] == []


def test_mermaid_colours_each_link_by_actor() -> None:
    styles = re.findall(r"^  linkStyle ([\d,]+) stroke:(#\w+)", mermaid(), flags=re.MULTILINE)
    colour_of = {int(i): c for ids, c in styles for i in ids.split(",")}
    assert colour_of == {i: ACTOR_COLORS[e.actor] for i, e in enumerate(edges())}


def test_dot_escapes_quotes_and_newlines() -> None:
    assert diagram._q('a "b"\nc\\d') == '"a \\"b\\"\\nc\\\\d"'


# --- the picture -----------------------------------------------------------------------------------


def test_figure_shows_every_state_label_and_queue_op(drawn: Figure) -> None:
    shown = "\n".join(texts(drawn))
    for state in TaskState:
        assert state.value in shown
    missing = [name for name in TRANSITIONS if not re.search(rf"\b{name}\b", shown)]
    assert missing == []
    labels = set(texts(drawn))
    assert {e.label for e in edges()} <= labels


def test_figure_has_a_legend_of_actors(drawn: Figure) -> None:
    legend = drawn.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["client", "server", "inspector"]


def test_no_label_overlaps_another_label_or_a_node(drawn: Figure) -> None:
    assert overlaps(drawn) == []


def test_overlap_detector_notices_a_collision() -> None:
    fig = figure()
    fig.axes[0].text(*diagram.POSITIONS[TaskState.PENDING], "on top of pending",
                     bbox={"facecolor": "white"})
    assert ("node:pending", "on top of pending") in overlaps(fig)


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<?xml")])
def test_render_writes_the_image(tmp_path: Path, fmt: str, magic: bytes) -> None:
    out = render(tmp_path / f"d.{fmt}", format=fmt)
    assert out == tmp_path / f"d.{fmt}"
    data = out.read_bytes()
    assert data.startswith(magic)
    assert len(data) > 50_000
    if fmt == "svg":
        assert b"dequeue" in data and b"remove_queue" in data


def test_render_rejects_a_bad_format_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"format must be one of png, svg, got 'jpg'"):
        render(tmp_path / "d.jpg", format="jpg")
    assert list(tmp_path.iterdir()) == []


def test_edge_is_hashable_data() -> None:
    e = Edge(TaskState.PENDING, TaskState.ACTIVE, Actor.SERVER, ("dequeue",))
    assert e in set(edges())
