"""Image files (tinymatch.match.load_image_file) of every kind a user might pass, and match_files.

The hostile inputs come from tests/image_cases.py; `tests/test_cli_match.py` runs the same ones
through `tinymatch match`.
"""

import signal
import time
from contextlib import contextmanager

import keras
import numpy as np
import pytest
from image_cases import BAD_IMAGES, same_picture_in_other_encodings
from PIL import Image

from tinymatch import match
from tinymatch import model as model_module
from tinymatch.config import Config


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO read would block forever)."""
    def give_up(signum, frame):
        raise AssertionError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def siamese_file(tmp_path_factory):
    """A random-weights smoke Siamese model (threshold 0.8) and its embedding model, saved."""
    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    embedding = model_module.build_embedding_model(Config.from_profile("smoke", augment=False))
    embedding.save(folder / "model.keras")
    model_module.build_siamese_model(embedding, threshold=0.8).save(folder / "siamese.keras")
    return folder / "siamese.keras"


# --- what reads correctly -------------------------------------------------------------------------

def test_any_mode_and_size_comes_out_as_rgb_at_the_asked_size(tmp_path):
    Image.new("L", (100, 80), 200).save(tmp_path / "gray.png")
    Image.new("RGBA", (64, 64), (0, 0, 255, 0)).save(tmp_path / "clear.png")
    Image.new("RGB", (300, 200), (10, 20, 30)).save(tmp_path / "big.jpg")
    gray = match.load_image_file(tmp_path / "gray.png")
    assert gray.shape == (64, 64, 3) and gray.dtype == np.float32 and np.allclose(gray, 200)
    assert np.allclose(match.load_image_file(tmp_path / "clear.png"), 255)  # transparent -> white
    big = match.load_image_file(tmp_path / "big.jpg", size=32)
    assert big.shape == (32, 32, 3) and abs(big[..., 2].mean() - 30) < 3


def test_cmyk_palette_and_transparency_convert_to_the_colours_shown(tmp_path):
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red in ink
    palette = Image.new("P", (64, 64), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    palette.save(tmp_path / "palette_clear.png", transparency=1)
    Image.new("LA", (64, 64), (0, 0)).save(tmp_path / "gray_clear.png")
    Image.new("1", (64, 64), 1).save(tmp_path / "bilevel.png")
    red = match.load_image_file(tmp_path / "cmyk.jpg")
    assert red[..., 0].mean() > 240 and red[..., 1:].mean() < 15
    np.testing.assert_array_equal(match.load_image_file(tmp_path / "palette.png")[0, 0], [0, 200, 0])
    assert np.all(match.load_image_file(tmp_path / "palette_clear.png") == 255)
    assert np.all(match.load_image_file(tmp_path / "gray_clear.png") == 255)
    assert np.all(match.load_image_file(tmp_path / "bilevel.png") == 255)


def test_animated_gif_and_multi_page_tiff_give_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("animated.gif", "pages.tif"):
        first = match.load_image_file(tmp_path / name)
        assert first[..., 0].mean() > 250 and first[..., 2].mean() < 5, name


def test_high_bit_depth_copies_read_back_as_the_8_bit_picture(tmp_path):
    """16-bit gray PNG and TIFF (both byte orders), 32-bit integer and float TIFF, 16-bit RGB PNG:
    scaled to 8 bits, not clipped at 255 (which turned 99.6% of a 16-bit picture white)."""
    original, copies = same_picture_in_other_encodings(tmp_path)
    expected = match.load_image_file(original)
    assert len(np.unique(expected)) == 256
    for encoding, path in copies.items():
        np.testing.assert_array_equal(match.load_image_file(path), expected, err_msg=encoding)


def test_to_8_bit_scales_each_high_bit_depth_mode():
    wide = np.array([[0, 257, 65535, 32896]], np.uint16)  # 32896 = 128 * 257 (+ 0)
    assert np.asarray(match.to_8_bit(Image.fromarray(wide), "x")).tolist() == [[0, 1, 255, 128]]
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert np.asarray(match.to_8_bit(Image.fromarray(unit), "x")).tolist() == [[0, 128, 255]]
    levels = np.array([[0.0, 100.0, 255.0]], np.float32)  # above 1: already 0..255
    assert np.asarray(match.to_8_bit(Image.fromarray(levels), "x")).tolist() == [[0, 100, 255]]
    for bad in (np.array([[0.0, np.nan]], np.float32), np.array([[-1.0, 300.0]], np.float32)):
        with pytest.raises(match.UnreadableImageError, match="floating-point"):
            match.to_8_bit(Image.fromarray(bad), "x")


# --- what is refused ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", BAD_IMAGES)
def test_hostile_image_is_a_one_line_error_naming_the_file(case, tmp_path):
    make, fragment = BAD_IMAGES[case]
    try:
        path = make(tmp_path)
    except OSError as err:  # e.g. a socket path longer than the OS allows
        pytest.skip(f"cannot create the {case} input here: {err}")
    started = time.monotonic()
    with deadline(20), pytest.raises(match.UnreadableImageError) as caught:
        match.load_image_file(path)
    message = str(caught.value)
    assert fragment in message and path.name in message and "\n" not in message
    assert time.monotonic() - started < 5  # refused from the header, nothing big decoded


def test_missing_image_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        match.load_image_file(tmp_path / "nothere.png")


def test_pixel_budget_is_configurable(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "small.png")
    Image.new("RGB", (40, 25), (1, 2, 3)).save(tmp_path / "tiny.png")
    assert match.max_image_pixels() == match.MAX_IMAGE_PIXELS
    monkeypatch.setenv(match.MAX_IMAGE_PIXELS_ENV_VAR, "1000")
    assert match.load_image_file(tmp_path / "tiny.png").shape == (64, 64, 3)  # exactly 1,000 pixels
    with pytest.raises(match.ImageTooLargeError, match=f"4,096 pixels.*{match.MAX_IMAGE_PIXELS_ENV_VAR}"):
        match.load_image_file(tmp_path / "small.png")
    for junk in ("lots", "0", "-5"):
        monkeypatch.setenv(match.MAX_IMAGE_PIXELS_ENV_VAR, junk)
        with pytest.raises(ValueError, match=match.MAX_IMAGE_PIXELS_ENV_VAR):
            match.load_image_file(tmp_path / "small.png")


# --- match_files ----------------------------------------------------------------------------------

def test_match_files_uses_the_stored_threshold(siamese_file, tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "a.png")
    Image.new("L", (90, 90), 40).save(tmp_path / "b.jpg")
    same = match.match_files(siamese_file, tmp_path / "a.png", tmp_path / "a.png")
    assert same["distance"] == pytest.approx(0, abs=1e-3) and same["match"] is True
    assert same["threshold"] == pytest.approx(0.8) and same["distance_metric"] == "L2"
    other = match.match_files(siamese_file, tmp_path / "a.png", tmp_path / "b.jpg")
    assert other["match"] == (other["distance"] <= 0.8)


def test_a_16_bit_copy_matches_its_8_bit_original(siamese_file, tmp_path):
    original, copies = same_picture_in_other_encodings(tmp_path)
    result = match.match_files(siamese_file, original, copies["png_16_bit_gray"])
    assert result["distance"] == pytest.approx(0, abs=1e-5) and result["match"] is True


def test_match_files_refuses_models_that_are_not_a_tinymatch_siamese_model(siamese_file, tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "a.png")
    image = tmp_path / "a.png"
    with pytest.raises(model_module.NotATinymatchModelError, match="model.keras is not a tinymatch Siamese model"):
        match.match_files(siamese_file.parent / "model.keras", image, image)
    first, second = keras.Input((64, 64, 3)), keras.Input((64, 64, 3))
    keras.Model([first, second], keras.layers.Subtract()([first, second])).save(tmp_path / "two.keras")
    with pytest.raises(model_module.NotATinymatchModelError, match="two.keras is not a tinymatch Siamese"):
        match.match_files(tmp_path / "two.keras", image, image)


def test_a_bad_image_fails_before_the_model_is_read(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (64, 64)).save(tmp_path / "ok.png")
    with pytest.raises(match.UnreadableImageError, match="notes.png"):
        match.match_files(tmp_path / "no-model-here.keras", tmp_path / "ok.png", tmp_path / "notes.png")


def test_image_files_are_read_up_to_a_size_limit(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "small.png")
    monkeypatch.setattr(match, "MAX_IMAGE_FILE_BYTES", 50)
    with pytest.raises(match.UnreadableImageError, match="small.png.*bytes"):
        match.load_image_file(tmp_path / "small.png")
