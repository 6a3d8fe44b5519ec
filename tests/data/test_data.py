"""Data modules: shapes, disjoint splits, determinism, bad input."""

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from pl_pruning import PlPruningError
from pl_pruning.data import (
    CIFAR10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
)
from pl_pruning.data.base import balanced_subset, split_indices


def _all(dataset):
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.tensor(ys)


def test_digits_shapes_and_disjoint_splits():
    dm = DigitsDataModule(seed=0)
    dm.setup()
    assert dm.num_classes == 10 and dm.input_shape == (1, 8, 8)
    sizes = [len(dm.train_set), len(dm.val_set), len(dm.test_set)]
    assert sum(sizes) == 1797
    assert abs(sizes[1] - 0.15 * 1797) < 12 and abs(sizes[2] - 0.15 * 1797) < 12
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 1, 8, 8) and y.dtype == torch.long
    # No image sits in two splits.
    keys = [{tuple(x.flatten().tolist()) for x in _all(s)[0]} for s in (dm.train_set, dm.val_set, dm.test_set)]
    assert not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def test_digits_split_is_fixed_by_seed():
    a, b, c = DigitsDataModule(seed=3), DigitsDataModule(seed=3), DigitsDataModule(seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(_all(a.test_set)[0], _all(b.test_set)[0])
    assert not torch.equal(_all(a.test_set)[0], _all(c.test_set)[0])


def test_split_indices_is_stratified_and_complete():
    labels = np.repeat(np.arange(4), 50)
    parts = split_indices(labels, [0.6, 0.2, 0.2], seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(200))
    for p, frac in zip(parts, [0.6, 0.2, 0.2]):
        assert np.all(np.bincount(labels[p], minlength=4) == int(50 * frac))
    # a data set stored class by class still gives mixed batches: every part is shuffled
    val = labels[parts[1]]
    assert len(set(val[:10].tolist())) >= 3 and not np.all(np.diff(val) >= 0)
    again = split_indices(labels, [0.6, 0.2, 0.2], seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))  # fixed by the seed


def test_balanced_subset():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 3)
    idx = balanced_subset(labels, 5, seed=0)
    assert np.bincount(labels[idx]).tolist() == [5, 5, 3]


def test_synthetic_shapes_and_determinism():
    a = SyntheticDataModule(num_classes=3, input_shape=(2, 6, 6), num_train=20, seed=1)
    b = SyntheticDataModule(num_classes=3, input_shape=(2, 6, 6), num_train=20, seed=1)
    a.setup()
    b.setup()
    assert len(a.train_set) == 20 and a.train_set[0][0].shape == (2, 6, 6)
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])


def _make_tree(root, classes=("cat", "dog", "eel"), per_class=12, splits=("train", "test")):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.jpg")


def test_image_folder_from_archive(tmp_path):
    tree = tmp_path / "src" / "toy"
    _make_tree(tree)
    archive = tmp_path / "toy.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="toy")
    cache = tmp_path / "cache"
    dm = ImageFolderDataModule(root=str(archive), cache_dir=str(cache), image_size=8,
                               samples_per_class=10, eval_samples_per_class=4, val_fraction=0.2,
                               num_workers=0, batch_size=4)
    assert dm.num_classes == 3 and dm.input_shape == (3, 8, 8)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 6, 12)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8)
    # Extracted once: a second module reuses the cache (no new folder appears).
    before = sorted(p.name for p in cache.iterdir())
    ImageFolderDataModule(root=str(archive), cache_dir=str(cache), image_size=8).setup()
    assert sorted(p.name for p in cache.iterdir()) == before


def test_image_folder_single_pool_is_split_three_ways(tmp_path):
    _make_tree(tmp_path, per_class=10, splits=("",))
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=8, val_fraction=0.2, test_fraction=0.2,
                               num_workers=0, seed=5)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (18, 6, 6)
    assert not set(dm.train_set.indices) & set(dm.test_set.indices)


def test_image_folder_split_seed_keeps_the_splits_while_the_seed_changes(tmp_path):
    """A network trained on split 0 is pruned under other seeds with split_seed=0: the
    validation images stay the ones it never trained on."""
    _make_tree(tmp_path, per_class=10, splits=("",))

    def splits(**kw):
        dm = ImageFolderDataModule(root=str(tmp_path), image_size=8, val_fraction=0.2, test_fraction=0.2,
                                   num_workers=0, **kw)
        dm.setup()
        return {name: sorted(getattr(dm, f"{name}_set").indices) for name in ("train", "val", "test")}, dm

    base, _ = splits(seed=0)
    assert splits(seed=1)[0] != base                 # by default the seed draws the splits
    kept, dm = splits(seed=1, split_seed=0)
    assert kept == base and dm.seed == 1             # the run's seed still orders the batches
    with pytest.raises(PlPruningError, match="split_seed must be an integer >= 0"):
        ImageFolderDataModule(root=str(tmp_path), split_seed=-1)


