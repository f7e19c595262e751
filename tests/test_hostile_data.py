"""Hostile and broken data files: every one is refused at load with a message naming the file
(and line or key), never run, never silently used."""

from __future__ import annotations

import os
import pickle
import stat

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import loadmat, savemat
from test_data import write_folder, write_xlsa17

from zeromamba import data as zd
from zeromamba.data import images, shapes, validate
from zeromamba.data.images import decode_image

# ----------------------------------------------------------------------------- pickles (item 1)


class _Exploit:
    """Unpickling this runs a command (here: creating a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cub(tmp_path):
    data_root, image_root, *_ = write_xlsa17(str(tmp_path))
    return data_root, image_root, os.path.join(data_root, "CUB_attribute.pkl")


def _write_wv(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_a_pickle_that_runs_code_is_refused_and_never_run(tmp_path):
    data_root, image_root, pkl = _cub(tmp_path)
    marker = tmp_path / "pwned"
    _write_wv(pkl, _Exploit(str(marker)))
    with pytest.raises(zd.DataError, match=r"CUB_attribute.pkl.*os\.system|posix\.system"):
        zd.load("CUB", data_root=data_root, image_root=image_root)
    assert not marker.exists()
    # with the explicit trust flag the user takes responsibility (and the shape check follows)
    with pytest.raises(zd.DataError, match="CUB_attribute.pkl"):
        zd.load("CUB", data_root=data_root, image_root=image_root, trust_pickle=True)
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickled_numpy_arrays_and_npy_load(tmp_path, protocol):
    data_root, image_root, pkl = _cub(tmp_path)
    wv = np.random.default_rng(0).standard_normal((5, 7))
    with open(pkl, "wb") as f:
        pickle.dump(wv, f, protocol=protocol)
    d = zd.load("CUB", data_root=data_root, image_root=image_root, image_size=8)
    torch.testing.assert_close(d.word_vectors, torch.from_numpy(wv).float())
    np.save(pkl[:-4] + ".npy", wv * 2)  # .npy is preferred
    d = zd.load("CUB", data_root=data_root, image_root=image_root, image_size=8)
    torch.testing.assert_close(d.word_vectors, torch.from_numpy(wv * 2).float())


@pytest.mark.parametrize(
    "content, match",
    [
        (b"this is not a pickle", "not a readable word vectors file"),
        (pickle.dumps(np.arange(5.0))[:-9], "not a readable word vectors file"),  # truncated
        (pickle.dumps({"a": 1}), "must be a numpy array"),
        (pickle.dumps(np.array([["a", "b"]], dtype=object)), "2-D numeric array"),
    ],
    ids=["not-a-pickle", "truncated", "dict", "object-array"],
)
def test_bad_word_vector_pickles_are_named(tmp_path, content, match):
    data_root, image_root, pkl = _cub(tmp_path)
    with open(pkl, "wb") as f:
        f.write(content)
    with pytest.raises(zd.DataError, match=f"{pkl}.*{match}"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


def test_object_npy_is_refused_with_the_file_named(tmp_path):
    write_folder(str(tmp_path))
    np.save(tmp_path / "word_vectors.npy", np.array([[1, "x"]] * 3, dtype=object))
    with pytest.raises(zd.DataError, match="word_vectors.npy: word vectors must be a numeric"):
        zd.load(str(tmp_path))


# ----------------------------------------------------------------------------- tables (item 6)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "1e30"])
def test_non_finite_or_huge_attribute_csv_is_refused(tmp_path, bad):
    write_folder(str(tmp_path))
    text = (tmp_path / "attributes.csv").read_text().replace("dog,1,1,0", f"dog,1,{bad},0")
    (tmp_path / "attributes.csv").write_text(text)
    with pytest.raises(zd.DataError, match=r"attributes.csv: attribute table .*'dog'.*column 1"):
        zd.load(str(tmp_path))


def test_non_finite_attribute_npy_and_word_vectors_are_refused(tmp_path):
    write_folder(str(tmp_path))
    os.remove(tmp_path / "attributes.csv")
    att = np.eye(5, 3) + 0.5
    att[2, 1] = np.nan
    np.save(tmp_path / "attributes.npy", att)
    with pytest.raises(zd.DataError, match=r"attributes.npy: .* nan at row 2 \('fox'\)"):
        zd.load(str(tmp_path))
    att[2, 1] = 0.5
    np.save(tmp_path / "attributes.npy", att)
    wv = np.ones((3, 4))
    wv[1, 3] = np.inf
    np.save(tmp_path / "word_vectors.npy", wv)
    with pytest.raises(zd.DataError, match="word_vectors.npy: word vectors .* inf"):
        zd.load(str(tmp_path))


def test_non_finite_xlsa17_att_and_word_vectors_are_refused(tmp_path):
    data_root, image_root, pkl = _cub(tmp_path)
    att_path = os.path.join(data_root, "CUB", "att_splits.mat")
    mat = loadmat(att_path)
    mat["att"][1, 2] = np.inf
    savemat(att_path, {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(zd.DataError, match=r"att_splits.mat: attribute table 'att'.* inf"):
        zd.load("CUB", data_root=data_root, image_root=image_root)
    mat["att"][1, 2] = 0.5
    savemat(att_path, {k: v for k, v in mat.items() if not k.startswith("__")})
    wv = np.ones((5, 3))
    wv[0, 0] = np.nan
    _write_wv(pkl, wv)
    with pytest.raises(zd.DataError, match="CUB_attribute.pkl: word vectors .* nan"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


# ----------------------------------------------------------------------------- .mat files (10, 11, 12)


def _set_mat(data_root, **changes):
    att_path = os.path.join(data_root, "CUB", "att_splits.mat")
    mat = {k: v for k, v in loadmat(att_path).items() if not k.startswith("__")}
    mat.update(changes)
    savemat(att_path, mat)
    return att_path


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\x00\x01garbage" * 40, "not a readable MATLAB .mat file"),
        (
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + b" " * 90 + b"\x00\x02IM" + b"\x89HDF",
            "v7.3",
        ),
    ],
)
def test_unreadable_mat_files_are_named(tmp_path, content, match):
    data_root, image_root, _ = _cub(tmp_path)
    path = os.path.join(data_root, "CUB", "att_splits.mat")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(zd.DataError, match=f"{path}: .*{match}"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


def test_truncated_mat_is_named(tmp_path):
    data_root, image_root, _ = _cub(tmp_path)
    path = os.path.join(data_root, "CUB", "res101.mat")
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])
    with pytest.raises(zd.DataError, match=f"{path}: not a readable MATLAB"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


def test_bad_locs_name_the_bad_entry(tmp_path):
    data_root, image_root, _ = _cub(tmp_path)
    tv = loadmat(os.path.join(data_root, "CUB", "att_splits.mat"))["trainval_loc"].copy()
    zero_based = tv - 1
    _set_mat(data_root, trainval_loc=zero_based)
    with pytest.raises(zd.DataError, match=r"trainval_loc\[0\] = 0 is outside 1..18"):
        zd.load("CUB", data_root=data_root, image_root=image_root)
    frac = tv.astype(float)
    frac[3] += 0.5
    _set_mat(data_root, trainval_loc=frac)
    with pytest.raises(zd.DataError, match=r"trainval_loc\[3\] = 5.5 is not a whole number"):
        zd.load("CUB", data_root=data_root, image_root=image_root)
    dup = tv.copy()
    dup[1] = dup[0]
    _set_mat(data_root, trainval_loc=dup)
    with pytest.raises(zd.DataError, match="trainval_loc lists image 1 2 times"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


# ----------------------------------------------------------------------------- paths (item 3)


def _set_list(root, split, lines):
    (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "line",
    ["cat/../../outside/secret.png", "cat/" + "../" * 20 + "etc/passwd", "/etc/passwd"],
)
def test_split_paths_cannot_leave_images(tmp_path, line):
    root = tmp_path / "d"
    root.mkdir()
    write_folder(str(root))
    (tmp_path / "outside").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "outside" / "secret.png")
    lines = (root / "test_seen.txt").read_text().splitlines() + [line]
    _set_list(root, "test_seen", lines)
    with pytest.raises(zd.DataError, match=r"test_seen.txt:4: .* is not a path inside"):
        zd.load(str(root))


def test_symlink_out_of_images_is_refused(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    write_folder(str(root))
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(secret)
    os.symlink(secret, root / "images" / "cat" / "3.png")
    _set_list(root, "test_seen", ["cat/3.png", "dog/2.png", "fox/2.png"])
    with pytest.raises(
        zd.DataError, match=r"test_seen.txt:1: 'cat/3.png' resolves to a file outside"
    ):
        zd.load(str(root))


def test_missing_and_undecodable_images_get_one_message(tmp_path):
    messages = []
    for case in ("missing", "garbage"):
        root = tmp_path / case
        root.mkdir()
        write_folder(str(root))
        target = root / "images" / "dog" / "2.png"
        if case == "missing":
            target.unlink()
        else:
            target.write_bytes(b"not an image at all")
        with pytest.raises(zd.DataError) as info:
            zd.load(str(root))
        messages.append(str(info.value).replace(str(root), "ROOT"))
    assert messages[0] == messages[1]
    assert "ROOT/images/dog/2.png (listed in ROOT/test_seen.txt:2)" in messages[0]


# ----------------------------------------------------------------------------- splits (4, 11)


def test_an_image_in_trainval_and_test_seen_is_refused(tmp_path):
    write_folder(str(tmp_path))
    _set_list(tmp_path, "test_seen", ["cat/0.png", "dog/2.png", "fox/2.png"])
    with pytest.raises(zd.DataError, match="in both trainval.txt and test_seen.txt .*cat/0.png"):
        zd.load(str(tmp_path))


def test_the_same_file_under_another_name_is_the_same_image(tmp_path):
    write_folder(str(tmp_path))
    _set_list(tmp_path, "test_seen", ["cat/./0.png", "dog/2.png", "fox/2.png"])
    with pytest.raises(zd.DataError, match="in both trainval.txt and test_seen.txt"):
        zd.load(str(tmp_path))


def test_duplicate_lines_and_uncovered_trainval_are_refused(tmp_path):
    write_folder(str(tmp_path))
    _set_list(tmp_path, "test_seen", ["cat/2.png", "dog/2.png", "cat/2.png", "fox/2.png"])
    with pytest.raises(zd.DataError, match=r"test_seen.txt:3: 'cat/2.png' is listed twice"):
        zd.load(str(tmp_path))
    _set_list(tmp_path, "test_seen", ["cat/2.png", "dog/2.png", "fox/2.png"])
    _set_list(tmp_path, "train", ["cat/0.png", "cat/1.png", "dog/0.png"])  # dog/1.png dropped
    with pytest.raises(zd.DataError, match="must partition trainval.txt: 0 .* 1 trainval"):
        zd.load(str(tmp_path))


# ----------------------------------------------------------------------------- text files (12)


def test_non_utf8_classes_txt_names_file_and_line(tmp_path):
    write_folder(str(tmp_path))
    (tmp_path / "classes.txt").write_bytes(b"cat\ndog\nf\xf6x\nowl\nyak\n")
    with pytest.raises(zd.DataError, match=r"classes.txt:3: not UTF-8"):
        zd.load(str(tmp_path))


# ----------------------------------------------------------------------------- images (5, 9)


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    grey = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369).astype(np.uint16)  # 0..65535
    Image.fromarray(grey).save(tmp_path / "g16.png")
    img = decode_image(str(tmp_path / "g16.png"))
    assert img.dtype == torch.uint8 and img.shape == (3, 4, 4)
    want = torch.from_numpy(np.rint(grey / 65535 * 255).astype(np.uint8))
    assert torch.equal(img[0], want) and torch.equal(img[2], want)


def test_float_tiff_is_scaled_or_refused(tmp_path):
    f = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(f).save(tmp_path / "f.tif")
    img = decode_image(str(tmp_path / "f.tif"))
    assert torch.equal(img[1], torch.from_numpy(np.rint(f * 255.0).astype(np.uint8)))
    Image.fromarray(f * 300).save(tmp_path / "big.tif")
    with pytest.raises(zd.DataError, match=r"big.tif: a float image must hold finite values"):
        decode_image(str(tmp_path / "big.tif"))


def test_corrupt_and_bomb_images_are_named_at_load(tmp_path, monkeypatch):
    write_folder(str(tmp_path))
    unseen = tmp_path / "images" / "yak" / "1.png"
    unseen.write_bytes(unseen.read_bytes()[:30])  # truncated, valid signature
    with pytest.raises(zd.DataError, match=r"images/yak/1.png \(listed in .*test_unseen.txt:5\)"):
        zd.load(str(tmp_path))
    Image.fromarray(np.zeros((4, 6, 3), dtype=np.uint8)).save(unseen)
    monkeypatch.setattr(images, "MAX_PIXELS", 20)  # the fixture's images have 24 pixels
    with pytest.raises(zd.DataError, match=r"6 x 4 = 24 pixels, more than the limit of 20"):
        zd.load(str(tmp_path))


def test_pillow_decompression_bomb_error_is_named(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    path = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(path)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # Pillow raises above 2x this
    with pytest.raises(zd.DataError, match="bomb.png: larger than the limit"):
        decode_image(str(path))


# ----------------------------------------------------------------------------- builtin (14, 15)


def test_builtin_size_is_bounded_before_rendering(tmp_path):
    with pytest.raises(ValueError, match=r"32 <= image_size <= 224, got 1024 .* MB"):
        zd.load("builtin", image_size=1024, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="positive integer"):
        zd.load("builtin", image_size=0, cache_dir=str(tmp_path))
    assert shapes.N_IMAGES == 1620


def test_builtin_cache_file_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        zd.load("builtin", cache_dir=str(tmp_path))
    finally:
        os.umask(old)
    (cache,) = tmp_path.glob("builtin-*.pt")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o644


def test_check_table_names_row_and_limit():
    with pytest.raises(
        zd.DataError, match=r"t.npy: w has 1 .* 2000000.0 at row 1 \('b'\), column 0"
    ):
        validate.check_table(np.array([[1.0], [2e6]]), "t.npy", "w", rows=["a", "b"])


def test_class_names_in_the_splits_are_those_listed(tmp_path):
    write_folder(str(tmp_path))
    d = zd.load(str(tmp_path), image_size=8)
    assert d.splits["test_seen"].files[0].endswith(os.path.join("images", "cat", "2.png"))
