"""M-BEIR-format evaluation: readers, instructions, per-task pools, Recall@k through a real Lucene index."""

import json
import math
import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from anserini_bridge.mbeir import build_sparse_index, sparse_runs
from lsr import InputError, Quantizer, SparseBatch, Vocabulary
from lsr.fixtures.mbeir import build_fixture
from lsr.io import Hit
from lsr.mbeir import (
    BENCHMARK_ROWS, DATASETS, TASKS, MbeirSet, chance_hit_rate, dense_runs, evaluate, file_stem, fuse_runs, hit_at_k,
    load_set, read_instructions, read_pool, read_qrels, read_queries, task_id,
)

INTEGER = Quantizer(scale=1, max_value=100_000)  # integer weights pass through unchanged


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("mbeir"))


@pytest.fixture(scope="module")
def mset(fixture):
    return load_set(fixture.root, fixture.queries, fixture.global_pool, fixture.qrels)


@pytest.fixture(scope="module")
def instructions(fixture):
    return read_instructions(fixture.instructions)


@pytest.fixture(scope="module")
def query_inputs(mset, instructions):
    return mset.query_inputs(instructions, "fixed", 1)


class PlantedSparse:
    """Every candidate owns one token. ``perfect``: a query holds the tokens of its positives.
    ``shuffled``: a query gives every candidate token a distinct weight from a random permutation,
    so the ranking it induces is uniformly random."""

    def __init__(self, mset, query_inputs, mode="perfect", seed=0, extra_tokens=0):
        self.name, self.mode, self.mset = f"planted-{mode}", mode, mset
        self.vocab = Vocabulary(tuple(f"cand{i}" for i in range(len(mset.pool) + extra_tokens)))
        self.doc_token = {(c.text, c.image): i for i, c in enumerate(mset.pool)}
        self.qid_of = {(x.text, x.image, x.instruction): q.qid for x, q in zip(query_inputs, mset.queries)}
        assert len(self.doc_token) == len(mset.pool) and len(self.qid_of) == len(mset.queries)
        self.token_of_did = {c.did: i for i, c in enumerate(mset.pool)}
        self.rng = np.random.default_rng(seed)

    def encode_documents(self, inputs):
        cols = [self.doc_token[(x.text, x.image)] for x in inputs]
        m = sp.csr_matrix((np.ones(len(cols)), (np.arange(len(cols)), cols)), shape=(len(cols), len(self.vocab)))
        return SparseBatch.from_scipy(m, self.vocab)

    def encode_queries(self, inputs):
        out = np.zeros((len(inputs), len(self.vocab)), np.float32)
        for r, x in enumerate(inputs):
            qid = self.qid_of[(x.text, x.image, x.instruction)]
            if self.mode == "perfect":
                for did in self.mset.positives(qid):
                    out[r, self.token_of_did[did]] = 1.0
            else:
                out[r] = self.rng.permutation(len(self.vocab)) + 1
        return SparseBatch.from_dense(out, self.vocab)


class PlantedDense:
    """One-hot candidate embeddings; ``perfect`` queries point at their positives, ``random`` ones anywhere."""

    def __init__(self, sparse: PlantedSparse, mode="perfect", seed=0):
        self.sparse, self.mode, self.name = sparse, mode, f"dense-{mode}"
        self.rng = np.random.default_rng(seed)

    def encode_documents(self, inputs):
        return self.sparse.encode_documents(inputs).to_scipy().toarray()

    def encode_queries(self, inputs):
        if self.mode == "perfect":
            return PlantedSparse.encode_queries(self.sparse, inputs).to_scipy().toarray()
        return self.rng.normal(size=(len(inputs), len(self.sparse.vocab)))


@pytest.fixture(scope="module")
def planted_index(mset, query_inputs, tmp_path_factory):
    """One Lucene impact index over the global pool, shared by the planted query encoders."""
    enc = PlantedSparse(mset, query_inputs)
    return build_sparse_index(enc, mset, tmp_path_factory.mktemp("planted"), INTEGER, progress=False)


