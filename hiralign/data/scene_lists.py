"""Published split lists (``split="lists"``, the ``*_scenes`` parameters): the scene names a split
reference (``cave/train``) or a ``.txt`` file names, each located under its dataset folder and checked
without loading a scene (:func:`resolve_scene_lists`), and the tiles of the listed scenes
(:func:`listed_tiles`, :func:`domain_tiles`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from hiralign.data import loaders
from hiralign.data.cube import Cube
from hiralign.data.loaders import DatasetError
from hiralign.data.splits import get_split, list_datasets, list_splits
from hiralign.data.tiling import draw_tiles, load_cube, missing_scenes, real_tiles, scene_tiles
from hiralign.stages import ParameterError
from hiralign.store import project_path

#: The scene-list parameter of each split (``split="lists"`` for the target ones; :func:`resolve_scene_lists`).
SCENE_LIST_KEYS = {"target_observed": "observed_scenes", "target_unobserved": "unobserved_scenes",
                   "source_train": "source_train_scenes", "source_test": "source_test_scenes"}
#: The image count of each split; with a scene list, 0 takes every tile of its scenes.
COUNT_KEYS = {"target_observed": "n_target_observed", "target_unobserved": "n_target_unobserved",
              "source_train": "n_source_train", "source_test": "n_source_test"}
#: Where :func:`hiralign.data.loaders.scene_path` looks for a listed scene, per dataset (for error messages).
LISTED_LAYOUTS = {"cave": "<scene>/ or <scene>.mat", "icvl": "<scene>.mat", "kaist": "<scene>.mat",
                  "hsidwrd": "gt/<scene>.tif"}


@dataclass(frozen=True)
class SceneList:
    """The scenes one scene-list parameter names, each located under its dataset folder."""

    split: str  #: the split it fills, e.g. ``target_observed``
    key: str  #: the parameter, e.g. ``observed_scenes``
    ref: str  #: as given: a split reference (``cave/train``) or a .txt file
    kind: str  #: the dataset whose layout locates the scenes (:func:`hiralign.data.loaders.scene_path`)
    root: Path  #: the dataset folder
    scenes: dict[str, Path]  #: scene name -> its file or folder, in list order

    def record(self) -> dict:
        """What ``00_data.h5``'s benchmark parameters keep of the list."""
        return {"parameter": self.key, "list": self.ref, "kind": self.kind, "scenes": list(self.scenes)}


def split_references() -> list[str]:
    """Every split reference a scene-list parameter accepts, e.g. ``cave/train``."""
    return [f"{d}/{s}" for d in list_datasets() for s in list_splits(d)]


def read_scene_list(key: str, ref: str) -> tuple[list[str], str | None]:
    """The scene names of the scene-list parameter ``key`` and the dataset of a split reference (None for a file).

    ``ref`` is a split reference ``<dataset>/<split>`` (:func:`hiralign.data.splits.get_split`, e.g.
    ``cave/train``, ``icvl/test``) or a ``.txt`` file (relative: to the project root) of one scene name
    per line, ``#`` starting a comment."""
    ref = str(ref).strip()
    if ref.lower().endswith(".txt"):
        path = project_path(ref)
        if not path.is_file():
            raise DatasetError(f"{path}: no such scene-list file (00_data.{key} is {ref!r}); write one scene name per "
                               f"line there, or name a split list such as cave/train")
        names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        names, dataset = [n for n in names if n], None
    else:
        dataset, _, split = ref.lower().partition("/")
        if f"{dataset}/{split}" not in split_references():
            raise ParameterError(f"00_data: {key} must be a split reference <dataset>/<split> (one of "
                                 f"{', '.join(split_references())}) or a .txt file of scene names, got {ref!r}")
        names = get_split(dataset, split)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ParameterError(f"00_data: {key} ({ref}) lists scenes twice: {', '.join(duplicates)}")
    if not names:
        raise ParameterError(f"00_data: {key} ({ref}) lists no scenes")
    return names, dataset


