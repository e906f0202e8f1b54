import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lsr import InputError, SparseBatch, Vocabulary, flops, max_fuse

VOCAB = Vocabulary(("[CLS]", "wing", "drag", "##ing", "flow", "heat"), frozenset({0}))


def batch():
    dense = np.array([[0, 1.5, 0, 0.25, 0, 0], [0, 0, 2.0, 0, 0.5, 0], [0, 0, 0, 0, 0, 0]], np.float32)
    return SparseBatch.from_dense(dense, VOCAB, ids=["a", "b", "c"]), dense


def test_round_trips_between_scipy_torch_dense_and_dicts():
    b, dense = batch()
    assert b.shape == (3, 6) and b.nnz.tolist() == [2, 2, 0]
    np.testing.assert_array_equal(b.to_scipy().toarray(), dense)
    for layout in ("csr", "coo", "dense"):
        t = b.to_torch(layout=layout)
        back = SparseBatch.from_torch(t, VOCAB, b.ids)
        np.testing.assert_array_equal(back.to_scipy().toarray(), dense)
    assert b.to_dict(0) == {"wing": 1.5, "##ing": 0.25}
    again = SparseBatch.from_dicts([b.to_dict(i) for i in range(3)], VOCAB, b.ids)
    np.testing.assert_array_equal(again.to_scipy().toarray(), dense)
    np.testing.assert_array_equal(SparseBatch.from_scipy(sp.csr_matrix(dense), VOCAB).values, b.values)


def test_topk_and_threshold():
    b, _ = batch()
    assert b.topk(1).to_dict(0) == {"wing": 1.5}
    assert b.topk(1).to_dict(1) == {"drag": 2.0}
    assert b.topk(0).nnz_total == 0
    t = b.threshold(0.5)
    assert t.to_dict(0) == {"wing": 1.5} and t.to_dict(1) == {"drag": 2.0, "flow": 0.5}
    assert t.ids == b.ids


def test_max_fusion_and_dot():
    b, dense = batch()
    other = SparseBatch.from_dense(np.array([[0, 1.0, 3.0, 0, 0, 0]] * 3, np.float32), VOCAB)
    fused = max_fuse(b, other)
    np.testing.assert_array_equal(fused.to_scipy().toarray(), np.maximum(dense, other.to_scipy().toarray()))
    assert fused.ids == b.ids
    np.testing.assert_allclose(b.dot(other), dense @ other.to_scipy().toarray().T)


def test_stats_and_flops():
    b, _ = batch()
    s = b.stats()
    assert s["rows"] == 3 and s["nnz_total"] == 4 and s["empty_rows"] == 1 and s["nnz_max"] == 2
    # p(wing)=p(##ing)=p(drag)=p(flow)=1/3 -> flops = 4 * (1/3)^2
    assert s["flops"] == pytest.approx(4 / 9)
    assert flops(b, b.select([0])) == pytest.approx(2 * (1 / 3) * 1)


def test_concat_and_select_keep_ids():
    b, _ = batch()
    c = SparseBatch.concat([b.select([2, 0]), b.select([1])])
    assert c.ids == ("c", "a", "b")
    assert c.to_dict(1) == b.to_dict(0)


def test_bad_values_raise_the_projects_error():
    with pytest.raises(InputError, match="finite"):
        SparseBatch.from_dense(np.array([[np.nan, 0, 0, 0, 0, 0]]), VOCAB)
    with pytest.raises(InputError, match="vocabular"):
        SparseBatch.from_dense(np.ones((1, 3)), VOCAB)
    with pytest.raises(InputError, match="not in the vocabulary"):
        SparseBatch.from_dicts([{"lift": 1.0}], VOCAB)
    other_vocab = Vocabulary(("a", "b", "c", "d", "e", "f"))
    b, _ = batch()
    with pytest.raises(InputError, match="different vocabularies"):
        b.dot(SparseBatch.empty(other_vocab, 1))


def test_vocabulary_fingerprint_and_display():
    assert VOCAB.fingerprint == Vocabulary(VOCAB.tokens).fingerprint
    assert VOCAB.fingerprint != Vocabulary(VOCAB.tokens[:-1]).fingerprint
    assert Vocabulary.display("##ing") == "\u2026ing" and Vocabulary.display("wing") == "wing"


def test_from_torch_on_dense_tensor_matches_numpy():
    x = torch.zeros(2, 6)
    x[0, 2] = 0.7
    x[1, 5] = 1.25
    b = SparseBatch.from_torch(x, VOCAB)
    assert b.to_dict(0) == pytest.approx({"drag": 0.7}) and b.to_dict(1) == {"heat": 1.25}