# ------------------------------------------------------------- format fidelity
def test_task_and_dataset_numbering_follow_mbeir():
    assert {t.id: t.name for t in TASKS.values() if t.in_benchmark} == {
        0: "text -> image", 1: "text -> text", 2: "text -> image,text", 3: "image -> text",
        4: "image -> image", 6: "image,text -> text", 7: "image,text -> image", 8: "image,text -> image,text"}
    assert DATASETS == {0: "VisualNews", 1: "Fashion200K", 2: "WebQA", 3: "EDIS", 4: "NIGHTS", 5: "OVEN",
                        6: "InfoSeek", 7: "FashionIQ", 8: "CIRR", 9: "MSCOCO"}
    assert task_id("image,text", "image") == 7 and task_id("text", "image,text") == 2
    with pytest.raises(InputError, match="M-BEIR spells the pair 'image,text'"):
        task_id("text,image", "text")
    assert len(BENCHMARK_ROWS) == 16 and file_stem(7, 7) == "mbeir_fashioniq_task7"
    assert file_stem(6, 6) == "mbeir_infoseek_task6"


def test_fixture_is_in_the_mbeir_layout(fixture):
    root = fixture.root
    query_keys = {"qid", "query_txt", "query_img_path", "query_modality", "query_src_content", "pos_cand_list",
                  "neg_cand_list", "task_id"}
    cand_keys = {"did", "txt", "img_path", "modality", "src_content"}
    combos = set()
    for task, dataset in BENCHMARK_ROWS:
        stem = file_stem(task, dataset)
        qfile = root / "query" / "test" / f"{stem}_test.jsonl"
        pfile = root / "cand_pool" / "local" / f"{stem}_cand_pool.jsonl"
        rfile = root / "qrels" / "test" / f"{stem}_test_qrels.txt"
        queries = [json.loads(line) for line in qfile.read_text().splitlines()]
        cands = {c["did"]: c for c in map(json.loads, pfile.read_text().splitlines())}
        for q in queries:
            assert set(q) == query_keys and q["qid"].startswith(f"{dataset}:") and q["task_id"] == task
            assert q["query_modality"] == TASKS[task].query_modality
            for did in q["pos_cand_list"]:
                assert cands[did]["modality"] == TASKS[task].cand_modality
                combos.add((q["query_modality"], cands[did]["modality"]))
        assert all(set(c) == cand_keys and c["did"].startswith(f"{dataset}:") for c in cands.values())
        assert len(cands) > headline(dataset)  # a random ranking cannot score 1
        for line in rfile.read_text().splitlines():
            qid, zero, did, rel, tid = line.split(" ")
            assert zero == "0" and rel == "1" and int(tid) == task and did in cands
    assert combos == {(t.query_modality, t.cand_modality) for t in TASKS.values() if t.in_benchmark}
    header = fixture.instructions.read_text().splitlines()[0].split("\t")
    assert header == ["query_modality", "cand_modality", "dataset_name", "dataset_id",
                      "prompt_1", "prompt_2", "prompt_3", "prompt_4"]
    union = [json.loads(line)["did"] for line in fixture.global_pool.read_text().splitlines()]
    assert len(union) == len(set(union)) == fixture.n_candidates
    photos = list((root / "mbeir_images").rglob("*.jpg"))
    assert len(photos) > 100 and any("astronaut" in p.name for p in photos)


def headline(dataset):
    return 10 if dataset in (1, 7) else 5


