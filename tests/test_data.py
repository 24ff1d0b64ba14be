import json
import logging

import pytest
import torch

from synthetic import write_class_folders, write_manifest_set, write_presplit
from tumortrace.data import DataError, decode_all, discover
from tumortrace.split import assign_splits, dhash, hash_groups, kfold_split, save_split


def test_manifest_layout_ignores_normal_and_keeps_groups_and_masks(tmp_path, caplog):
    root = write_manifest_set(tmp_path, n_per_class=8)
    with caplog.at_level(logging.INFO):
        samples = discover(root)
    assert len(samples) == 16 and {s.label for s in samples} == {0, 1}
    assert "ignoring 1 manifest rows labelled 'normal'" in caplog.text
    assert all(s.mask is not None and s.group for s in samples)


def test_class_folders_case_insensitive_and_kaggle_masks(tmp_path, caplog):
    root = write_class_folders(tmp_path, n_per_class=5, class_names=("Benign", "MALIGNANT"))
    (root / "normal").mkdir()
    with caplog.at_level(logging.INFO):
        samples = discover(root)
    assert len(samples) == 10  # the _mask files are masks, not images
    assert all(s.mask is not None and "_mask" in s.mask.name for s in samples)
    assert "ignoring folder" in caplog.text and "normal" in caplog.text


def test_presplit_layout_with_validation_alias(tmp_path):
    samples = discover(write_presplit(tmp_path, n_per_class=3))
    assert {s.split for s in samples} == {"train", "val", "test"}
    split = assign_splits(samples)
    assert [len(split[k]) for k in ("train", "val", "test")] == [6, 6, 6]


@pytest.mark.parametrize("make, message", [
    (lambda r: None, "no labelled images found"),
    (lambda r: (r / "benign").mkdir() or (r / "benign" / "x.txt").write_text("hi"), "contains no images"),
    (lambda r: write_class_folders(r, 3, class_names=("benign",)), "no malignant images"),
    (lambda r: write_class_folders(r, 3, class_names=("cyst", "fibroma")), "no labelled images found"),
    (lambda r: (r / "manifest.csv").write_text("file,class\na.png,benign\n"), "needs columns image and label"),
])
def test_bad_data_gives_clear_message(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataError, match=message):
        discover(tmp_path)


def test_missing_folder():
    with pytest.raises(DataError, match="does not exist"):
        discover("/nonexistent/tumortrace-data")


def test_unreadable_file_is_reported_and_skipped(tmp_path, caplog):
    root = write_class_folders(tmp_path, n_per_class=4)
    bad = root / "Benign" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    samples = discover(root)
    with caplog.at_level(logging.WARNING):
        images, kept = decode_all(samples, 32)
    assert len(kept) == len(samples) - 1 and images.shape == (len(kept), 3, 32, 32)
    assert "broken.png" in caplog.text


def test_a_training_file_of_several_frames_gives_its_first_and_says_so(tmp_path, caplog):
    from hostile import write_case
    from tumortrace.images import load_image
    from tumortrace.preprocess import resized_uint8

    root = write_class_folders(tmp_path, n_per_class=4)
    series = write_case(root / "MALIGNANT", "multiframe.dcm")  # 3 frames, one label
    samples = discover(root)
    with caplog.at_level(logging.WARNING):
        images, kept = decode_all(samples, 32)
    assert len(kept) == len(samples)
    first = images[[s.path for s in kept].index(series)]
    assert torch.equal(first, resized_uint8(load_image(series, frame=1).pixels, 32))
    assert (f"1 image file(s) hold several frames, of which only the first is used (e.g. {series}: 3 frames)"
            in caplog.text)
    caplog.clear()
    series.unlink()
    with caplog.at_level(logging.WARNING):
        decode_all(discover(root), 32)
    assert "several frames" not in caplog.text


def test_split_too_small_for_a_class(tmp_path):
    root = write_class_folders(tmp_path, n_per_class=6, class_names=("benign", "malignant"))
    for p in list((root / "malignant").glob("*"))[:-2]:
        p.unlink()  # one malignant image (+ its mask) left
    samples = discover(root)
    with pytest.raises(DataError, match="split has no malignant images"):
        assign_splits(samples, seed=0)


def test_split_keeps_groups_together_is_stratified_and_seeded(tmp_path):
    samples = discover(write_manifest_set(tmp_path, n_per_class=40))
    a = assign_splits(samples, seed=3)
    assert a == assign_splits(samples, seed=3) and a != assign_splits(samples, seed=4)
    where = {}
    for name, idx in a.items():
        for i in idx:
            assert where.setdefault(samples[i].group, name) == name
    assert sorted(sum(a.values(), [])) == list(range(len(samples)))
    for name, frac in (("val", 0.15), ("test", 0.15)):
        for label in (0, 1):
            n = sum(samples[i].label == label for i in a[name])
            assert abs(n - frac * 40) <= 3


def test_given_split_that_leaks_is_refused(tmp_path):
    samples = discover(write_manifest_set(tmp_path, n_per_class=8))
    for s in samples:
        s.split = "train"
    samples[0].split, samples[1].split = "test", "val"  # 0 and 1 share a group
    samples[4].split = samples[5].split = "test"
    with pytest.raises(DataError, match="appears in both"):
        assign_splits(samples)


def test_perceptual_hash_groups_near_duplicates(tmp_path):
    samples = discover(write_manifest_set(tmp_path, n_per_class=12))
    images, samples = decode_all(samples, 64)
    groups = hash_groups(images)
    truth = [s.group for s in samples]
    # every manifest near-copy pair (image + caliper-marked copy) lands in one hash group
    for i in range(len(samples)):
        for j in range(len(samples)):
            if truth[i] == truth[j]:
                assert groups[i] == groups[j]
    assert len(set(groups)) > len(samples) // 3  # and it does not lump everything together
    flipped = torch.flip(images[0], dims=[2])
    assert dhash(images[0]) != dhash(flipped)


def test_save_split_round_trip(tmp_path):
    root = write_manifest_set(tmp_path / "d", n_per_class=10)
    samples = discover(root)
    split = assign_splits(samples)
    save_split(tmp_path / "split.json", root, samples, split, {"seed": 0})
    doc = json.loads((tmp_path / "split.json").read_text())
    assert doc["positive_class"] == "malignant"
    assert {r["image"] for r in doc["test"]} == {samples[i].key(root) for i in split["test"]}


def test_kfold_every_image_tested_once_groups_whole_classes_balanced(tmp_path):
    samples = discover(write_manifest_set(tmp_path, n_per_class=40))
    folds = [kfold_split(samples, 5, k, seed=1) for k in range(5)]
    tested = sorted(i for f in folds for i in f["test"])
    assert tested == list(range(len(samples)))  # each image in exactly one test fold
    for k, f in enumerate(folds):
        assert set(f["val"]) == set(folds[(k + 1) % 5]["test"])
        assert sorted(f["train"] + f["val"] + f["test"]) == list(range(len(samples)))
        where = {}
        for name, idx in f.items():
            for i in idx:
                assert where.setdefault(samples[i].group, name) == name, "a duplicate group was split"
        for label in (0, 1):
            assert abs(sum(samples[i].label == label for i in f["test"]) - 40 / 5) <= 2
    assert kfold_split(samples, 5, 0, seed=1) != kfold_split(samples, 5, 0, seed=2)
    with pytest.raises(DataError, match="--fold must be in 0..4"):
        kfold_split(samples, 5, 5)
