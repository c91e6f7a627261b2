"""Finding a job's files and their partners: images, predictions and offsets files matched by relative path (and
by the name endings datasets use, ``_leftImg8bit`` beside ``_gtFine_labelIds``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..data.files import display_name, match_stem, walk_files

__all__ = ["IMAGE_SUFFIXES", "PartnerIndex", "find_images"]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def count_files(folder: Path, endings: str | tuple[str, ...]) -> int:
    """How many files a folder job will see (for its progress bar): the job's own walk (:func:`scan_folder`) with the
    file names that end in ``endings`` (any case)."""
    if not folder.is_dir():
        return 0
    return len(scan_folder(folder, lambda path: path.name.lower().endswith(endings))[0])


def index_files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """The files under ``folder`` (recursively, hidden ones skipped) whose suffix is one of ``suffixes`` (any
    case), by :func:`match_stem`.

    Raises:
        ValueError: two files share a key (``a.png`` and ``sub/a.jpg``): which one is meant cannot be told.
    """
    index: dict[str, Path] = {}
    for path in _with_suffix(walk_files(Path(folder))[0], suffixes):
        key = match_stem(path.name)
        if key in index:
            raise ValueError(
                f"{folder}: {display_name(str(index[key].relative_to(folder)))} and "
                f"{display_name(str(path.relative_to(folder)))} share the name {display_name(key)!r}; keep one"
            )
        index[key] = path
    return index


def find_images(folder: Path) -> dict[str, Path]:
    """Index the images under ``folder`` by :func:`match_stem`."""
    return index_files(folder, IMAGE_SUFFIXES)


def _with_suffix(paths: Iterable[Path], suffixes: Sequence[str]) -> list[Path]:
    wanted = {s.lower() for s in suffixes}
    return [p for p in paths if p.suffix.lower() in wanted]


class PartnerIndex:
    """The files under a folder that belong to the items of another folder (an image or offsets file per
    prediction, a prediction per ground-truth map), matched by relative path.

    An item at ``seq1/0001.png`` takes ``seq1/0001.*`` (dataset suffixes such as ``_leftImg8bit`` aside,
    :func:`match_stem`). Where the two folders are laid out differently (predictions in one folder, images in
    city subfolders), an item takes the only file of its name anywhere, and only when no other item shares that
    name; anything else is an error naming the candidates, never a guess.

    Args:
        folder: the partners' folder (searched recursively, linked subfolders followed once).
        suffixes: the partners' file suffixes, in any case.
        what: what the partners are, for messages (``'images'``, ``'offsets files'``).
        item_names: the file names of all the items, to tell which names are unique among them.
    """

    def __init__(self, folder: Path, suffixes: Sequence[str], what: str, item_names: Iterable[str] = ()) -> None:
        self.folder, self.what = Path(folder), what
        self.by_place: dict[tuple[str, str], list[Path]] = {}
        self.by_key: dict[str, list[Path]] = {}
        self.files = _with_suffix(walk_files(self.folder)[0], suffixes)
        for path in self.files:
            key = match_stem(path.name)
            self.by_place.setdefault((path.parent.relative_to(self.folder).as_posix(), key), []).append(path)
            self.by_key.setdefault(key, []).append(path)
        self.item_keys = Counter(match_stem(name) for name in item_names)

    def find(self, relative: Path) -> Path:
        """The partner of the item at ``relative`` (its path inside its own folder)."""
        relative = Path(relative)
        key = match_stem(relative.name)
        here = self.by_place.get((relative.parent.as_posix(), key), [])
        if len(here) == 1:
            return here[0]
        anywhere = self.by_key.get(key, [])
        if not here and len(anywhere) == 1 and self.item_keys[key] <= 1:
            return anywhere[0]
        if not anywhere:
            raise FileNotFoundError(f"no {self.what} named {display_name(key)}.* under {self.folder}")
        candidates = here or anywhere
        shown = ", ".join(display_name(str(p.relative_to(self.folder))) for p in candidates[:3])
        raise ValueError(
            f"{display_name(str(relative))}: which of the {self.what} {shown} belongs to it cannot be told; "
            "lay out both folders alike (the same subfolders) and keep one file per name"
        )


def scan_folder(folder: Path, wanted: Callable[[Path], bool]) -> tuple[list[Path], list[tuple[str, str]]]:
    """One walk of ``folder``: the visible files ``wanted`` accepts (sorted), and the entries it accepts that
    are not readable files (broken links, special files), plus linked folders that are not read twice."""
    files, problems = walk_files(Path(folder))
    kept = [p for p in files if wanted(p)]
    bad = [(name, reason) for name, reason in problems if wanted(Path(name)) or "links to a folder" in reason]
    return kept, bad


def require_folder(path: Path | None, what: str) -> None:
    """Refuse a missing input folder up front, naming it (a typo must not look like an empty job)."""
    if path is not None and not Path(path).is_dir():
        raise FileNotFoundError(f"{what}: no such folder {path}")