def test_reads_a_record_written_like_the_published_samples(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "q.jpg").write_bytes(b"jpeg bytes are not opened by the reader")
    (tmp_path / "q.jsonl").write_text(json.dumps({
        "qid": "5:2", "query_txt": None, "query_img_path": "img/q.jpg", "query_modality": "image",
        "query_src_content": json.dumps({"image_id": "x"}), "pos_cand_list": ["5:7"], "neg_cand_list": []}) + "\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({
        "txt": "Harold Keeling. An actor.", "img_path": None, "modality": "text", "did": "5:7",
        "src_content": json.dumps({"wikidata_id": "Q1"})}) + "\n")
    (tmp_path / "qrels.txt").write_text("5:2 0 5:7 1 3\n")
    s = load_set(tmp_path, tmp_path / "q.jsonl", tmp_path / "p.jsonl", tmp_path / "qrels.txt")
    q = s.queries[0]
    assert q.text is None and q.image == str(tmp_path / "img" / "q.jpg") and q.dataset_id == 5
    assert s.task_of["5:2"] == 3 and s.rows == [(3, 5)] and s.query_inputs(mode="none")[0].image == q.image


def test_training_files_are_read_under_the_lenient_rule(tmp_path):
    from lsr.pairs import read_mbeir_pairs

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "r.png").write_bytes(b"not opened by the reader")
    pool, queries = tmp_path / "pool.jsonl", tmp_path / "queries.jsonl"
    pool.write_text(json.dumps({"did": 7, "txt": "a red square"}) + "\n"
                    + json.dumps({"did": "img-1", "txt": " ", "img_path": "img/r.png", "modality": "text"}) + "\n")
    queries.write_text(json.dumps({"qid": "q 1", "query_txt": "red", "pos_cand_list": [7, "img-1"],
                                   "instruction": "Find it.", "task_id": "not read"}) + "\n")
    with pytest.raises(InputError, match=r"pool.jsonl:1: candidate id did=7 is not '<dataset id>:<number>'"):
        read_pool(pool, tmp_path)
    with pytest.raises(InputError, match=r"queries.jsonl:1: query id qid='q 1' is not '<dataset id>:<number>'"):
        read_queries(queries, tmp_path)

    cands = read_pool(pool, tmp_path, strict=False)
    assert [(c.did, c.text, c.modality) for c in cands] == [("7", "a red square", "text"), ("img-1", None, "image")]
    assert cands[1].image == str(tmp_path / "img" / "r.png")
    (q,) = read_queries(queries, tmp_path, strict=False)
    assert (q.qid, q.positives, q.modality, q.instruction, q.task_id) == ("q 1", ("7", "img-1"), "text", "Find it.",
                                                                          None)
    pairs = read_mbeir_pairs(queries, pool, instruction="Used when a query has none.")
    assert [(p.query_id, p.doc_id, p.document.modality) for p in pairs] == [("q 1", "7", "text"),
                                                                           ("q 1", "img-1", "image")]
    assert pairs[0].query.instruction == "Find it."

    queries.write_text(json.dumps({"qid": "q2", "query_img_path": "img/gone.png", "pos_cand_list": [7]}) + "\n")
    with pytest.raises(InputError, match=r"queries.jsonl:1: record 'q2': image 'img/gone.png' not found .* set "
                                         r"image_root, or fix query_img_path"):
        read_mbeir_pairs(queries, pool)
    queries.write_text(json.dumps({"qid": "q3", "query_txt": "", "pos_cand_list": [7]}) + "\n")
    with pytest.raises(InputError, match=r"queries.jsonl:1: query 'q3': the record has neither text nor an image"):
        read_mbeir_pairs(queries, pool)
    queries.write_text(json.dumps({"qid": "q4", "query_txt": "red", "pos_cand_list": ["8"]}) + "\n")
    with pytest.raises(InputError, match=r"queries.jsonl:1: positive candidate '8' is not in .*pool.jsonl"):
        read_mbeir_pairs(queries, pool)


