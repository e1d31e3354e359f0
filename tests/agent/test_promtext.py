"""The Prometheus text parsing behind the real-traffic counts."""

from __future__ import annotations

import math

import pytest

from agent import promtext


def test_parse_reads_labels_with_escapes_and_skips_other_metrics() -> None:
    text = (
        "# HELP x y\n"
        'http_requests_total{path="/a\\"b",code="200"} 5\n'
        "other_metric 7\n"
        'http_requests_total{code="500",} 2 1712345678000\n'
        "http_requests_total 1\n"
    )
    series = list(promtext.parse(text, ["http_requests_total"]))
    assert series == [
        promtext.Series("http_requests_total", (("code", "200"), ("path", '/a"b')), 5.0),
        promtext.Series("http_requests_total", (("code", "500"),), 2.0),
        promtext.Series("http_requests_total", (), 1.0),
    ]


def test_parse_does_not_confuse_a_longer_name_with_the_wanted_one() -> None:
    text = 'http_requests_total_created{code="200"} 1.7e9\nhttp_requests_total{code="200"} 3\n'
    assert [s.value for s in promtext.parse(text, ["http_requests_total"])] == [3.0]


@pytest.mark.parametrize("line", ['m{code="200 5', "m{code=200} 5", "m{} x"])
def test_parse_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(promtext.PromError):
        list(promtext.parse(line, ["m"]))


def test_deltas_treat_a_decrease_as_a_reset() -> None:
    a, b = (("code", "200"),), (("code", "500"),)
    assert promtext.deltas({a: 10, b: 5}, {a: 15, b: 2}) == {a: 5, b: 2}
    assert promtext.deltas({}, {a: 3}) == {a: 3}


def test_status_classes_and_label_detection() -> None:
    counts: dict[tuple[tuple[str, str], ...], float] = {
        (("status", "200"),): 8.0,
        (("status", "502"),): 2.0,
        (("x", "1"),): 1.0,
    }
    label = promtext.status_label(counts, None)
    assert label == "status"
    assert promtext.by_status_class(counts, label) == {"2": 8.0, "5": 2.0, "?": 1.0}


def test_bucket_counts_are_per_bucket_in_milliseconds() -> None:
    counts: dict[tuple[tuple[str, str], ...], float] = {
        (("le", "0.05"),): 3.0,
        (("le", "0.25"),): 5.0,
        (("le", "+Inf"),): 6.0,
    }
    assert promtext.bucket_counts(counts, 1000.0) == ([50.0, 250.0], [3, 2, 1])
    one: dict[tuple[tuple[str, str], ...], float] = {(("le", "1"),): 1.0}
    assert promtext.bucket_counts(one, 1000.0) is None
    assert math.inf not in (promtext.bucket_counts(counts, 1.0) or ([], []))[0]
