"""Checking and storing uploaded model packages.

An upload is one of:

* a bare ``.onnx`` file;
* a ``.zip`` archive;
* a ``.tar.gz`` / ``.tgz`` archive,

where an archive holds ``modelbay.yaml`` plus the model's files, either at the
archive root or with every member under one single top-level folder (both are
accepted and normalised to the root).

:func:`check_upload` streams an upload to a private temporary directory,
checks everything (size, format, every archive member, the manifest and that
the framework's model is loadable *without running user code*) and returns a
:class:`CheckedPackage`.  :func:`store_package` then moves it, atomically and
content-addressed, under the artifact root; :func:`discard` drops it.  Any
refusal raises :class:`PackageError` and leaves nothing behind, a full disk
(507) included.
"""

from __future__ import annotations

import ast
import errno
import gzip
import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from modelbay.core.errors import is_disk_full
from runtime.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest

__all__ = [
    "MAX_MEMBERS",
    "CheckedPackage",
    "PackageError",
    "check_upload",
    "discard",
    "store_package",
    "unpacked_path",
]

#: Most members (files and folders) an archive may hold.
MAX_MEMBERS = 10_000
#: Module prefixes whose types a skops file may use beyond skops' own trusted list.
TRUSTED_SKOPS_PREFIXES = ("sklearn.", "numpy.", "scipy.")

_CHUNK = 1024 * 1024
_WORK_PREFIX = "modelbay-upload-"
_STAGING_PREFIX = ".staging-"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_IGNORED_TOP_LEVEL = "__MACOSX"  # resource forks added by macOS' "Compress"
_ERROR_CODES = {400: "invalid_request", 413: "payload_too_large", 507: "insufficient_storage"}
_KIND_LABELS = {"onnx": "an ONNX model", "zip": "a zip archive", "tar.gz": "a gzipped tar archive"}
# Room for tar headers, padding and PAX records on top of the members' data.
_TAR_OVERHEAD_PER_MEMBER = 2048
_TAR_OVERHEAD_FIXED = 64 * 1024


class PackageError(Exception):
    """An upload that cannot be accepted.

    ``status`` is 400 (``code`` "invalid_request"), 413 (``code``
    "payload_too_large") or 507 (``code`` "insufficient_storage": the disk is full,
    not the upload's fault); ``detail`` is a message for a person, e.g.
    ``"modelbay.yaml: framework: must be one of onnx, sklearn, python"``.
    """

    def __init__(self, detail: str, *, status: int = 400) -> None:
        if status not in _ERROR_CODES:
            raise ValueError(f"unsupported status {status}")
        super().__init__(detail)
        self.status: int = status
        self.code: str = _ERROR_CODES[status]
        self.detail: str = detail


@dataclass(frozen=True)
class CheckedPackage:
    """An upload that passed every check and waits in temporary storage."""

    sha256: str  # of the uploaded bytes
    size: int  # bytes uploaded
    filename: str  # original name, sanitised (basename only)
    framework: str
    manifest: dict  # Manifest.to_dict()
    path: Path  # temp file holding the upload (deleted by store/discard)
    unpacked_dir: Path  # temp dir holding the normalised unpacked package


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def check_upload(
    upload,
    *,
    max_bytes: int,
    max_unpacked_bytes: int,
    tmp_dir: Path | None = None,
) -> CheckedPackage:
    """Check an upload completely and keep it in temporary storage.

    ``upload`` is a Django ``UploadedFile`` or any file-like object with a
    ``.name`` and ``.chunks()`` or ``.read()``.  Raises :class:`PackageError`
    on any problem, in which case nothing is left on disk.
    """
    filename = sanitise_filename(getattr(upload, "name", None))
    _refuse_declared_oversize(upload, max_bytes=max_bytes)
    with _disk_full_refused():
        if tmp_dir is not None:
            Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=_WORK_PREFIX, dir=tmp_dir))
        try:
            return _check_in(
                work, upload, filename=filename, max_bytes=max_bytes, max_unpacked_bytes=max_unpacked_bytes
            )
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise


def store_package(checked: CheckedPackage, *, artifact_root: Path) -> Path:
    """Store a checked package under ``artifact_root/<sha256>/`` and return its unpacked dir.

    The directory holds the original upload as ``artifact`` and the normalised
    package as ``unpacked/``.  It is assembled in a staging dir inside
    ``artifact_root`` and renamed into place, so it appears complete or not at
    all.  Storing the same upload twice keeps the first copy.  The temporary
    files of ``checked`` are removed in every case.
    """
    artifact_root = Path(artifact_root)
    final = artifact_root / checked.sha256
    try:
        if not final.exists():
            with _disk_full_refused():
                _move_into_place(checked, artifact_root=artifact_root, final=final)
        else:
            os.utime(final)  # in use again: prune_storage leaves what changed lately alone
    finally:
        discard(checked)
    return final / "unpacked"


def discard(checked: CheckedPackage) -> None:
    """Remove the temporary files of a checked package (idempotent)."""
    shutil.rmtree(checked.unpacked_dir, ignore_errors=True)
    checked.path.unlink(missing_ok=True)
    work = checked.path.parent
    if work == checked.unpacked_dir.parent and work.name.startswith(_WORK_PREFIX):
        shutil.rmtree(work, ignore_errors=True)


def prune_storage(*, artifact_root: Path, tmp_dir: Path, keep: set[str], older_than_s: float) -> list[Path]:
    """Remove what no model version refers to and nothing writes any more: artifact dirs
    whose sha256 is not in ``keep`` (their models were deleted), staging dirs and uploads left
    by a process that died mid-way. Only what was last changed ``older_than_s`` ago, so that
    an upload being stored (its row not committed yet) is never touched. The paths removed."""
    cutoff = time.time() - older_than_s
    candidates = []
    if Path(artifact_root).is_dir():
        for entry in Path(artifact_root).iterdir():
            stored = len(entry.name) == 64 and entry.name not in keep
            if stored or entry.name.startswith(_STAGING_PREFIX):
                candidates.append(entry)
    if Path(tmp_dir).is_dir():
        candidates.extend(Path(tmp_dir).iterdir())
    removed = []
    for path in candidates:
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def unpacked_path(sha256: str, *, artifact_root: Path) -> Path:
    """Return where the unpacked package of ``sha256`` is (or would be) stored.

    Raises ``ValueError`` if ``sha256`` is not 64 lowercase hex digits, so a
    caller can never be led outside ``artifact_root``.
    """
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        raise ValueError("sha256 must be 64 lowercase hexadecimal digits")
    return Path(artifact_root) / sha256 / "unpacked"


def sanitise_filename(name: str | None) -> str:
    """Reduce an uploaded file name to a safe basename ("upload" if nothing is left)."""
    base = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME_CHARS.sub("_", base).lstrip(".")
    if len(base) > 200:
        suffix = next((s for s in (".tar.gz", ".tgz", ".zip", ".onnx") if base.lower().endswith(s)), "")
        base = base[: 200 - len(suffix)] + base[len(base) - len(suffix) :]
    return base or "upload"


# --------------------------------------------------------------------------
# Receiving the upload
# --------------------------------------------------------------------------


def _check_in(work: Path, upload, *, filename: str, max_bytes: int, max_unpacked_bytes: int) -> CheckedPackage:
    """Stream, identify, unpack and check an upload inside the work dir ``work``."""
    path = work / "upload"
    sha256, size = _stream_to_file(upload, path, max_bytes=max_bytes)
    if size == 0:
        raise PackageError("the uploaded file is empty")
    kind = _detect_kind(path, filename)
    unpacked = work / "unpacked"
    unpacked.mkdir()
    if kind == "onnx":
        _place_bare_onnx(path, unpacked, filename=filename)
    else:
        _unpack_archive(path, unpacked, kind=kind, max_unpacked_bytes=max_unpacked_bytes)
    manifest = _read_manifest(unpacked, from_archive=kind != "onnx")
    _check_framework(manifest, unpacked)
    return CheckedPackage(
        sha256=sha256,
        size=size,
        filename=filename,
        framework=manifest.framework,
        manifest=manifest.to_dict(),
        path=path,
        unpacked_dir=unpacked,
    )


def _refuse_declared_oversize(upload, *, max_bytes: int) -> None:
    """Refuse early when the upload already says it is too large (Django sets ``.size``)."""
    declared = getattr(upload, "size", None)
    if isinstance(declared, int) and declared > max_bytes:
        raise _too_large_upload(max_bytes)