# ------------------------------------------------------------ pools and rows
def test_local_pools_from_pool_files_equal_the_derived_ones(fixture, mset):
    from_files = load_set(fixture.root, fixture.queries, fixture.local_pools)
    assert {c.did for c in from_files.pool} == {c.did for c in mset.pool}
    assert from_files.rows == mset.rows == list(BENCHMARK_ROWS)
    for row in mset.rows:
        a = {mset.pool[i].did for i in mset.local_pool(row)}
        b = {from_files.pool[i].did for i in from_files.local_pool(row)}
        assert a == b and len(a) >= 10
        task, dataset = row
        assert all(mset.pool[i].dataset_id == dataset and mset.pool[i].modality == TASKS[task].cand_modality
                   for i in mset.local_pool(row))


def test_instructions_fixed_random_and_none(mset, instructions, fixture):
    fixed = mset.query_inputs(instructions, "fixed", 2)
    rows = fixture.instructions.read_text().splitlines()[1:]
    nights = next(r.split("\t") for r in rows if r.split("\t")[3] == "4")
    i = next(j for j, q in enumerate(mset.queries) if q.qid == "4:1")
    assert fixed[i].instruction == nights[5] and fixed[i].text is None  # image-only query: prompt only
    assert fixed[i].text_with_instruction() == nights[5]
    j = next(j for j, q in enumerate(mset.queries) if q.qid == "2:1")  # WebQA text -> text
    assert fixed[j].text_with_instruction() == f"{fixed[j].instruction} {mset.queries[j].text}"
    a = mset.query_inputs(instructions, "random", seed=7)
    b = MbeirSet.build(list(reversed(mset.queries)), mset.pool, mset.qrels).query_inputs(instructions, "random",
                                                                                         seed=7)
    by_text = {(x.text, x.image): x.instruction for x in b}
    assert all(by_text[(x.text, x.image)] == x.instruction for x in a)  # independent of query order
    draws = {tuple(x.instruction for x in mset.query_inputs(instructions, "random", seed=s)) for s in range(5)}
    assert len(draws) > 1
    assert all(x.instruction is None for x in mset.query_inputs(mode="none"))


# ------------------------------------------------------------------- metrics
def test_hit_rate_and_chance_match_enumeration():
    hits = [Hit("a", 3.0, 1), Hit("b", 2.0, 2), Hit("c", 1.0, 3)]
    assert hit_at_k(hits, {"c"}, 2) == 0.0 and hit_at_k(hits, {"c", "zz"}, 3) == 1.0
    for n, p, k in [(6, 1, 2), (7, 2, 3), (8, 3, 5), (5, 1, 5)]:
        tops = list(combinations(range(n), k))
        expected = sum(1 for t in tops if any(i < p for i in t)) / len(tops)
        assert chance_hit_rate(n, p, k) == pytest.approx(expected)
    assert chance_hit_rate(176, 1, 5) == pytest.approx(5 / 176)


# ---------------------------------------------------- through a Lucene index
def test_planted_perfect_encoder_scores_one_through_the_index(mset, query_inputs, planted_index):
    from anserini_bridge.index import IndexMeta

    assert IndexMeta.load(planted_index).documents == len(mset.pool) == 176
    runs = sparse_runs(PlantedSparse(mset, query_inputs), mset, query_inputs, planted_index, progress=False)
    assert runs.info["indexed"] == 176
    report = evaluate(mset, runs)
    assert [(r.task_id, r.dataset_id) for r in report.rows] == list(BENCHMARK_ROWS)
    for r in report.rows:
        assert r.recall["local"] == {k: 1.0 for k in r.recall["local"]}
        assert r.headline("global") == 1.0 and r.unreachable == {"local": 0, "global": 0}
    assert report.average("local") == report.average("global") == 1.0
    hits = runs.scopes["global"]["0:1"]
    assert [h.docid for h in hits] == sorted(mset.positives("0:1")) and hits[0].impact_score == 1  # Lucene's score
    table = report.table()
    assert "Recall@10" in table and "Recall@5" in table and "average (16 rows)" in table
    assert "image,text -> image,text" in table and "InfoSeek" in table


