import io

import numpy as np
import pytest
from PIL import Image

from recommender import ImageError
from recommender.features.images import load_for_model, open_image, pad_to_square
from tests.conftest import DEMO_DIR

LAPTOP = DEMO_DIR / "images" / "laptop.jpg"  # a real 512x384 JPEG photo
TSHIRT = DEMO_DIR / "images" / "t-shirt.png"  # a real palette PNG with transparency


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    photo = Image.open(LAPTOP)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone photo taken in portrait
    data = _encode(photo, "JPEG", exif=exif)
    assert Image.open(io.BytesIO(data)).size == (512, 384)
    assert open_image(data).size == (384, 512)


def test_palette_png_with_transparency_becomes_rgb_on_white():
    src = Image.open(TSHIRT)
    assert src.mode == "P" and "transparency" in src.info
    img = open_image(TSHIRT)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)  # the transparent corner is white, not black


def test_rgba_is_composited_onto_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((5, 5), (255, 0, 0, 255))
    img = open_image(_encode(rgba, "PNG"))
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((5, 5)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["L", "CMYK", "LA", "1"])
def test_other_modes_become_rgb(mode):
    photo = Image.open(LAPTOP).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    img = open_image(_encode(photo, fmt))
    assert img.mode == "RGB" and img.size == (512, 384)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_greyscale_resized_before_it_becomes_rgb_gives_the_same_pixels(fmt):
    """load_for_model keeps plain greyscale through the resize (one band, not three): not a pixel differs."""
    grey = _encode(Image.open(LAPTOP).convert("L"), fmt)
    kept = open_image(grey, min_side=224, keep_grey=True)
    assert kept.mode == "L"
    converted_first = pad_to_square(open_image(grey, min_side=224), 224)
    assert np.array_equal(load_for_model(grey, 224), converted_first)
    small = _encode(Image.open(LAPTOP).convert("L").resize((28, 28)), fmt)  # upscaled, as Fashion-MNIST's
    assert np.array_equal(load_for_model(small, 224), pad_to_square(open_image(small), 224))


def test_greyscale_with_a_transparent_colour_still_lands_on_white():
    img = Image.new("L", (8, 8), 0)
    img.info["transparency"] = 0
    out = load_for_model(_encode(img, "PNG", transparency=0), 16)
    assert out.shape == (16, 16, 3) and (out == 255).all()


def test_16_bit_greyscale_keeps_its_range():
    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    img = open_image(_encode(Image.fromarray(arr), "PNG"))
    out = np.asarray(img)
    assert out.shape == (64, 64, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_not_an_image(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("hello, I am a text file")
    with pytest.raises(ImageError, match="not an image"):
        open_image(path)


def test_truncated_image():
    data = LAPTOP.read_bytes()[:4000]
    with pytest.raises(ImageError, match="corrupt or truncated"):
        open_image(data)


def test_decompression_bomb_is_refused_before_decoding():
    huge = _encode(Image.new("1", (9000, 9000)), "PNG")  # tiny file, 81 megapixels
    assert len(huge) < 100_000
    with pytest.raises(ImageError, match="too many pixels"):
        open_image(huge)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        open_image(tmp_path / "gone.png")
    with pytest.raises(ImageError, match="file not found"):
        open_image(tmp_path / ("n" * 300 + ".png"))  # ENAMETOOLONG is a missing file, not a crash


def test_a_folder_is_named_as_a_folder(tmp_path):
    with pytest.raises(ImageError, match="a folder, not an image file"):
        open_image(tmp_path)


def test_pad_to_square_keeps_aspect_ratio_on_white():
    arr = pad_to_square(Image.open(LAPTOP).convert("RGB"), 224)
    assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8
    # 512x384 -> 224x168: 28-pixel white bands above and below, photo in between.
    assert (arr[:27] == 255).all() and (arr[-27:] == 255).all()
    assert not (arr[100] == 255).all()


def test_load_for_model_accepts_paths_bytes_and_files():
    a = load_for_model(LAPTOP, 224)
    b = load_for_model(LAPTOP.read_bytes(), 224)
    with open(LAPTOP, "rb") as f:
        c = load_for_model(f, 224)
    assert (a == b).all() and (a == c).all()


def test_a_big_jpeg_upload_is_decoded_at_a_reduced_scale():
    from recommender.features.uploads import PREVIEW_SIDE, open_upload

    big = Image.open(LAPTOP).convert("RGB").resize((6000, 4500), Image.Resampling.BILINEAR)
    data = _encode(big, "JPEG", quality=85)
    up = open_upload(data, "phone.jpg")
    # 1/2 DCT scale: 3000x2250 keeps >= 3 x PREVIEW_SIDE on the short side; 1/4 would not.
    assert up.image.size == (3000, 2250) and min(up.image.size) >= 3 * PREVIEW_SIDE
    assert open_image(data).size == (6000, 4500)  # without a size hint, decoded in full
