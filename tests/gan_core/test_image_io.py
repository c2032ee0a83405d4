"""Image IO: every kind of image round-trips; every bad file is one clear error; writes are atomic."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from gan_core.image_io import INPUT_EXTENSIONS, ImageError, list_images, read_image, write_image, write_png16


def rgb(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("RGBA", 4), ("L", 1), ("LA", 2)])
def test_8bit_modes_round_trip(tmp_path, mode, channels):
    arr = np.random.default_rng(1).integers(0, 256, (12, 16, channels), dtype=np.uint8)
    src = tmp_path / f"in_{mode}.png"
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(src)
    img = read_image(src)
    assert img.pixels.shape == (12, 16, channels) and img.bit_depth == 8
    write_image(tmp_path / "out.png", img.pixels)
    back = np.asarray(Image.open(tmp_path / "out.png"))
    assert np.array_equal(back.reshape(arr.shape), arr)


def test_palette_cmyk_and_bilevel_are_converted(tmp_path):
    Image.fromarray(rgb()).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").channels == 3
    p = Image.fromarray(rgb()).convert("P")
    p.info["transparency"] = 0
    p.save(tmp_path / "pt.png", transparency=0)
    img = read_image(tmp_path / "pt.png")
    assert img.channels == 4 and img.converted_from == "P"
    Image.fromarray(rgb()).convert("CMYK").save(tmp_path / "c.jpg")
    c = read_image(tmp_path / "c.jpg")
    assert c.channels == 3 and c.converted_from == "CMYK"
    Image.fromarray(rgb()[..., 0] > 128).save(tmp_path / "b.png")
    assert read_image(tmp_path / "b.png").channels == 1


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_round_trip_keeps_16_bits(tmp_path, channels):
    arr = np.random.default_rng(2).integers(0, 65536, (9, 11, channels), dtype=np.uint16)
    with open(tmp_path / "a.png", "wb") as f:
        write_png16(f, arr)
    img = read_image(tmp_path / "a.png")
    assert img.bit_depth == 16 and img.channels == channels
    assert np.array_equal(np.rint(img.pixels * 65535).astype(np.uint16), arr)
    # an independent decoder agrees with our writer
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchvision.io import ImageReadMode, decode_png

    data = torch.frombuffer(bytearray((tmp_path / "a.png").read_bytes()), dtype=torch.uint8)
    assert np.array_equal(decode_png(data, ImageReadMode.UNCHANGED).permute(1, 2, 0).numpy(), arr)
    write_image(tmp_path / "b.png", img.pixels, bit_depth=16)
    assert np.array_equal(np.rint(read_image(tmp_path / "b.png").pixels * 65535).astype(np.uint16), arr)


def test_exif_orientation_applied_and_removed(tmp_path):
    arr = rgb(10, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "TestCam"
    Image.fromarray(arr).save(tmp_path / "r.png", exif=exif.tobytes())
    img = read_image(tmp_path / "r.png")
    assert img.pixels.shape[:2] == (20, 10)
    assert np.array_equal(np.rint(img.pixels * 255).astype(np.uint8), np.rot90(arr, k=-1))
    tags = Image.Exif()
    tags.load(img.exif)
    assert 0x0112 not in tags and tags[0x010F] == "TestCam"


def test_icc_profile_carried_and_non_ascii_paths(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    folder = tmp_path / "фото 写真"
    folder.mkdir()
    Image.fromarray(rgb()).save(folder / "ümlaut_图.png", icc_profile=icc)
    img = read_image(folder / "ümlaut_图.png")
    assert img.icc_profile == icc
    write_image(folder / "写.jpg", img.pixels, icc_profile=img.icc_profile)
    assert Image.open(folder / "写.jpg").info.get("icc_profile") == icc
    with open(tmp_path / "i16.png", "wb") as f:
        write_png16(f, np.full((4, 4, 3), 1000, np.uint16), icc)
    assert read_image(tmp_path / "i16.png").icc_profile == icc


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    buf = io.BytesIO()
    Image.fromarray(rgb(200, 200)).save(buf, "PNG")
    (tmp_path / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for name, pattern in [("zero.png", "empty file"), ("text.jpg", "not an image"), ("trunc.png", "trunc"),
                          ("missing.png", "not a file")]:  # fmt: skip
        with pytest.raises(ImageError, match=pattern) as e:
            read_image(tmp_path / name)
        assert name in str(e.value)
    Image.fromarray(rgb(100, 100)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"100x100 = 0.0 MP exceeds the limit"):
        read_image(tmp_path / "big.png", max_pixels=5000)


def test_atomic_writes_and_alpha_rules(tmp_path):
    px = np.random.default_rng(3).random((8, 8, 4)).astype(np.float32)
    with pytest.raises(ImageError, match="cannot store an alpha channel"):
        write_image(tmp_path / "a.jpg", px)
    with pytest.raises(ImageError, match="16-bit output is written as PNG only"):
        write_image(tmp_path / "a.webp", px[..., :3], bit_depth=16)
    write_image(tmp_path / "a.webp", px)
    assert Image.open(tmp_path / "a.webp").mode == "RGBA"
    assert not list(tmp_path.glob(".*tmp"))
    # rounding, not truncation: 0.999 -> 255, 0.5 -> 128
    write_image(tmp_path / "r.png", np.array([[[0.999, 0.5, 0.0019]]], dtype=np.float32))
    assert np.asarray(Image.open(tmp_path / "r.png"))[0, 0].tolist() == [255, 128, 0]


def test_only_still_images_are_read_and_listing_extensions(tmp_path):
    frames = [Image.fromarray(rgb(10, 12, seed=k)) for k in range(5)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=40)
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:3])
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:2])
    frames[0].save(tmp_path / "pages.tiff", save_all=True, append_images=frames[1:4])
    refused = [
        ("anim.gif", "animated GIF with 5 frames"),
        ("anim.png", "animated PNG with 3 frames"),
        ("anim.webp", "animated WebP with 2 frames"),
        ("pages.tiff", "multi-page TIFF with 4 pages"),
    ]
    for name, message in refused:
        with pytest.raises(ImageError, match=f"{name}: {message}: only still images are read"):
            read_image(tmp_path / name)
    frames[1].save(tmp_path / "still.gif")
    frames[2].save(tmp_path / "still.tif")
    assert read_image(tmp_path / "still.gif").size == (12, 10) and read_image(tmp_path / "still.tif").size == (12, 10)
    names = {p.name for p in list_images(tmp_path)}  # the default (training, translate) is unchanged
    assert names == {"anim.png", "anim.webp"}
    assert {p.name for p in list_images(tmp_path, extensions=INPUT_EXTENSIONS)} == names | {
        "anim.gif", "pages.tiff", "still.gif", "still.tif"}  # fmt: skip