def test_shuffled_encoder_scores_at_chance(mset, query_inputs, planted_index):
    seeds = 12
    observed = {"local": [], "global": []}
    for seed in range(seeds):
        enc = PlantedSparse(mset, query_inputs, "shuffled", seed)
        report = evaluate(mset, sparse_runs(enc, mset, query_inputs, planted_index, progress=False))
        for scope in observed:
            observed[scope].append(report.average(scope))
    trials = seeds * len(mset.queries)
    for scope, values in observed.items():
        chance = np.mean([r.chance[scope] for r in report.rows])
        # each query is a Bernoulli trial with success probability chance_hit_rate(...)
        p = [chance_hit_rate(len(mset.scope_dids(scope, mset.row_of(q.qid))), 1, headline(q.dataset_id))
             for q in mset.queries]
        se = math.sqrt(sum(x * (1 - x) for x in p) * seeds) / trials
        assert abs(np.mean(values) - chance) < 4 * se, (scope, np.mean(values), chance, se)
    assert 0.5 < np.mean([r.chance["local"] for r in report.rows]) < 0.7  # 5 of 10, 10 of 14 ...
    assert np.mean([r.chance["global"] for r in report.rows]) < 0.05


def test_local_ranking_is_the_index_ranking_restricted_to_the_pool(mset, query_inputs, planted_index):
    """A shallow first search forces deeper rounds; the result equals exhaustive scoring of the local pool."""
    enc = PlantedSparse(mset, query_inputs, "shuffled", seed=3)
    runs = sparse_runs(enc, mset, query_inputs, planted_index, depth=5, progress=False)
    assert runs.info["search_rounds"] > 1
    q = PlantedSparse(mset, query_inputs, "shuffled", seed=3).encode_queries(query_inputs)
    dense = q.to_scipy().toarray()
    for i, query in enumerate(mset.queries):
        local = mset.local_pool(mset.row_of(query.qid))
        expected = [mset.pool[j].did for j in sorted(local, key=lambda j: -dense[i, j])][:5]
        assert [h.docid for h in runs.scopes["local"][query.qid]] == expected
        assert [h.rank for h in runs.scopes["local"][query.qid]] == [1, 2, 3, 4, 5]


def test_queries_longer_than_lucenes_clause_limit_are_searched_exactly(mset, query_inputs, tmp_path):
    """Lucene refuses boolean queries of more than 1024 terms by default; learned sparse queries can be longer."""
    few = MbeirSet.build(mset.queries[::6], mset.pool)  # six queries, one per task family
    inputs = [query_inputs[i] for i in range(0, len(mset.queries), 6)]
    wide = PlantedSparse(few, inputs, "shuffled", seed=5, extra_tokens=900)
    index = build_sparse_index(wide, few, tmp_path, INTEGER, progress=False)
    runs = sparse_runs(wide, few, inputs, index, depth=3, scopes=["global"], progress=False)
    q = PlantedSparse(few, inputs, "shuffled", seed=5, extra_tokens=900).encode_queries(inputs)
    assert q.nnz.min() == 1076 and runs.info["query_terms_max"] == 1076
    dense = q.to_scipy().toarray()
    for i, query in enumerate(few.queries):
        expected = [few.pool[j].did for j in np.argsort(-dense[i, :len(few.pool)])[:3]]
        assert [h.docid for h in runs.scopes["global"][query.qid]] == expected


