"""Reading images of every common kind, and the three data-set layouts."""

import numpy as np
import pytest
from PIL import Image

from diffclust.data import load_image_tensor, load_rgb, resize_center_crop, scan_images, to_rgb
from diffclust.errors import DiffclustError


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))
    assert np.asarray(to_rgb(image)).tolist() == [[[255, 255, 255], [255, 0, 0]]]


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    assert np.asarray(to_rgb(image)).tolist() == [[[255, 255, 255], [0, 255, 0]]]


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    rgb = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert rgb[..., 0].tolist() == [[0, 255], [128, 1]]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = np.asarray(load_rgb(tmp_path / "cmyk.jpg")).reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_grayscale_becomes_three_equal_channels():
    rgb = np.asarray(to_rgb(Image.new("L", (3, 3), 77)))
    assert rgb.shape == (3, 3, 3) and (rgb == 77).all()


def test_resize_center_crop_keeps_the_centre_square():
    image = Image.new("RGB", (100, 50), (0, 0, 0))
    image.paste((255, 255, 255), (25, 0, 75, 50))  # white centre square, black sides
    out = resize_center_crop(image, 32)
    assert out.size == (32, 32)
    assert np.asarray(out).min() > 240


def test_tensor_range_is_minus_one_to_one(tmp_path):
    Image.new("RGB", (10, 20), (255, 0, 128)).save(tmp_path / "x.png")
    pixels = load_image_tensor(tmp_path / "x.png", 8)
    assert pixels.shape == (3, 8, 8)
    assert pixels[0].min().item() == pytest.approx(1.0) and pixels[1].max().item() == pytest.approx(-1.0)


def _png(path, colour=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), colour).save(path)


def test_class_subfolders_become_labels(tmp_path):
    for name in ("cats/a.png", "cats/deep/b.png", "dogs/c.png"):
        _png(tmp_path / name)
    collection = scan_images(tmp_path)
    assert collection.files == ["cats/a.png", "cats/deep/b.png", "dogs/c.png"]
    assert collection.labels.tolist() == [0, 0, 1]


def test_flat_folder_is_unlabelled_and_other_files_are_listed(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    collection = scan_images(tmp_path)
    assert collection.files == ["a.png", "b.PNG"] and collection.labels is None
    assert [(s.file, s.is_image) for s in collection.skipped] == [("notes.txt", False)]


def test_manifest_labels_split_and_images_subfolder(tmp_path):
    _png(tmp_path / "images" / "x.png")
    _png(tmp_path / "y.png")
    (tmp_path / "labels.csv").write_text("file,label,class_name,split\nx.png,3,three,test\ny.png,1,one,train\n")
    collection = scan_images(tmp_path)
    assert collection.labels.tolist() == [3, 1]
    assert [r.split for r in collection.records] == ["test", "train"]


@pytest.mark.parametrize(
    "row, message",
    [("missing.png,0", "does not exist"), ("../outside.png,0", "outside"), ("/etc/passwd,0", "outside")],
)
def test_manifest_errors_name_the_row_and_the_fix(tmp_path, row, message):
    _png(tmp_path / "x.png")
    _png(tmp_path.parent / "outside.png")
    (tmp_path / "labels.csv").write_text(f"file,label\n{row}\n")
    with pytest.raises(DiffclustError, match=message) as error:
        scan_images(tmp_path)
    assert "row 2" in str(error.value)


def test_unreadable_files_are_skipped_or_fatal_in_strict_mode(tmp_path):
    _png(tmp_path / "good.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    collection = scan_images(tmp_path)
    assert collection.files == ["good.png"]
    reasons = {s.file: s.reason for s in collection.skipped}
    assert reasons["empty.jpg"].startswith("empty file") and "unreadable" in reasons["text.jpg"]
    with pytest.raises(DiffclustError, match="strict"):
        scan_images(tmp_path, strict=True)


def test_no_images_is_a_clear_error(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(DiffclustError, match="No usable images"):
        scan_images(tmp_path)
    with pytest.raises(DiffclustError, match="does not exist"):
        scan_images(tmp_path / "nope")
