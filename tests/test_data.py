"""Data loaders (xlsa17 on fixtures written here, the folder format, the built-in task), their
refusals, and the transforms."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from zeromamba import data as zd
from zeromamba.data import shapes
from zeromamba.data.core import pseudo_word_vectors, split_train_val
from zeromamba.data.transforms import (
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    eval_transform,
    train_transform,
)
from zeromamba.data.xlsa17 import local_image_path

# ----------------------------------------------------------------------------- xlsa17 fixtures

CUB_PREFIX = "/BS/Deep_Fragments/work/MSc/CUB_200_2011/CUB_200_2011/images"
N_CLASSES, N_ATT = 6, 5
# Per class: (class name, number of images). Classes 0-3 seen (3 is the val class), 4-5 unseen.
CLASSES = [f"{i + 1:03d}.Bird_{i}" for i in range(N_CLASSES)]


def _cell(strings):
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = s
    return cell


def _column(one_based):
    return np.asarray(one_based, dtype=np.float64).reshape(-1, 1)


def write_xlsa17(root, *, att_classes=N_CLASSES, trainval_extra=(), n_wv=N_ATT):
    """A CUB-like xlsa17 fixture: 3 images per class (8x8 PNGs), classes 0-3 seen with images
    0, 1 in trainval and 2 in test_seen, classes 4-5 unseen. Returns (data_root, image_root, att)."""
    data_root, image_root = os.path.join(root, "xlsa17"), os.path.join(root, "images")
    os.makedirs(os.path.join(data_root, "CUB"), exist_ok=True)
    files, labels = [], []
    for c, name in enumerate(CLASSES):
        for k in range(3):
            rel = f"{name}/{name}_{k}.png"
            files.append(f"{CUB_PREFIX}/{rel}")
            labels.append(c + 1)  # 1-based, as in xlsa17
            path = os.path.join(image_root, "CUB", "CUB_200_2011", "images", rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 40 * c + k, dtype=np.uint8)).save(path)
    savemat(
        os.path.join(data_root, "CUB", "res101.mat"),
        {"image_files": _cell(files), "labels": _column(labels), "features": np.zeros((4, 18))},
    )
    img = np.arange(18).reshape(N_CLASSES, 3)  # 0-based image ids per class
    trainval = list(img[:4, :2].ravel()) + list(trainval_extra)
    # att is (n_attributes, n_classes) with L2-normalised columns; column c = class c.
    raw = np.arange(1, N_ATT * att_classes + 1, dtype=np.float64).reshape(att_classes, N_ATT).T
    att = raw / np.linalg.norm(raw, axis=0, keepdims=True)
    savemat(
        os.path.join(data_root, "CUB", "att_splits.mat"),
        {
            "att": att,
            "original_att": raw * 10,
            "allclasses_names": _cell(CLASSES),
            "trainval_loc": _column(np.array(trainval) + 1),
            "test_seen_loc": _column(img[:4, 2] + 1),
            "test_unseen_loc": _column(img[4:].ravel() + 1),
            "train_loc": _column(img[:3].ravel() + 1),  # all images of the train classes
            "val_loc": _column(img[3] + 1),
        },
    )
    wv = np.random.default_rng(0).standard_normal((n_wv, 300))
    with open(os.path.join(data_root, "CUB_attribute.pkl"), "wb") as f:
        pickle.dump(wv, f)
    return data_root, image_root, att, wv


def test_xlsa17_loader(tmp_path):
    data_root, image_root, att, wv = write_xlsa17(str(tmp_path))
    d = zd.load("cub", data_root=data_root, image_root=image_root, image_size=16)
    assert d.name == "CUB" and d.class_names == CLASSES and d.image_size == 16
    # att (A, C) in the file -> (C, A); its columns were already unit norm
    assert d.attributes.shape == (N_CLASSES, N_ATT)
    torch.testing.assert_close(d.attributes, torch.from_numpy(att.T).float())
    assert d.word_vectors.dtype == torch.float32
    torch.testing.assert_close(d.word_vectors, torch.from_numpy(wv).float())
    # 1-based labels and locations -> 0-based
    assert d.splits["trainval"].labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert d.splits["test_seen"].labels.tolist() == [0, 1, 2, 3]
    assert d.splits["test_unseen"].labels.tolist() == [4, 4, 4, 5, 5, 5]
    assert d.seen.tolist() == [0, 1, 2, 3] and d.unseen.tolist() == [4, 5]
    # val = trainval images of val_loc's classes; train = the rest of trainval (not test_seen)
    assert d.classes("val").tolist() == [3] and d.classes("train").tolist() == [0, 1, 2]
    assert len(d.splits["train"]) == 6 and len(d.splits["val"]) == 2
    # the official path rewriting: drop 6 leading parts, put the rest under image_root/CUB/
    first = d.splits["trainval"].files[0]
    name = CLASSES[0]
    assert first == os.path.join(image_root, "CUB", "CUB_200_2011", "images", name, f"{name}_0.png")
    img, label = d.splits["test_unseen"][4]
    assert img.shape == (3, 16, 16) and img.dtype == torch.float32 and label == 5
    # pixel value 40*5+1 = 201 everywhere, normalised per channel
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(img[:, 0, 0], (201 / 255 - mean) / std)
    # no shipped names: numbered; CUB's attributes.txt beside the images: its names
    assert d.attribute_names[0] == "attribute_000"
    with open(os.path.join(image_root, "CUB", "attributes.txt"), "w") as f:
        f.write("".join(f"{i + 1} has_part::value_{i}\n" for i in range(N_ATT)))
    d = zd.load("cub", data_root=data_root, image_root=image_root, image_size=16)
    assert d.attribute_names == [f"has_part::value_{i}" for i in range(N_ATT)]


def test_xlsa17_path_rewriting_sun_awa2():
    sun = "/BS/Deep_Fragments/work/MSc/data/SUN/images/a/abbey/sun_aaa.jpg"
    awa = "/BS/xian/work/data/Animals_with_Attributes2//JPEGImages/antelope/antelope_10001.jpg"
    assert local_image_path(sun, "SUN", "/d") == "/d/SUN/images/a/abbey/sun_aaa.jpg"
    assert (
        local_image_path(awa, "AWA2", "/d")
        == "/d/AWA2/Animals_with_Attributes2/JPEGImages/antelope/antelope_10001.jpg"
    )


def test_xlsa17_missing_image_is_named(tmp_path):
    data_root, image_root, *_ = write_xlsa17(str(tmp_path))
    gone = os.path.join(
        image_root, "CUB", "CUB_200_2011", "images", CLASSES[5], f"{CLASSES[5]}_2.png"
    )
    os.remove(gone)
    # the same message as for an undecodable file: split lists cannot probe what exists
    with pytest.raises(zd.DataError, match=f"{gone} .*missing, unreadable or not a decodable"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


def test_xlsa17_missing_mat_is_named(tmp_path):
    data_root, image_root, *_ = write_xlsa17(str(tmp_path))
    os.remove(os.path.join(data_root, "CUB", "att_splits.mat"))
    with pytest.raises(FileNotFoundError, match="att_splits.mat"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


def test_xlsa17_refuses_unseen_class_in_training_split(tmp_path):
    data_root, image_root, *_ = write_xlsa17(str(tmp_path), trainval_extra=[15])  # class 5
    with pytest.raises(zd.DataError, match=rf"unseen.*{CLASSES[5]}.*'trainval'"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


def test_xlsa17_refuses_class_count_mismatch(tmp_path):
    data_root, image_root, *_ = write_xlsa17(str(tmp_path), att_classes=N_CLASSES - 1)
    with pytest.raises(zd.DataError, match=r"6 classes .* 'att' has shape \(5, 5\)"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


def test_xlsa17_refuses_word_vector_mismatch(tmp_path):
    data_root, image_root, *_ = write_xlsa17(str(tmp_path), n_wv=N_ATT + 1)
    with pytest.raises(zd.DataError, match="CUB_attribute.pkl: 6 word vectors for 5 attributes"):
        zd.load("CUB", data_root=data_root, image_root=image_root)


# ----------------------------------------------------------------------------- folder format


def write_folder(root, *, with_train_val=True, trainval_extra=(), drop_class_row=False):
    classes = ["cat", "dog", "fox", "owl", "yak"]  # cat, dog, fox seen; owl, yak unseen
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("\n".join(classes) + "\n")
    rows = {"cat": "1,0,1", "dog": "1,1,0", "fox": "0,1,1", "owl": "1,1,1", "yak": "0,0,1"}
    with open(os.path.join(root, "attributes.csv"), "w") as f:
        f.write("class,furry,big,orange\n")
        kept = classes[1:] if drop_class_row else classes
        f.writelines(f"{c},{rows[c]}\n" for c in reversed(kept))  # any row order
    for c in classes:
        os.makedirs(os.path.join(root, "images", c))
        for k in range(3):
            Image.fromarray(np.zeros((4, 6, 3), dtype=np.uint8)).save(
                os.path.join(root, "images", c, f"{k}.png")
            )
    lists = {
        "trainval": [f"{c}/{k}.png" for c in classes[:3] for k in (0, 1)] + list(trainval_extra),
        "test_seen": [f"{c}/2.png" for c in classes[:3]],
        "test_unseen": [f"{c}/{k}.png" for c in classes[3:] for k in range(3)],
    }
    if with_train_val:
        lists["train"] = ["# comment", "cat/0.png", "cat/1.png", "", "dog/0.png", "dog/1.png"]
        lists["val"] = ["fox/0.png", "fox/1.png"]
    for name, lines in lists.items():
        with open(os.path.join(root, f"{name}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return classes


def test_folder_format(tmp_path):
    classes = write_folder(str(tmp_path))
    d = zd.load(str(tmp_path), image_size=8)
    assert d.class_names == classes and d.attribute_names == ["furry", "big", "orange"]
    expected = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1.0]])
    torch.testing.assert_close(d.attributes, torch.nn.functional.normalize(expected, dim=1))
    torch.testing.assert_close(d.word_vectors, pseudo_word_vectors(["furry", "big", "orange"]))
    assert d.seen.tolist() == [0, 1, 2] and d.unseen.tolist() == [3, 4]
    assert d.classes("train").tolist() == [0, 1] and d.classes("val").tolist() == [2]
    img, label = d.splits["test_unseen"][5]
    assert img.shape == (3, 8, 8) and label == 4


def test_folder_without_train_val_splits_seen_classes(tmp_path):
    write_folder(str(tmp_path), with_train_val=False)
    d = zd.load_folder(str(tmp_path))
    train, val = d.classes("train"), d.classes("val")
    assert val.numel() == 1 and train.numel() == 2
    assert sorted(train.tolist() + val.tolist()) == [0, 1, 2]


def test_folder_refusals(tmp_path):
    root = tmp_path / "unseen_leak"
    root.mkdir()
    write_folder(str(root), with_train_val=False, trainval_extra=["owl/9.png"])
    Image.fromarray(np.zeros((4, 6, 3), dtype=np.uint8)).save(root / "images" / "owl" / "9.png")
    with pytest.raises(zd.DataError, match=r"unseen class\(es\) 'owl' appear in .*'trainval'"):
        zd.load(str(root))
    root = tmp_path / "count"
    root.mkdir()
    write_folder(str(root), drop_class_row=True)
    with pytest.raises(zd.DataError, match="4 classes in the attribute table but 5 in classes.txt"):
        zd.load(str(root))
    root = tmp_path / "missing"
    root.mkdir()
    write_folder(str(root))
    os.remove(root / "images" / "dog" / "2.png")
    gone = str(root / "images" / "dog" / "2.png")
    with pytest.raises(zd.DataError, match=f"{gone} .*missing, unreadable or not a decodable"):
        zd.load(str(root))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        zd.load(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="data_root"):
        zd.load("AWA2")


def test_split_train_val_is_class_disjoint_and_seeded():
    labels = torch.arange(10).repeat_interleave(3)
    train, val = split_train_val(labels, seed=3)
    assert not set(labels[train].tolist()) & set(labels[val].tolist())
    assert len(set(labels[val].tolist())) == 2 and len(train) + len(val) == 30
    assert torch.equal(split_train_val(labels, seed=3)[1], val)


def test_pseudo_word_vectors_share_parts():
    v = pseudo_word_vectors(["colour red", "colour blue", "shape square", "colour_red"])
    cos = torch.nn.functional.cosine_similarity
    assert torch.equal(v[0], v[3])  # same word parts, same vector
    assert cos(v[0], v[1], dim=0) > 0.3 > abs(float(cos(v[0], v[2], dim=0)))
    assert v.shape == (4, 300) and torch.equal(
        v, pseudo_word_vectors(["colour red", "colour blue", "shape square", "colour_red"])
    )


# ----------------------------------------------------------------------------- built-in task


@pytest.fixture(scope="module")
def builtin_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def builtin_data(builtin_cache):
    return zd.builtin(seed=0, cache_dir=builtin_cache)


def test_builtin_is_a_zero_shot_task(builtin_data):
    d = builtin_data
    assert d.n_classes >= 20 and d.unseen.numel() >= 5 and d.attributes.shape[1] >= 10
    assert len(d.attribute_names) == d.attributes.shape[1] == d.word_vectors.shape[0]
    binary = d.attributes > 0
    seen_rows, unseen_rows = binary[d.seen], binary[d.unseen]
    for row in unseen_rows:
        assert not (seen_rows == row).all(dim=1).any()  # a new combination ...
        assert seen_rows[:, row].any(dim=0).all()  # ... of values that seen classes show
    train_rows = binary[d.classes("train")]
    for row in binary[d.classes("val")]:
        assert not (train_rows == row).all(dim=1).any() and train_rows[:, row].any(dim=0).all()
    img, label = d.splits["test_unseen"][0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and label in d.unseen.tolist()
    assert len(d.splits["trainval"]) == 60 * d.seen.numel()
    assert len(d.splits["test_seen"]) == 20 * d.seen.numel()
    assert len(d.splits["test_unseen"]) == 30 * d.unseen.numel()


def test_builtin_cache_hit_and_regeneration(builtin_data, builtin_cache, monkeypatch):
    path = os.path.join(builtin_cache, "builtin-v1-seed0-32px.pt")
    assert os.path.isfile(path)

    def no_generation(*args):
        raise AssertionError("regenerated although cached")

    with monkeypatch.context() as m:
        m.setattr(shapes, "generate", no_generation)
        again = zd.builtin(seed=0, cache_dir=builtin_cache)
    assert torch.equal(again.splits["train"].images, builtin_data.splits["train"].images)
    # A corrupt cache file is regenerated, to the same task: generation is deterministic.
    with open(path, "wb") as f:
        f.write(b"not a checkpoint")
    fresh = zd.builtin(seed=0, cache_dir=builtin_cache)
    for split in zd.SPLITS:
        assert torch.equal(fresh.splits[split].images, builtin_data.splits[split].images)
        assert torch.equal(fresh.splits[split].labels, builtin_data.splits[split].labels)
    assert fresh.class_names == builtin_data.class_names
    torch.testing.assert_close(fresh.word_vectors, builtin_data.word_vectors, rtol=0, atol=0)
    # Another seed draws other classes.
    draw = shapes._draw_classes
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(draw(np.random.default_rng([0, 0])), draw(np.random.default_rng([1, 0])))
    )


# ----------------------------------------------------------------------------- transforms


def test_transforms():
    img = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4).expand(3, 2, 3, 4)[:, 0]
    flip = RandomHorizontalFlip(p=1.0)
    assert torch.equal(flip(img), img.flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(img), img)
    flat = torch.full((3, 5, 7), 0.5)
    assert torch.allclose(Resize(4)(flat), torch.full((3, 4, 4), 0.5))
    out = Normalize(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))(flat)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 1.0, 0.5]))
    x = eval_transform(6)(torch.full((3, 10, 12), 255, dtype=torch.uint8))
    assert x.shape == (3, 6, 6) and x.dtype == torch.float32
    crop = RandomResizedCrop(5, scale=(0.3, 0.6), generator=torch.Generator().manual_seed(0))
    assert crop(torch.rand(3, 20, 20)).shape == (3, 5, 5)
    # seeded pipelines repeat exactly; over many draws both flip outcomes occur
    src = torch.randint(0, 256, (3, 9, 9), dtype=torch.uint8)
    runs = []
    for _ in range(2):
        t = train_transform(8, crop_scale=(0.5, 1.0), generator=torch.Generator().manual_seed(1))
        runs.append(torch.stack([t(src) for _ in range(6)]))
    assert torch.equal(runs[0], runs[1])
    g = torch.Generator().manual_seed(0)
    flips = {bool(torch.equal(RandomHorizontalFlip(generator=g)(src), src)) for _ in range(20)}
    assert flips == {True, False}


def test_random_grayscale():
    # p = 1: every channel is the ITU-R 601 luminance; a grey pixel stays itself
    img = torch.rand(3, 4, 5)
    grey = RandomGrayscale(1.0)(img)
    lum = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    for c in range(3):
        torch.testing.assert_close(grey[c], lum)
    flat = torch.full((3, 2, 2), 0.4)
    torch.testing.assert_close(RandomGrayscale(1.0)(flat), flat)
    assert torch.equal(RandomGrayscale(0.0)(img), img)
    # over many seeded draws at p = 0.5 both outcomes occur, and the input is never modified
    g = torch.Generator().manual_seed(0)
    before = img.clone()
    outcomes = {bool(torch.equal(RandomGrayscale(0.5, generator=g)(img), img)) for _ in range(30)}
    assert outcomes == {True, False} and torch.equal(img, before)
    # the training pipeline applies it when asked, and only then
    src = torch.randint(0, 256, (3, 6, 6), dtype=torch.uint8)
    out = train_transform(6, grayscale=1.0)(src)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    raw = out * std + mean  # undo the normalisation: three equal channels
    torch.testing.assert_close(raw[0], raw[1])
    torch.testing.assert_close(raw[1], raw[2])
    assert "RandomGrayscale" not in repr(train_transform(6))
    with pytest.raises(ValueError, match="p must be in"):
        RandomGrayscale(1.5)
    with pytest.raises(ValueError, match="expected a"):
        RandomGrayscale(1.0)(torch.rand(1, 4, 4))
