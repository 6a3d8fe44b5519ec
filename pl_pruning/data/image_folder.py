"""An ImageFolder tree, or a ``.tar.gz`` of one, extracted once into a cache folder.

Layouts understood (after descending through folders that hold a single folder):

* ``train/<class>/*`` and ``test/<class>/*`` (and optionally ``val/<class>/*``): the
  given splits; validation is cut from ``train`` when there is no ``val`` folder;
* ``<class>/*``: one pool, split into train / validation / test.

Works with the CIFAR-10 JPEG copy (``cifar10/train``, ``cifar10/test``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from pl_pruning.data.base import (
    ClassificationDataModule,
    balanced_subset,
    split_indices,
)
from pl_pruning.data.transforms import CIFAR10_MEAN, CIFAR10_STD, cifar_transforms
from pl_pruning.errors import PlPruningError
from pl_pruning.files import write_text_atomic
from pl_pruning.validate import check_bool, check_fraction, check_int

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def default_cache_dir() -> Path:
    return Path(os.environ.get("PL_PRUNING_CACHE", Path.home() / ".cache" / "pl_pruning"))


def is_archive(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIXES)


def extract_once(archive: Path, cache_dir: Path) -> Path:
    """Extract ``archive`` into ``cache_dir/<archive stem>-<size>`` unless already there.

    Extraction goes to a temporary folder that is renamed into place, so concurrent
    processes (DDP ranks) and interrupted runs never see a half-extracted tree.
    """
    stem = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        stem = stem.removesuffix(suffix)
    target = cache_dir / f"{stem}-{archive.stat().st_size}"
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=cache_dir))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:  # truncated, corrupt, not an archive
            raise PlPruningError(f"data.root={str(archive)!r} is not a readable archive ({type(err).__name__}: "
                                 f"{err}); give an ImageFolder tree or a .tar.gz of one") from None
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # lost a race only if the winner's copy is there
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def find_tree_root(folder: Path) -> Path:
    """Descend through folders that contain exactly one folder and nothing else, as long as
    that folder holds folders itself (a lone class folder holds images: it is not a root)."""
    for _ in range(8):
        entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
        if (len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "test", "val")
                and any(e.is_dir() for e in entries[0].iterdir())):
            folder = entries[0]
        else:
            break
    return folder


def undecodable_images(paths: Sequence[str], loader: Callable[[str], Any], cache_dir: Path) -> dict[str, str]:
    """``{path: why}`` for every image of ``paths`` that ``loader`` cannot decode. The
    answer is cached in ``cache_dir/scans`` under the list's fingerprint (each file's
    path, size and modification time), so an unchanged tree is decoded once."""
    fingerprint = hashlib.sha1()
    for path in paths:
        st = os.stat(path)
        fingerprint.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    cached = cache_dir / "scans" / f"{fingerprint.hexdigest()}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    bad: dict[str, str] = {}
    for path in paths:
        try:
            loader(path)
        except Exception as err:  # noqa: BLE001 - any failure to decode is the file's
            bad[path] = f"{type(err).__name__}: {err}"
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs a scan
        write_text_atomic(cached, json.dumps(bad))
    return bad


def _has_images(folder: Path) -> bool:
    return any(f.suffix.lower() in IMG_EXTENSIONS for f in folder.rglob("*") if f.is_file())


class _Transformed(Dataset):
    """A view of an ImageFolder with its own transform (train and eval share one scan)."""

    def __init__(self, base: ImageFolder, indices: Sequence[int], transform) -> None:
        self.base, self.indices, self.transform = base, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        path, target = self.base.samples[self.indices[i]]
        return self.transform(self.base.loader(path)), target


class ImageFolderDataModule(ClassificationDataModule):
    """Images in class folders, from a folder or an archive.

    Args:
        root: a folder, or a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive of one.
        cache_dir: where archives are extracted (default ``$PL_PRUNING_CACHE`` or
            ``~/.cache/pl_pruning``); extracted once and reused.
        samples_per_class: take a class-balanced subset of this many training images
            per class (before validation is cut from them); ``None`` keeps all.
        eval_samples_per_class: the same for the test split.
        val_fraction: share of the training pool held out for validation.
        test_fraction: share held out for testing when the tree has no ``test`` folder.
        image_size: side of the square images fed to the network.
        augment: random crop (padding 4) and horizontal flip on the training split.
        mean, std: normalisation (CIFAR-10's by default).
        seed: the training batches' order, and the splits unless ``split_seed`` is given.
        split_seed: the seed of the splits alone. A network trained on one split and
            pruned under other seeds must keep that split: under another, its validation
            set would be images it trained on.
        skip_undecodable: ``setup`` decodes every image of the splits once (the result is
            cached beside the extracted archives, keyed by the files' sizes and times), so a
            corrupt or empty file is found before training instead of failing a loader
            worker mid-epoch. ``False`` refuses such a tree, naming the files; ``True``
            leaves them out with a warning that names them.

    Raises:
        PlPruningError: a bad argument; (in ``setup``) images that cannot be decoded,
            unless ``skip_undecodable``.
    """

    def __init__(self, root: str, cache_dir: str | None = None,
                 samples_per_class: int | None = None, eval_samples_per_class: int | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, image_size: int = 32,
                 augment: bool = True, mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD, batch_size: int = 128,
                 eval_batch_size: int | None = None, num_workers: int = 2, seed: int = 0,
                 split_seed: int | None = None, skip_undecodable: bool = False) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.split_seed = seed if split_seed is None else check_int("split_seed", split_seed, 0)
        if root is None or str(root) in ("", "???"):
            raise PlPruningError("data.root is required for data=image_folder: a folder or a .tar.gz")
        self.root = Path(str(root)).expanduser()
        if not self.root.exists():
            raise PlPruningError(f"data.root={str(root)!r} does not exist (resolved to {self.root.resolve()})")
        if not (self.root.is_dir() or is_archive(self.root)):
            raise PlPruningError(
                f"data.root={str(root)!r} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
        check_fraction("val_fraction", val_fraction)
        check_fraction("test_fraction", test_fraction)
        for name, n in (("samples_per_class", samples_per_class),
                        ("eval_samples_per_class", eval_samples_per_class)):
            if n is not None and n < 2:
                raise PlPruningError(f"{name} must be >= 2 or null, got {n}")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.samples_per_class = samples_per_class
        self.eval_samples_per_class = eval_samples_per_class
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.image_size = check_int("image_size", image_size, 1)
        self.skip_undecodable = check_bool("skip_undecodable", skip_undecodable)
        self.train_tf, self.eval_tf = cifar_transforms(image_size, augment, mean, std)
        self._tree: Path | None = None
        self._classes: list[str] | None = None

    # The tree is located lazily: extraction may take seconds, and ``num_classes`` is
    # needed before ``setup`` to build the network.
    def tree(self) -> Path:
        if self._tree is None:
            folder = extract_once(self.root, self.cache_dir) if is_archive(self.root) else self.root
            self._tree = find_tree_root(folder)
        return self._tree

    def _split_dirs(self) -> dict[str, Path]:
        tree = self.tree()
        dirs = {s: tree / s for s in ("train", "val", "test") if (tree / s).is_dir()}
        if "train" not in dirs:
            return {}
        return dirs

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            dirs = self._split_dirs()
            base = dirs.get("train", self.tree())
            self._classes = sorted(e.name for e in base.iterdir() if e.is_dir() and not e.name.startswith("."))
            if len(self._classes) < 2:
                raise PlPruningError(f"{base} holds {len(self._classes)} class folder(s) {self._classes}; "
                                     "need at least 2 (one folder of images per class)")
            empty = [c for c in self._classes if not _has_images(base / c)]
            if empty:
                raise PlPruningError(f"class folder(s) {empty} under {base} hold no images "
                                     f"({', '.join(sorted(IMG_EXTENSIONS))})")
        return self._classes

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        return (3, self.image_size, self.image_size)

    def prepare_data(self) -> None:
        self.tree()

    def _subset(self, folder: ImageFolder, idx: np.ndarray, per_class: int | None, salt: int) -> np.ndarray:
        if per_class is None:
            return idx
        targets = np.asarray(folder.targets)[idx]
        return idx[balanced_subset(targets, per_class, self.split_seed + salt)]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        dirs = self._split_dirs()
        pool_folder = ImageFolder(str(dirs.get("train", self.tree())))
        if pool_folder.classes != self.classes:
            raise PlPruningError(f"class folders differ from {self.classes} under {self.tree()}")
        pool = self._subset(pool_folder, np.arange(len(pool_folder)), self.samples_per_class, 0)
        # Cut from the pool whatever split the tree does not provide as a folder.
        cuts = {"val": self.val_fraction, "test": self.test_fraction}
        cuts = {name: frac for name, frac in cuts.items() if name not in dirs}
        fractions = [1 - sum(cuts.values()), *cuts.values()]
        parts = split_indices(np.asarray(pool_folder.targets)[pool], fractions, self.split_seed)
        picked = {"train": pool[parts[0]]}
        picked.update({name: pool[p] for name, p in zip(cuts, parts[1:])})
        views = {}
        for name, transform in (("train", self.train_tf), ("val", self.eval_tf), ("test", self.eval_tf)):
            if name in picked:
                views[name] = _Transformed(pool_folder, picked[name], transform)
                continue
            folder = ImageFolder(str(dirs[name]))
            if folder.classes != self.classes:
                raise PlPruningError(f"class folders of {dirs[name]} differ from those of the training split")
            idx = self._subset(folder, np.arange(len(folder)), self.eval_samples_per_class, 1)
            views[name] = _Transformed(folder, idx, transform)
        self._leave_out_undecodable(list(views.values()))
        self.train_set, self.val_set, self.test_set = views["train"], views["val"], views["test"]

    def _leave_out_undecodable(self, views: list[_Transformed]) -> None:
        paths = sorted({view.base.samples[i][0] for view in views for i in view.indices})
        bad = undecodable_images(paths, views[0].base.loader, self.cache_dir)
        if not bad:
            return
        first = next(iter(bad))
        listed = f"{first} ({bad[first]})" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
        if not self.skip_undecodable:
            raise PlPruningError(f"{len(bad)} image(s) under root cannot be decoded: {listed}; replace or remove "
                                 "them, or set skip_undecodable=true to leave them out")
        rank_zero_warn(f"[ImageFolderDataModule] left out {len(bad)} image(s) that cannot be decoded: "
                       f"{', '.join(list(bad)[:5])}{' ...' if len(bad) > 5 else ''}")
        for view in views:
            view.indices = [i for i in view.indices if view.base.samples[i][0] not in bad]