def test_dense_and_hybrid_runs(mset, query_inputs, planted_index, tmp_path):
    sparse_enc = PlantedSparse(mset, query_inputs)
    perfect = evaluate(mset, dense_runs(PlantedDense(sparse_enc), mset, query_inputs, workdir=tmp_path))
    assert perfect.average("local") == perfect.average("global") == 1.0
    assert (tmp_path / "pool-embeddings.npy").is_file()
    noise = dense_runs(PlantedDense(sparse_enc, "random"), mset, query_inputs)
    assert evaluate(mset, noise).average("global") < 0.5
    sparse = sparse_runs(sparse_enc, mset, query_inputs, planted_index, progress=False)
    fused = fuse_runs([sparse, noise], "rrf")
    assert evaluate(mset, fused).average("local") == 1.0  # rank 1 in one run beats any single-run score
    only_dense = fuse_runs([sparse, noise], "interp", alpha=0.0)
    assert [h.docid for h in only_dense.scopes["global"]["9:1"][:5]] == \
        [h.docid for h in noise.scopes["global"]["9:1"][:5]]


# ---------------------------------------------------------------- bad input
def copy_fixture(fixture, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(fixture.root, dst)
    return dst


def edit_jsonl(path: Path, line: int, **changes):
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[line - 1].update(changes)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_missing_image_is_named_with_its_record(fixture, tmp_path):
    root = copy_fixture(fixture, tmp_path)
    qfile = root / "query" / "test" / "mbeir_nights_task4_test.jsonl"
    first = json.loads(qfile.read_text().splitlines()[0])
    (root / first["query_img_path"]).unlink()
    with pytest.raises(InputError) as e:
        read_queries(qfile, root)
    msg = str(e.value)
    assert f"{qfile}:1" in msg and "'4:1'" in msg and first["query_img_path"] in msg and "--data" in msg
    pfile = root / "cand_pool" / "local" / "mbeir_cirr_task7_cand_pool.jsonl"
    cand = json.loads(pfile.read_text().splitlines()[2])
    (root / cand["img_path"]).unlink()
    with pytest.raises(InputError, match=rf"mbeir_cirr_task7_cand_pool.jsonl:3: record '{cand['did']}': image"):
        read_pool(pfile, root)
    assert read_pool(pfile, root, check_images=False)[2].did == cand["did"]


def test_unknown_modality_strings_are_refused(fixture, tmp_path):
    root = copy_fixture(fixture, tmp_path)
    qfile = root / "query" / "test" / "mbeir_cirr_task7_test.jsonl"
    edit_jsonl(qfile, 2, query_modality="text,image")
    with pytest.raises(InputError, match=r"mbeir_cirr_task7_test.jsonl:2: query '8:2': query_modality "
                                         r"'text,image' is not one of .* spells the pair 'image,text'"):
        read_queries(qfile, root)
    pfile = root / "cand_pool" / "local" / "mbeir_webqa_task1_cand_pool.jsonl"
    edit_jsonl(pfile, 4, modality="txt")
    with pytest.raises(InputError, match=r":4: candidate '2:4': modality 'txt' is not one of"):
        read_pool(pfile, root)
    edit_jsonl(pfile, 4, modality="image")
    with pytest.raises(InputError, match=r"'2:4' has modality 'image' but txt is set and img_path is empty"):
        read_pool(pfile, root)
    tsv = root / "instructions" / "query_instructions.tsv"
    lines = tsv.read_text().splitlines()
    lines[3] = lines[3].replace("text\timage", "text\tpicture", 1)
    tsv.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"query_instructions.tsv:4: candidate modality 'picture'"):
        read_instructions(tsv)


def test_qids_in_qrels_absent_from_queries_are_named(fixture, tmp_path):
    root = copy_fixture(fixture, tmp_path)
    qrels = root / "qrels" / "test" / "mbeir_mscoco_task0_test_qrels.txt"
    qrels.write_text(qrels.read_text() + "9:404 0 9:1 1 0\n")
    with pytest.raises(InputError) as e:
        load_set(root, root / "query" / "test", root / "cand_pool" / "global", root / "qrels" / "test")
    assert "'9:404'" in str(e.value) and f"{qrels}:3" in str(e.value) and "not among the 32 queries" in str(e.value)
    # qrels of one file with the queries of another: every unknown qid is counted
    with pytest.raises(InputError, match="qrels name 2 qids that are not among the 2 queries"):
        load_set(root, root / "query" / "test" / "mbeir_nights_task4_test.jsonl", root / "cand_pool" / "global",
                 root / "qrels" / "test" / "mbeir_cirr_task7_test_qrels.txt")