def _stream_to_file(upload, path: Path, *, max_bytes: int) -> tuple[str, int]:
    """Copy the upload to ``path`` and return (sha256, size); 413 past ``max_bytes``."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "xb") as out:
        for chunk in _iter_chunks(upload):
            size += len(chunk)
            if size > max_bytes:
                raise _too_large_upload(max_bytes)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def _iter_chunks(upload) -> Iterator[bytes]:
    """Yield the upload's bytes in chunks, via ``.chunks()`` when it has one."""
    if hasattr(upload, "chunks"):
        yield from upload.chunks()
        return
    while chunk := upload.read(_CHUNK):
        yield chunk


@contextmanager
def _disk_full_refused() -> Iterator[None]:
    """A write that finds the disk (or a quota) full: 507, in words without a server path."""
    try:
        yield
    except OSError as error:
        if is_disk_full(error):
            raise PackageError("the server has no room to store this upload; nothing was kept", status=507) from error
        raise


def _too_large_upload(max_bytes: int) -> PackageError:
    return PackageError(f"the upload is larger than the limit of {max_bytes} bytes", status=413)


def _kind_from_name(filename: str) -> str | None:
    """Return "onnx", "zip" or "tar.gz" from the file name's extension, else None."""
    lower = filename.lower()
    for suffix, kind in ((".onnx", "onnx"), (".zip", "zip"), (".tar.gz", "tar.gz"), (".tgz", "tar.gz")):
        if lower.endswith(suffix):
            return kind
    return None


def _kind_from_magic(path: Path) -> str | None:
    """Return "zip" or "tar.gz" from the file's first bytes, else None."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_GZIP_MAGIC):
        return "tar.gz"
    return None


def _detect_kind(path: Path, filename: str) -> str:
    """Decide the upload's kind from its name AND its content; they must agree.

    ONNX has no magic number: a ``.onnx`` upload is accepted when it is not an
    archive and later parses as an ONNX model.
    """
    by_name, by_magic = _kind_from_name(filename), _kind_from_magic(path)
    if by_name is None and by_magic is None:
        raise PackageError(
            f"unknown package format for {filename!r}: upload a .onnx model or a "
            ".zip, .tar.gz or .tgz archive holding modelbay.yaml"
        )
    if by_name is None:
        return by_magic
    found = by_magic or "onnx"
    if by_name != found:
        raise PackageError(
            f"the content of {filename!r} does not match its name: expected "
            f"{_KIND_LABELS[by_name]}, found {_KIND_LABELS[found]}"
        )
    return by_name


def _place_bare_onnx(path: Path, unpacked: Path, *, filename: str) -> None:
    """Copy a bare ONNX upload into the unpacked dir under a safe ``.onnx`` name."""
    stem = filename[: -len(".onnx")] if filename.lower().endswith(".onnx") else ""
    shutil.copyfile(path, unpacked / (f"{stem}.onnx" if stem else "model.onnx"))


# --------------------------------------------------------------------------
# Archives: every member is checked before anything is extracted
# --------------------------------------------------------------------------


@dataclass
class _Member:
    """One archive member, independent of the archive format."""

    name: str  # as written in the archive
    parts: tuple[str, ...]  # safe path components
    is_dir: bool
    size: int  # declared uncompressed size
    open: Callable[[], BinaryIO] = field(repr=False)


@dataclass
class _Budget:
    """Bytes that may still be written while extracting."""

    limit: int
    remaining: int

    def spend(self, n: int) -> None:
        self.remaining -= n
        if self.remaining < 0:
            raise _too_large_unpacked(self.limit)


def _unpack_archive(path: Path, dest: Path, *, kind: str, max_unpacked_bytes: int) -> None:
    """Check every member of the archive at ``path``, then extract it normalised into ``dest``."""
    opener = _ZipMembers if kind == "zip" else _TarMembers
    try:
        with opener(path, max_unpacked_bytes=max_unpacked_bytes) as members:
            _check_declared_size(members, max_unpacked_bytes=max_unpacked_bytes)
            strip = _manifest_prefix_length(members)
            budget = _Budget(limit=max_unpacked_bytes, remaining=max_unpacked_bytes)
            for member in members:
                _extract_member(member, dest, strip=strip, budget=budget)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        tarfile.TarError,
        gzip.BadGzipFile,
        EOFError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise PackageError(f"corrupt or unsupported {kind} archive: {exc}") from exc


class _ZipMembers:
    """Context manager giving the checked members of a zip archive."""

    def __init__(self, path: Path, *, max_unpacked_bytes: int) -> None:
        self._path = path

    def __enter__(self) -> list[_Member]:
        self._zip = zipfile.ZipFile(self._path)
        try:
            infos = self._zip.infolist()
            _check_member_count(len(infos))
            return _without_ignored([_zip_member(self._zip, info) for info in infos])
        except BaseException:
            self._zip.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self._zip.close()


def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    """Check one zip entry (name, type, encryption) and describe it."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise PackageError(f"archive member {info.filename!r} is a symbolic link, which is not allowed")
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise PackageError(f"archive member {info.filename!r} is not a regular file or folder")
    if info.flag_bits & 0x1:
        raise PackageError(f"archive member {info.filename!r} is encrypted, which is not supported")
    is_dir = info.is_dir() or stat.S_ISDIR(mode)
    return _Member(
        name=info.filename,
        parts=_safe_parts(info.filename, is_dir=is_dir),
        is_dir=is_dir,
        size=0 if is_dir else info.file_size,
        open=lambda: archive.open(info),
    )