def test_image_folder_missing_root_is_named():
    with pytest.raises(PlPruningError, match="data.root='/no/such/place' does not exist"):
        ImageFolderDataModule(root="/no/such/place")


def test_cifar10_missing_root_is_named(tmp_path):
    dm = CIFAR10DataModule(root=str(tmp_path / "nothing"))
    with pytest.raises(PlPruningError, match="CIFAR-10 not found under data.root=.*download=true"):
        dm.prepare_data()


@pytest.mark.slow
def test_image_folder_on_the_real_cifar10_archive(real_cifar_archive, tmp_path_factory):
    dm = ImageFolderDataModule(root=str(real_cifar_archive), samples_per_class=20,
                               eval_samples_per_class=5, num_workers=0, seed=0)
    assert dm.classes[:3] == ["airplane", "automobile", "bird"] and dm.num_classes == 10
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (180, 20, 50)
    x, y = dm.test_set[0]
    assert x.shape == (3, 32, 32) and abs(float(x.mean())) < 3
    train_labels = [dm.train_set[i][1] for i in range(len(dm.train_set))]
    assert np.bincount(train_labels).tolist() == [18] * 10


def _image(path, value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


def test_bad_image_folders_are_named(tmp_path):
    from pl_pruning.data import ImageFolderDataModule
    from pl_pruning.errors import PlPruningError

    single = tmp_path / "single"
    for i in range(3):
        _image(single / "cat" / f"{i}.png")
    with pytest.raises(PlPruningError, match=r"holds 1 class folder\(s\) \['cat'\]; need at least 2"):
        _ = ImageFolderDataModule(root=single).num_classes
    empty = tmp_path / "empty"
    _image(empty / "cat" / "0.png")
    (empty / "dog").mkdir()
    with pytest.raises(PlPruningError, match=r"class folder\(s\) \['dog'\] under .* hold no images"):
        _ = ImageFolderDataModule(root=empty).num_classes


@pytest.mark.parametrize("content", [b"not an archive at all" * 100, "truncated"])
def test_an_archive_that_cannot_be_read_is_named(tmp_path, content):
    import tarfile

    from pl_pruning.data import ImageFolderDataModule
    from pl_pruning.errors import PlPruningError

    archive = tmp_path / "images.tar.gz"
    if content == "truncated":
        tree = tmp_path / "tree"
        for cls in ("a", "b"):
            for i in range(20):
                _image(tree / cls / f"{i}.png", value=i)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(tree, arcname="tree")
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    else:
        archive.write_bytes(content)
    with pytest.raises(PlPruningError, match="is not a readable archive"):
        _ = ImageFolderDataModule(root=archive, cache_dir=tmp_path / "cache").num_classes
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]  # nothing half-made


def test_undecodable_images_are_found_before_training(tmp_path):
    """A zero-byte and a truncated image: refused at setup with a path, or left out with
    ``skip_undecodable``; the scan is cached by the files' sizes and times."""
    tree, cache = tmp_path / "tree", tmp_path / "cache"
    _make_tree(tree, per_class=6)
    empty, truncated = tree / "train" / "cat" / "0.jpg", tree / "test" / "dog" / "1.jpg"
    empty.write_bytes(b"")
    truncated.write_bytes(truncated.read_bytes()[:30])
    with pytest.raises(PlPruningError, match=r"^2 image\(s\) under root cannot be decoded: .*\.jpg \(.*"
                                             r"set skip_undecodable=true to leave them out"):
        ImageFolderDataModule(root=str(tree), cache_dir=str(cache), image_size=8, num_workers=0).setup()
    assert len(list((cache / "scans").glob("*.json"))) == 1
    dm = ImageFolderDataModule(root=str(tree), cache_dir=str(cache), image_size=8, num_workers=0,
                               skip_undecodable=True)
    with pytest.warns(UserWarning, match="left out 2 image"):
        dm.setup()
    kept = {dm.train_set.base.samples[i][0] for i in dm.train_set.indices} | \
        {dm.test_set.base.samples[i][0] for i in dm.test_set.indices}
    assert str(empty) not in kept and str(truncated) not in kept
    assert len(dm.train_set) + len(dm.val_set) == 17 and len(dm.test_set) == 17
    next(iter(dm.train_dataloader()))  # every image left decodes
    with pytest.raises(PlPruningError, match="image_size must be an integer >= 1, got 0"):
        ImageFolderDataModule(root=str(tree), image_size=0)
