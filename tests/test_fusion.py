import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.cli import main
from lsr.errors import InputError
from lsr.fusion import fusion_function, interpolate, normalize, ranked, rrf, weighted_sum
from lsr.io import Hit, read_run, write_run


def run_of(pairs):
    return [Hit(d, s, r) for r, (d, s) in enumerate(pairs, 1)]


SPARSE = {"q1": run_of([("a", 9.0), ("b", 7.0), ("c", 1.0)])}
DENSE = {"q1": {"c": 0.9, "d": 0.8, "a": 0.1}}


def test_rrf_matches_the_formula():
    out = rrf([SPARSE, DENSE], k=60)["q1"]
    expect = {"a": 1 / 61 + 1 / 63, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62}
    assert {h.docid: h.score for h in out} == pytest.approx(expect)
    # a and c tie: broken by docid; ranks start at 1 and follow the fused score
    assert [h.docid for h in out] == ["a", "c", "b", "d"]
    assert [h.rank for h in out] == [1, 2, 3, 4]


def test_rrf_ranks_by_score_not_by_list_order_and_keeps_queries_of_any_run():
    shuffled = {"q1": [Hit("c", 1.0, 3), Hit("a", 9.0, 1), Hit("b", 7.0, 2)], "q2": [Hit("x", 1.0, 1)]}
    out = rrf([shuffled, DENSE], k=1, weights=[2.0, 1.0], depth=2)
    assert out["q1"][0].docid == "a" and out["q1"][0].score == pytest.approx(2 / 2 + 1 / 4)
    assert len(out["q1"]) == 2
    assert [h.docid for h in out["q2"]] == ["x"]


def test_normalize_minmax_and_zscore():
    s = {"a": 3.0, "b": 1.0, "c": 2.0}
    assert normalize(s, "minmax") == {"a": 1.0, "b": 0.0, "c": 0.5}
    z = normalize(s, "zscore")
    sd = math.sqrt(2 / 3)
    assert z == pytest.approx({"a": 1 / sd, "b": -1 / sd, "c": 0.0})
    assert normalize({"a": 5.0, "b": 5.0}, "minmax") == {"a": 0.0, "b": 0.0}
    assert normalize({"a": 5.0}, "zscore") == {"a": 0.0}
    assert normalize({}, "zscore") == {}
    with pytest.raises(InputError, match="normalisation"):
        normalize(s, "l2")


def test_interpolate_alpha_weighs_the_sparse_run():
    # minmax: sparse a=1, b=0.75, c=0; dense c=1, d=0.875, a=0; missing -> the run's floor (0)
    out = {h.docid: h.score for h in interpolate([SPARSE, DENSE], alpha=0.3, norm="minmax")["q1"]}
    assert out == pytest.approx({"a": 0.3 * 1.0, "b": 0.3 * 0.75, "c": 0.7 * 1.0, "d": 0.7 * 0.875})
    only_sparse = interpolate([SPARSE, DENSE], alpha=1.0)["q1"]
    assert [h.docid for h in only_sparse][:3] == ["a", "b", "c"]
    only_dense = interpolate([SPARSE, DENSE], alpha=0.0)["q1"]
    assert [h.docid for h in only_dense][:3] == ["c", "d", "a"]


def test_interpolate_averages_several_dense_runs_and_uses_the_zscore_floor():
    dense2 = {"q1": {"a": 4.0, "b": 2.0}}
    out = {h.docid: h.score for h in interpolate([SPARSE, DENSE, dense2], alpha=0.5, norm="zscore")["q1"]}
    zs = [normalize(dict(ranked(r["q1"])), "zscore") for r in (SPARSE, DENSE, dense2)]
    floors = [min(z.values()) for z in zs]
    for d in "abcd":
        dense = (zs[1].get(d, floors[1]) + zs[2].get(d, floors[2])) / 2
        assert out[d] == pytest.approx(0.5 * zs[0].get(d, floors[0]) + 0.5 * dense)


def test_weighted_sum_matches_the_formula_and_generalises_interpolation():
    # minmax: sparse a=1, b=0.75, c=0; dense c=1, d=0.875, a=0; a missing document gets the run's floor (0)
    out = {h.docid: h.score for h in weighted_sum([SPARSE, DENSE], weights=[1.0, 2.0])["q1"]}
    assert out == pytest.approx({"a": 1.0, "b": 0.75, "c": 2.0, "d": 2 * 0.875})
    dense2 = {"q1": {"a": 4.0, "b": 2.0}}
    for norm in ("minmax", "zscore"):
        a = interpolate([SPARSE, DENSE, dense2], alpha=0.3, norm=norm)["q1"]
        b = weighted_sum([SPARSE, DENSE, dense2], weights=[0.3, 0.35, 0.35], norm=norm)["q1"]
        assert [h.docid for h in a] == [h.docid for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b])
    # equal weights by default, and the same through fusion_function
    fused = fusion_function("sum", norm="minmax", weights=[1, 1])([SPARSE, DENSE])["q1"]
    assert [h.docid for h in fused] == [h.docid for h in weighted_sum([SPARSE, DENSE])["q1"]]