def listed_kind(kind: str, datasets: Mapping[str, str | None], kind_key: str, path: str = "") -> str:
    """The dataset whose layout locates one domain's listed scenes: ``kind`` (00_data.<kind_key>), else the
    dataset of its split references (``datasets``: parameter -> dataset or None), else the one dataset
    name in the folder ``path`` (``data/icvl``)."""
    named = sorted({d for d in datasets.values() if d})
    in_path = sorted({k for k in LISTED_LAYOUTS for part in project_path(path).parts if k in part.lower()}) if path else []
    if not named and len(in_path) == 1:
        named = in_path
    if kind:
        kind = kind.lower()
        other = [f"{key} names {d} scenes" for key, d in datasets.items() if d and d != kind]
        if other:
            raise ParameterError(f"00_data: {kind_key} is {kind!r}, but {'; '.join(other)}")
    elif len(named) == 1:
        kind = named[0]
    else:
        raise ParameterError(f"00_data: set {kind_key} ({', '.join(LISTED_LAYOUTS)}) to locate the scenes of "
                             f"{', '.join(datasets)}" + (f" (their split lists name {' and '.join(named)})" if named else ""))
    if kind not in LISTED_LAYOUTS:
        raise ParameterError(f"00_data: scene lists locate scenes by a dataset's layout; {kind_key} must be one of "
                             f"{', '.join(LISTED_LAYOUTS)}, got {kind!r}")
    return kind


def dataset_root(kind: str, path: str, key: str) -> Path:
    """The folder in which listed scenes of ``path`` (00_data.<key>) are looked up: the folder itself;
    for HSIDwrD a ``gt`` folder's parent (the scenes are ``<root>/gt/<n>.tif``)."""
    if any(c in str(path) for c in "*?["):
        raise ParameterError(f"00_data: scene lists look their scenes up in a dataset folder, but {key} is the "
                             f"pattern {path!r}; set {key} to the folder (e.g. data/cave)")
    root = project_path(path)
    if not root.exists():
        raise missing_scenes(root, f"{root}: no such folder (00_data.{key} is {str(path)!r})", key)
    if not root.is_dir():
        raise ParameterError(f"00_data: scene lists look their scenes up in a dataset folder, but {key} is the "
                             f"file {str(path)!r}; set {key} to the folder holding it")
    return root.parent if kind == "hsidwrd" and root.name.lower() == "gt" else root


def missing_listed(missing: list[tuple[SceneList, list[str]]]) -> DatasetError:
    """ONE error for every listed scene that is not under its dataset folder: the folders, the lists and
    the missing names, where each dataset's scenes are looked for, and what to do."""
    total = sum(len(absent) for _, absent in missing)
    found = "; ".join(f"{lst.key} ({lst.ref}), {len(absent)} of {len(absent) + len(lst.scenes)} missing in "
                      f"{lst.root}: {', '.join(absent)}" for lst, absent in missing)
    looked = ", ".join(sorted({f"{lst.root}/{LISTED_LAYOUTS[lst.kind]} ({lst.kind})" for lst, _ in missing}))
    return DatasetError(f"00_data: {total} listed scene(s) not found: {found}. Looked for {looked}. Put the scenes "
                        f"there (docs/datasets.md describes each dataset's layout), fix the lists, or point "
                        f"00_data.dataset / 00_data.source_path elsewhere (hiralign run PARAMS --set 00_data.dataset=PATH)")