def test_inconsistent_records_are_refused(fixture, tmp_path):
    root = copy_fixture(fixture, tmp_path)
    qrels = root / "qrels" / "test" / "mbeir_webqa_task1_test_qrels.txt"
    qrels.write_text(qrels.read_text().replace(" 1\n", " 3\n", 1))  # text query labelled image -> text
    args = (root, root / "query" / "test", root / "cand_pool" / "global", root / "qrels" / "test")
    with pytest.raises(InputError, match=r"query '2:1' has task_id 1 but the qrels \(.*qrels.txt:1\) give task 3"):
        load_set(*args)
    qfile = root / "query" / "test" / "mbeir_webqa_task1_test.jsonl"
    edit_jsonl(qfile, 1, task_id=None)
    with pytest.raises(InputError, match=r"query '2:1' is task 3 \(image -> text\) but its query_modality is 'text'"):
        load_set(*args)
    other = root / "other_qrels.txt"
    other.write_text("2:1 0 2:1 1 1\n")
    with pytest.raises(InputError, match=r"other_qrels.txt:1: qid '2:1' has task id 1 here but 3 at .*:1"):
        read_qrels([qrels, other])
    bad = root / "bad_qrels.txt"
    bad.write_text("2:1 0 2:1\n")
    with pytest.raises(InputError, match=r"bad_qrels.txt:1: expected 'qid 0 did rel task_id'"):
        read_qrels(bad)
    edit_jsonl(qfile, 2, qid="2:1")
    with pytest.raises(InputError, match=r":2: query '2:1': duplicate qid \(first at .*:1\)"):
        read_queries(qfile, root)
    edit_jsonl(qfile, 2, qid="webqa-2")
    with pytest.raises(InputError, match=r"query id qid='webqa-2' is not '<dataset id>:<number>'"):
        read_queries(qfile, root)


def test_missing_instruction_row_names_the_query(mset, tmp_path, fixture):
    tsv = tmp_path / "inst.tsv"
    tsv.write_text("\n".join(x for x in fixture.instructions.read_text().splitlines() if "\tNIGHTS\t" not in x))
    with pytest.raises(InputError, match=r"query '4:1': no instruction for dataset 4 \(NIGHTS\), image -> image"):
        mset.query_inputs(read_instructions(tsv), "fixed")
    swapped = tmp_path / "swapped.tsv"
    swapped.write_text("text\timage\tMSCOCO\t0\tFind it.\n")
    with pytest.raises(InputError, match="dataset 'MSCOCO' has id 9 in M-BEIR, not 0"):
        read_instructions(swapped)


def test_cli_bad_input_exits_2_naming_the_record(fixture, tmp_path, capsys):
    from lsr.cli import main

    root = copy_fixture(fixture, tmp_path)
    qfile = root / "query" / "test" / "mbeir_oven_task6_test.jsonl"
    (root / json.loads(qfile.read_text().splitlines()[1])["query_img_path"]).unlink()
    rc = main(["eval-mbeir", "--data", str(root), "--queries", "query/test", "--pool", "cand_pool/global",
               "--model", "splade-tiny"])
    err = capsys.readouterr().err
    assert rc == 2 and "mbeir_oven_task6_test.jsonl:2: record '5:2': image" in err and "Traceback" not in err