def test_bad_arguments_are_refused():
    with pytest.raises(InputError, match="alpha"):
        interpolate([SPARSE, DENSE], alpha=1.5)
    with pytest.raises(InputError, match="at least 2 runs"):
        interpolate([SPARSE], alpha=0.5)
    with pytest.raises(InputError, match="single run"):
        rrf(SPARSE)
    with pytest.raises(InputError, match="NaN"):
        rrf([{"q": {"a": float("nan")}}])
    with pytest.raises(InputError, match="fusion 'combmnz'"):
        fusion_function("combmnz")
    with pytest.raises(InputError, match="non-negative"):
        weighted_sum([SPARSE, DENSE], weights=[1.0, -1.0])
    with pytest.raises(InputError, match="one weight per run"):
        fusion_function("sum", weights=[1.0])([SPARSE, DENSE])
    with pytest.raises(InputError, match="weights"):
        rrf([SPARSE, DENSE], weights=[1.0])


runs_strategy = st.lists(
    st.dictionaries(st.sampled_from("abcdefgh"), st.floats(-10, 10, allow_nan=False), min_size=1, max_size=8),
    min_size=2, max_size=4)


@settings(max_examples=60, deadline=None)
@given(runs_strategy, st.floats(0, 1), st.sampled_from(["minmax", "zscore"]))
def test_fused_runs_are_rankings_of_the_union(runs, alpha, norm):
    runs = [{"q": r} for r in runs]
    union = set().union(*(r["q"] for r in runs))
    for fused in (rrf(runs)["q"], interpolate(runs, alpha=alpha, norm=norm)["q"]):
        assert {h.docid for h in fused} == union and len(fused) == len(union)
        assert [h.rank for h in fused] == list(range(1, len(union) + 1))
        assert all(a.score >= b.score for a, b in zip(fused, fused[1:]))
    # RRF does not depend on the order of the runs
    a = rrf(runs)["q"]
    b = rrf(runs[::-1])["q"]
    assert [(h.docid, round(h.score, 12)) for h in a] == [(h.docid, round(h.score, 12)) for h in b]


def test_fuse_command_writes_the_fused_run(tmp_path, capsys):
    a, b = tmp_path / "a.trec", tmp_path / "b.trec"
    write_run(a, SPARSE)
    write_run(b, {"q1": run_of(sorted(DENSE["q1"].items(), key=lambda p: -p[1]))})
    out = tmp_path / "fused.trec"
    assert main(["fuse", "--runs", str(a), str(b), "--fusion", "rrf", "--output", str(out)]) == 0
    got = read_run(out)["q1"]
    want = rrf([read_run(a), read_run(b)], k=60)["q1"]
    assert [h.docid for h in got] == [h.docid for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    assert main(["fuse", "--runs", str(a), str(b), "--fusion", "interp", "--alpha", "0.3", "--k", "2",
                 "--output", str(out)]) == 0
    got = read_run(out)["q1"]
    assert [h.docid for h in got] == ["c", "d"]
    assert main(["fuse", "--runs", str(a), "--fusion", "interp", "--output", str(out)]) == 2
    assert "needs at least two runs" in capsys.readouterr().err
    assert main(["fuse", "--runs", str(a), str(tmp_path / "nope.trec"), "--output", str(out)]) == 2
    assert "run file not found" in capsys.readouterr().err


def test_fuse_command_weighted_sum(tmp_path, capsys):
    a, b = tmp_path / "a.trec", tmp_path / "b.trec"
    write_run(a, SPARSE)
    write_run(b, {"q1": run_of(sorted(DENSE["q1"].items(), key=lambda p: -p[1]))})
    out = tmp_path / "fused.trec"
    assert main(["fuse", "--runs", str(a), str(b), "--fusion", "sum", "--weights", "3", "1",
                 "--output", str(out)]) == 0
    assert "weighted sum (minmax), weights 3 1" in capsys.readouterr().err
    want = weighted_sum([read_run(a), read_run(b)], weights=[3, 1])["q1"]
    got = read_run(out)["q1"]
    assert [h.docid for h in got] == [h.docid for h in want] == ["a", "b", "c", "d"]
    assert main(["fuse", "--runs", str(a), str(b), "--fusion", "sum", "--weights", "1",
                 "--output", str(out)]) == 2
    assert "1 weights for 2 runs" in capsys.readouterr().err