def resolve_scene_lists(dataset: str, kind: str, source_path: str, source_kind: str, split: str,
                        refs: Mapping[str, str]) -> dict[str, SceneList]:
    """The scene lists of stage 00 by split (``refs``: split name -> the value of its :data:`SCENE_LIST_KEYS`
    parameter), checked without loading any scene.

    Target lists need ``split="lists"`` (which needs ``observed_scenes``), source lists a ``source_path``;
    an observed and an unobserved (or a source train and test) list must not share a scene; each
    listed scene is located with :func:`hiralign.data.loaders.scene_path` under its dataset folder, and
    every one that is missing is named in ONE :class:`DatasetError` (:func:`missing_listed`)."""
    given = {name: str(refs.get(name) or "").strip() for name in SCENE_LIST_KEYS}
    given = {name: ref for name, ref in given.items() if ref}
    target = [n for n in ("target_observed", "target_unobserved") if n in given]
    source = [n for n in ("source_train", "source_test") if n in given]
    if split == "lists":
        if not dataset or dataset == "synthetic":
            raise ParameterError("00_data: split=lists takes the target scenes from a dataset folder; set dataset to "
                                 "it (e.g. data/cave)")
        if "target_observed" not in given:
            raise ParameterError("00_data: split=lists needs observed_scenes, the target scenes of the observed "
                                 "split (e.g. cave/train or a .txt file of scene names)")
    elif target:
        raise ParameterError(f"00_data: {SCENE_LIST_KEYS[target[0]]} is set, but split is {split!r}; set "
                             f"split=lists to follow the scene lists")
    if source and not source_path:
        raise ParameterError(f"00_data: {SCENE_LIST_KEYS[source[0]]} is set, but source_path is empty; set "
                             f"source_path to the source dataset folder (e.g. data/icvl)")
    names = {n: read_scene_list(SCENE_LIST_KEYS[n], ref) for n, ref in given.items()}
    for a, b in (("target_observed", "target_unobserved"), ("source_train", "source_test")):
        if a in names and b in names:
            shared = [s for s in names[a][0] if s in set(names[b][0])]
            if shared:
                raise ParameterError(f"00_data: {SCENE_LIST_KEYS[a]} ({given[a]}) and {SCENE_LIST_KEYS[b]} ({given[b]}) "
                                     f"share {len(shared)} scene(s): {', '.join(shared)}; a scene serves one split only")
    lists, missing = {}, []
    for splits, path, path_key, domain_kind, kind_key in ((target, dataset, "dataset", kind, "kind"),
                                                          (source, source_path, "source_path", source_kind, "source_kind")):
        if not splits:
            continue
        used = listed_kind(domain_kind, {SCENE_LIST_KEYS[n]: names[n][1] for n in splits}, kind_key, path)
        root = dataset_root(used, path, path_key)
        for n in splits:
            located, absent = {}, []
            for scene in names[n][0]:
                try:
                    located[scene] = loaders.scene_path(used, root, scene)
                except DatasetError:
                    absent.append(scene)
            lists[n] = SceneList(n, SCENE_LIST_KEYS[n], given[n], used, root, located)
            if absent:
                missing.append((lists[n], absent))
    if missing:
        raise missing_listed(missing)
    return lists


def listed_tiles(listed: SceneList, size: int, n: int, seed: int, wavelengths: np.ndarray | None = None) -> list[Cube]:
    """The tiles of the listed scenes (named as listed): every tile for ``n`` = 0 (scene by scene in list
    order, row-major), else ``n`` of them drawn seeded without replacement."""
    pool = [t for scene, path in listed.scenes.items()
            for t in real_tiles(load_cube(path, listed.kind, wavelengths).replace(name=scene), size)]
    if n == 0:
        return pool
    count = COUNT_KEYS[listed.split]
    if len(pool) < n:
        raise DatasetError(f"{listed.root}: {count}={n}, but the {len(listed.scenes)} scene(s) of {listed.key} "
                           f"({listed.ref}) hold only {len(pool)} tiles of {size}x{size} px; use {count}=0 for all of "
                           f"them, a smaller image_size or longer lists")
    return draw_tiles(pool, n, seed, str(listed.root))


def domain_tiles(path: str, kind: str, names: tuple[str, str], counts: Mapping[str, int], lists: Mapping[str, SceneList],
                 size: int, seeds: tuple[int, int, int], wavelengths: np.ndarray | None = None,
                 key: str = "dataset") -> dict[str, list[Cube]]:
    """The two splits ``names`` of one domain with scene lists: a listed split takes :func:`listed_tiles` of
    its list (seeds[0] / seeds[1]); an unlisted one draws its count of tiles (seeds[2]) from the scenes
    under ``path`` that no list names."""
    out = {n: listed_tiles(lists[n], size, counts[n], seed, wavelengths) for n, seed in zip(names, seeds) if n in lists}
    rest = [n for n in names if n not in lists]
    need = sum(counts[n] for n in rest)
    if need:
        taken = frozenset(p.resolve() for n in names if n in lists for p in lists[n].scenes.values())
        kind = kind or next(lists[n].kind for n in names if n in lists)
        pool = [t for s in scene_tiles(path, kind, size, key, wavelengths, exclude=taken) for t in s]
        drawn = draw_tiles(pool, need, seeds[2], f"{path} (the scenes no scene list names)")
    else:
        drawn = []
    for n in rest:
        out[n], drawn = drawn[: counts[n]], drawn[counts[n]:]
    return out