# ------------------------------------------------------- end to end commands
def run_cli(args, capsys):
    from lsr.cli import main

    rc = main(["eval-mbeir", *map(str, args)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out


def test_eval_mbeir_text_rows_with_real_splade_and_minilm_fusion(fixture, tmp_path, capsys):
    """SPLADE-tiny through the Lucene index, MiniLM by exhaustive cosine, fused with RRF (real weights)."""
    out = run_cli(["--data", fixture.root, "--queries", "query/test/mbeir_webqa_task1_test.jsonl",
                   "--pool", "cand_pool/local/mbeir_webqa_task1_cand_pool.jsonl", "--model", "splade-tiny",
                   "--rerank", "minilm", "--device", "cpu", "--json", tmp_path / "r.json"], capsys)
    result = json.loads((tmp_path / "r.json").read_text())
    names = [s["system"] for s in result["systems"]]
    assert names == ["splade-tiny", "minilm", "fused: splade-tiny + minilm"]
    for system in result["systems"]:
        (row,) = system["rows"]
        assert (row["task_id"], row["dataset"], row["metric"]) == (1, "WebQA", "Recall@5")
        assert 0.0 <= row["local"] <= 1.0 and row["pool_size"] == {"local": 10, "global": 10}
    assert result["systems"][1]["rows"][0]["local"] == 1.0  # MiniLM finds both hand-written answers
    assert "text -> text" in out.out and "fused: splade-tiny + minilm" in out.out


def test_text_only_models_leave_images_out_and_say_how_many(fixture, tmp_path, capsys):
    """SPLADE (Lucene) and MiniLM (exhaustive cosine) on every task: each input is encoded without its image;
    image-only candidates get no vector (not indexed) and the images left out are counted and reported."""
    root = fixture.root
    out = run_cli(["--data", root, "--queries", "query/test", "--pool", fixture.global_pool, "--model", "splade-tiny",
                   "--rerank", "minilm", "--device", "cpu", "--json", tmp_path / "r.json"], capsys)
    mset = load_set(root, [root / "query" / "test"], [fixture.global_pool])
    images = sum(c.image is not None for c in mset.pool) + sum(q.image is not None for q in mset.queries)
    with_text = sum(bool(c.text and c.text.strip()) for c in mset.pool)
    assert 0 < with_text < len(mset.pool) and images > 0
    assert out.err.count(f"text-only model, {images} images ignored") == 2
    assert f"{with_text} candidates indexed" in out.err
    systems = json.loads((tmp_path / "r.json").read_text())["systems"]
    assert [s["settings"]["evaluated_as"].endswith(", text only") for s in systems] == [True, True, False]
    assert systems[0]["settings"]["indexed"] == with_text


@pytest.mark.slow
def test_eval_mbeir_end_to_end_with_a_random_stair_model(fixture, tmp_path, capsys):
    from encoders.stair import StairEncoder

    model_dir = StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", device="cpu").save(
        tmp_path / "stair")
    out = run_cli(["--data", fixture.root, "--queries", "query/test", "--pool", "cand_pool/local",
                   "--qrels", "qrels/test", "--model", model_dir, "--device", "cpu", "--max-query-terms", 64,
                   "--max-doc-terms", 256, "--workdir", tmp_path / "work", "--json", tmp_path / "stair.json"], capsys)
    result = json.loads((tmp_path / "stair.json").read_text())
    (system,) = result["systems"]
    assert [(r["task_id"], r["dataset_id"]) for r in system["rows"]] == list(BENCHMARK_ROWS)
    for row in system["rows"]:
        for scope in ("local", "global"):
            assert 0.0 <= row[scope] <= 1.0
            assert all(0.0 <= v <= 1.0 for v in row["recall"][scope].values())
    assert 0.0 <= system["average"]["local"] <= 1.0
    assert system["settings"]["query_terms_max"] <= 64 and 0 < system["settings"]["indexed"] <= 176
    assert (tmp_path / "work" / "model-0" / "index" / "lsr-index.json").is_file()  # searched a Lucene index
    assert out.out.count("Recall@") == 16 and "average (16 rows)" in out.out