class _TarMembers:
    """Context manager giving the checked members of a gzipped tar archive.

    The decompressed stream is capped, so even listing the members of a gzip
    bomb stops early instead of decompressing everything.
    """

    def __init__(self, path: Path, *, max_unpacked_bytes: int) -> None:
        self._path = path
        self._tar: tarfile.TarFile | None = None
        self._limit = max_unpacked_bytes + _TAR_OVERHEAD_FIXED + _TAR_OVERHEAD_PER_MEMBER * MAX_MEMBERS
        self._cap = max_unpacked_bytes

    def __enter__(self) -> list[_Member]:
        self._gzip = _CappedStream(gzip.GzipFile(self._path, "rb"), limit=self._limit, cap=self._cap)
        try:
            self._tar = tarfile.open(fileobj=self._gzip, mode="r:")
            return _without_ignored(list(self._checked(self._tar)))
        except BaseException:
            self.__exit__()
            raise

    def _checked(self, tar: tarfile.TarFile) -> Iterator[_Member]:
        for count, info in enumerate(tar, start=1):
            _check_member_count(count)
            yield _tar_member(tar, info)

    def __exit__(self, *exc_info) -> None:
        if self._tar is not None:
            self._tar.close()
        self._gzip.close()


def _tar_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> _Member:
    """Check one tar entry (name and type: only files and folders) and describe it."""
    if info.issym() or info.islnk():
        kind = "symbolic link" if info.issym() else "hard link"
        raise PackageError(f"archive member {info.name!r} is a {kind}, which is not allowed")
    if info.ischr() or info.isblk() or info.isfifo():
        raise PackageError(f"archive member {info.name!r} is a device or fifo, which is not allowed")
    if not (info.isreg() or info.isdir()):
        raise PackageError(f"archive member {info.name!r} is not a regular file or folder")
    return _Member(
        name=info.name,
        parts=_safe_parts(info.name, is_dir=info.isdir()),
        is_dir=info.isdir(),
        size=0 if info.isdir() else info.size,
        open=lambda: tar.extractfile(info),
    )


class _CappedStream:
    """A read-only seekable stream that refuses to go past ``limit`` bytes (413)."""

    def __init__(self, raw: BinaryIO, *, limit: int, cap: int) -> None:
        self._raw, self._limit, self._cap = raw, limit, cap

    def read(self, size: int = -1) -> bytes:
        room = self._limit - self._raw.tell() + 1
        data = self._raw.read(room if size is None or size < 0 else min(size, room))
        self._check(self._raw.tell())
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self._raw.tell() + offset if whence == 1 else None
        if target is not None:
            self._check(target)
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()

    def _check(self, position: int) -> None:
        if position > self._limit:
            raise _too_large_unpacked(self._cap)


