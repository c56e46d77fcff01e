"""DataDir: the one owner of the paths under a prepared data dir (docs/internals.md layout)."""

from __future__ import annotations

import pytest
from lhotse import CutSet

from asr_kd.data.datamodule import AsrDataModule, load_cuts
from asr_kd.data.layout import DataDir
from asr_kd.errors import MissingFileError

SUBSETS = ["dev", "test", "train"]


def test_prepare_writes_the_documented_layout_and_datadir_names_it(prepared_data_dir):
    # The names are a file format (other tools read them): spelled out here, not via DataDir.
    expected = {"lang", "feats", "cmvn.json", "prepare_report.json", "config.yaml"}
    for s in SUBSETS:
        expected |= {f"cuts_{s}.jsonl.gz", f"recordings_{s}.jsonl.gz", f"supervisions_{s}.jsonl.gz"}
        expected.add(f"prepared_{s}.json")
    assert {p.name for p in prepared_data_dir.iterdir()} == expected

    data = DataDir(prepared_data_dir)
    assert data.subsets() == SUBSETS
    assert (data.lang / "tokenizer.json").is_file()
    assert data.cmvn.is_file() and data.report.is_file()
    for s in SUBSETS:
        assert data.prepared_cuts(s) == prepared_data_dir / f"cuts_{s}.jsonl.gz"
        assert data.recordings(s).is_file() and data.supervisions(s).is_file()
        assert data.num_cuts(s) == len(CutSet.from_file(data.cuts(s)))
        features = {c.features.storage_path for c in CutSet.from_file(data.cuts(s))}
        assert features <= {str(p.resolve()) for p in data.feats(s).iterdir()}


def test_an_unprepared_subset_is_a_missing_file_naming_the_prepared_ones(prepared_data_dir):
    with pytest.raises(
        MissingFileError, match=r"no prepared subset 'tset'.*\['dev', 'test', 'train'\]"
    ):
        DataDir(prepared_data_dir).prepared_cuts("tset")
    with pytest.raises(FileNotFoundError, match="cuts_tset.jsonl.gz"):  # still a FileNotFoundError
        load_cuts(prepared_data_dir, "tset")


def test_a_missing_data_dir_is_a_missing_file_that_says_to_prepare(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(
        MissingFileError, match=f"data dir {missing} does not exist: run asr-kd-prepare"
    ):
        DataDir.existing(missing)
    with pytest.raises(MissingFileError, match="does not exist: run asr-kd-prepare"):
        AsrDataModule(missing)
    assert DataDir(missing).subsets() == []


def test_the_shuffled_manifest_is_named_by_subsets_and_seed_and_is_not_a_subset(tmp_path):
    data = DataDir(tmp_path)
    path = data.shuffled_cuts(["a", "b"], seed=3)
    assert path == tmp_path / "shuffled" / "cuts_a+b_seed3.jsonl.gz"
    assert data.shuffled_cuts(["b", "a"], 3) != path != data.shuffled_cuts(["a", "b"], 4)
    path.parent.mkdir()
    path.write_bytes(b"")
    (tmp_path / "cuts_a.jsonl.gz").write_bytes(b"")
    assert data.subsets() == ["a"]


def test_features_of_a_moved_data_dir_are_found_under_its_new_root(tmp_path):
    moved = DataDir(tmp_path / "new")
    old = "/old/place/feats/train-clean-100/feats-3.lca"
    assert moved.relocated_features(old) == tmp_path / "new/feats/train-clean-100/feats-3.lca"