def _safe_parts(name: str, *, is_dir: bool) -> tuple[str, ...]:
    """Split a member name into path components, refusing anything that could escape."""
    if "\x00" in name or "\\" in name:
        raise PackageError(f"archive member {name!r} has a backslash or NUL byte in its name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise PackageError(f"archive member {name!r} has an absolute path, which is not allowed")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise PackageError(f"archive member {name!r} has a '..' component, which is not allowed")
    if not parts and not is_dir:
        raise PackageError(f"archive member {name!r} has no file name")
    return parts


def _without_ignored(members: list[_Member]) -> list[_Member]:
    """Drop macOS resource-fork members (``__MACOSX/...``) once they have been checked."""
    return [m for m in members if not (m.parts and m.parts[0] == _IGNORED_TOP_LEVEL)]


def _check_member_count(count: int) -> None:
    if count > MAX_MEMBERS:
        raise PackageError(f"the archive has more than {MAX_MEMBERS} members")


def _check_declared_size(members: list[_Member], *, max_unpacked_bytes: int) -> None:
    """Refuse duplicate members and archives whose declared content is over the limit."""
    seen: set[tuple[str, ...]] = set()
    for member in members:
        if member.parts in seen and not member.is_dir:
            raise PackageError(f"archive member {member.name!r} appears more than once")
        seen.add(member.parts)
    if sum(m.size for m in members) > max_unpacked_bytes:
        raise _too_large_unpacked(max_unpacked_bytes)


def _too_large_unpacked(limit: int) -> PackageError:
    return PackageError(f"the package unpacks to more than the limit of {limit} bytes", status=413)


def _manifest_prefix_length(members: list[_Member]) -> int:
    """Return 0 if the manifest is at the root, 1 if all is under one folder holding it."""
    files = {m.parts for m in members if not m.is_dir}
    if (MANIFEST_NAME,) in files:
        return 0
    tops = {m.parts[0] for m in members if m.parts}
    if len(tops) == 1 and (tops.pop(), MANIFEST_NAME) in files:
        return 1
    raise PackageError(f"{MANIFEST_NAME}: missing; put it at the archive root or inside a single top-level folder")


def _extract_member(member: _Member, dest: Path, *, strip: int, budget: _Budget) -> None:
    """Write one member under ``dest`` (its first ``strip`` components removed)."""
    parts = member.parts[strip:]
    if not parts:
        return
    target = dest.joinpath(*parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise PackageError(f"archive member {member.name!r} points outside the package")
    try:
        if member.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with member.open() as src, open(target, "xb") as out:
            _copy_capped(src, out, budget=budget)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise PackageError(f"archive member {member.name!r} clashes with another member") from exc


def _copy_capped(src: BinaryIO, out: BinaryIO, *, budget: _Budget) -> None:
    """Copy ``src`` to ``out`` counting the bytes really written against ``budget``."""
    while chunk := src.read(_CHUNK):
        budget.spend(len(chunk))
        out.write(chunk)


# --------------------------------------------------------------------------
# Manifest and framework checks (no user code is ever imported or run)
# --------------------------------------------------------------------------


def _read_manifest(unpacked: Path, *, from_archive: bool) -> Manifest:
    """Load the package's manifest, naming the manifest file in every error."""
    if from_archive and not (unpacked / MANIFEST_NAME).is_file():
        raise PackageError(f"{MANIFEST_NAME}: missing")
    try:
        return load_manifest(unpacked)
    except ManifestError as exc:
        detail = str(exc) if exc.field == MANIFEST_NAME else f"{MANIFEST_NAME}: {exc}"
        raise PackageError(detail) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PackageError(f"{MANIFEST_NAME}: cannot be read: {exc}") from exc


def _check_framework(manifest: Manifest, unpacked: Path) -> None:
    """Check that the package's model can be loaded by its framework."""
    checks = {"onnx": _check_onnx, "sklearn": _check_sklearn, "python": _check_python}
    check = checks.get(manifest.framework)
    if check is None:
        raise PackageError(f"{MANIFEST_NAME}: framework: {manifest.framework!r} is not supported")
    check(manifest, unpacked)


def _package_file(unpacked: Path, relative: str | None, *, what: str) -> Path:
    """Return the existing regular file ``relative`` inside the package, else 400."""
    if not relative:
        raise PackageError(f"{MANIFEST_NAME}: model: is required for this framework")
    path = unpacked / relative
    if not path.resolve().is_relative_to(unpacked.resolve()):
        raise PackageError(f"{MANIFEST_NAME}: model: {relative!r} points outside the package")
    if not path.is_file():
        raise PackageError(f"{what} {relative!r} is missing from the package")
    return path


def _check_onnx(manifest: Manifest, unpacked: Path) -> None:
    """Parse and check the ONNX model, which must have at least one graph input."""
    import onnx

    path = _package_file(unpacked, manifest.model_file, what="model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        reason = str(exc).replace(str(unpacked.resolve()), "<package>").replace(str(unpacked), "<package>")
        raise PackageError(f"not a valid ONNX model: {reason}") from exc
    initializers = {t.name for t in model.graph.initializer}
    if not [i for i in model.graph.input if i.name not in initializers]:
        raise PackageError("not a valid ONNX model: the graph has no inputs")


def _check_sklearn(manifest: Manifest, unpacked: Path) -> None:
    """Check the skops file is a valid skops archive using only trusted types."""
    path = _package_file(unpacked, manifest.model_file, what="model file")
    _check_skops_zip(path, manifest.model_file)
    untrusted = _untrusted_skops_types(path, manifest.model_file)
    bad = sorted(t for t in untrusted if not t.startswith(TRUSTED_SKOPS_PREFIXES))
    if bad:
        raise PackageError(
            f"skops file {manifest.model_file!r} uses untrusted types: "
            f"{', '.join(bad)} (only sklearn, numpy and scipy types are allowed)"
        )


def _check_skops_zip(path: Path, relative: str) -> None:
    """A skops file is a zip archive with a ``schema.json`` and intact contents."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "schema.json" not in archive.namelist():
                raise PackageError(f"{relative!r} is not a valid skops file: schema.json is missing")
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
        raise PackageError(f"{relative!r} is not a valid skops file: {exc}") from exc
    if broken is not None:
        raise PackageError(f"{relative!r} is not a valid skops file: {broken!r} is corrupt")


def _untrusted_skops_types(path: Path, relative: str) -> list[str]:
    """List the types skops would not trust by default, without loading the model."""
    import skops.io

    try:
        return list(skops.io.get_untrusted_types(file=path))
    except Exception as exc:  # malformed schema.json and the like
        raise PackageError(f"{relative!r} is not a valid skops file: {exc}") from exc


def _check_python(manifest: Manifest, unpacked: Path) -> None:
    """Statically check the entrypoint ``pkg.module:Class`` (parsed, never imported)."""
    module, _, class_name = (manifest.entrypoint or "").partition(":")
    if not module or not class_name:
        raise PackageError(f"{MANIFEST_NAME}: entrypoint: must look like 'module:Class'")
    source_path, relative = _entrypoint_module(unpacked, module)
    tree = _parse_python(source_path, relative)
    cls = _find_top_level_class(tree, class_name)
    if cls is None:
        raise PackageError(f"entrypoint class {class_name!r} is not defined at the top level of {relative}")
    methods = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    missing = [m for m in ("load", "predict") if m not in methods]
    if missing:
        raise PackageError(
            f"entrypoint class {class_name!r} in {relative} has no method {' or '.join(repr(m) for m in missing)}"
        )


def _entrypoint_module(unpacked: Path, module: str) -> tuple[Path, str]:
    """Find ``a/b.py`` or ``a/b/__init__.py`` for module ``a.b`` inside the package."""
    parts = module.split(".")
    if not all(p.isidentifier() for p in parts):
        raise PackageError(f"{MANIFEST_NAME}: entrypoint: {module!r} is not a valid module name")
    base = "/".join(parts)
    for relative in (f"{base}.py", f"{base}/__init__.py"):
        if (unpacked / relative).is_file():
            return unpacked / relative, relative
    raise PackageError(
        f"entrypoint module {module!r} not found: the package has neither {base}.py nor {base}/__init__.py"
    )


def _parse_python(path: Path, relative: str) -> ast.Module:
    """Parse a module's source with ``ast`` (nothing is executed)."""
    try:
        return ast.parse(path.read_bytes(), filename=relative)
    except (SyntaxError, ValueError) as exc:
        raise PackageError(f"entrypoint module {relative} does not parse: {exc}") from exc


def _find_top_level_class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    """Return the last top-level ``class name`` of the module, if any."""
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    return found[-1] if found else None


def _move_into_place(checked: CheckedPackage, *, artifact_root: Path, final: Path) -> None:
    """Assemble the artifact dir in a staging dir, then rename it to ``final`` atomically."""
    artifact_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=artifact_root))
    try:
        _move(checked.path, staging / "artifact")
        _move(checked.unpacked_dir, staging / "unpacked")
        try:
            staging.rename(final)
        except OSError:
            if not final.is_dir():  # not a concurrent store of the same upload
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; across file systems, copy it file by file, then
    remove it. Unlike ``shutil.move``, whose copy of a folder gathers its failures into one
    ``shutil.Error``, a failed copy raises its own ``OSError``: a full disk is told apart."""
    try:
        os.rename(source, target)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    if source.is_dir():
        target.mkdir()
        for child in source.iterdir():
            _move(child, target / child.name)
        source.rmdir()
    else:
        shutil.copyfile(source, target)
        source.unlink()
