"""Photo loading and alignment into the world's crop (facelab/faces.py).

The round trips embed teacher faces (which are in the world's crop by definition) into larger
canvases at another scale, position and rotation, and align them back. Bad inputs each get their
own one-line error. The real portrait is matplotlib's public-domain ``grace_hopper.jpg``.
"""
from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import facelab as fl
import facelab.faces as fc
from facelab.faces import FaceAlignmentError, PhotoError, align_face, align_faces, load_photo
from facelab.nets.attributes import detect_faces
from facelab.nets.teacher import sample_teacher


def embed(face: torch.Tensor, *, canvas=(256, 256), scale=2.5, angle=8.0, centre=(120.0, 140.0),
          background=0.0, into: torch.Tensor | None = None) -> torch.Tensor:
    """Put a face [3, 64, 64] into a canvas [3, H, W] (neutral gray unless ``into``): its centre at
    ``centre`` (pixels), ``scale`` canvas pixels per face pixel, rotated clockwise by ``angle`` degrees."""
    w, h = canvas
    a = math.radians(angle)
    x = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w) + 0.5 - centre[0]
    y = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w) + 0.5 - centre[1]
    u = (math.cos(a) * x + math.sin(a) * y) / scale  # face pixels from the face's centre
    v = (-math.sin(a) * x + math.cos(a) * y) / scale
    grid = torch.stack([u / 32, v / 32], dim=-1)[None]  # [1, H, W, 2] in the face's [-1, 1]
    inside = F.grid_sample(torch.ones(1, 1, 64, 64), grid, align_corners=False)[0]  # [1, H, W]
    pasted = F.grid_sample(face[None], grid, align_corners=False)[0]
    base = torch.full((3, h, w), background) if into is None else into
    return pasted + (1 - inside) * base


def png_header(path, width: int, height: int):
    """A valid PNG header claiming width x height 1-bit pixels, with (almost) no pixel data: cheap."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def teacher():
    return sample_teacher(6, seed=1)  # [6, 3, 64, 64]


@pytest.fixture(scope="module")
def settled(teacher):
    """The teacher face that sits closest to the template (its own alignment changes it least)."""
    errors = [(align_face(x) - x).abs().mean().item() for x in teacher]
    return teacher[int(np.argmin(errors))]


@pytest.fixture(scope="module")
def grace_path():
    import matplotlib.cbook
    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("scale, angle, centre", [(2.5, 8.0, (120.0, 140.0)), (1.4, -5.0, (90.0, 100.0))])
def test_teacher_face_survives_embedding_and_alignment(settled, scale, angle, centre):
    canvas = embed(settled, scale=scale, angle=angle, centre=centre)  # [3, 256, 256]
    out, info = align_face(canvas, return_info=True)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32 and -1 <= out.min() and out.max() <= 1
    err = (out - settled).abs().mean().item()
    naive = (F.interpolate(canvas[None], size=(64, 64), mode="area")[0] - settled).abs().mean().item()
    assert err < 0.1 and err < naive / 3, (err, naive)
    # The transform found is (nearly) the embedding composed with the original face's own alignment.
    m, m0 = info["transform"], align_face(settled, return_info=True)[1]["transform"]  # crop px -> px
    assert math.degrees(math.atan2(m[1, 0], m[0, 0]) - math.atan2(m0[1, 0], m0[0, 0])) == pytest.approx(angle, abs=2)
    assert math.hypot(m[0, 0], m[1, 0]) / math.hypot(m0[0, 0], m0[1, 0]) == pytest.approx(scale, rel=0.05)
    c = torch.complex(*(m0 @ torch.tensor([32.0, 32.0, 1.0]) - 32).unbind())  # crop centre, face px
    c = c * scale * complex(math.cos(math.radians(angle)), math.sin(math.radians(angle))) + complex(*centre)
    assert torch.dist(m @ torch.tensor([32.0, 32.0, 1.0]), torch.stack([c.real, c.imag])) < 1.5 * scale
    assert (info["aligned_landmarks"] / 64 - fc.WORLD_TEMPLATE).abs().max() < 0.05
    assert info["confidence"] > 0.95 and info["index"] == 0 and info["photo_size"] == (256, 256)


def test_output_size_and_large_photo_downscaled_for_detection(settled):
    canvas = embed(settled, canvas=(900, 700), scale=7.0, angle=3.0, centre=(500.0, 330.0))  # > DETECT_SIZE
    out64 = align_face(canvas)
    assert (out64 - settled).abs().mean() < 0.1
    out128 = align_face(canvas, size=128)
    assert out128.shape == (3, 128, 128)
    assert (F.avg_pool2d(out128[None], 2)[0] - out64).abs().mean() < 0.03


def test_two_faces_need_an_index(teacher):
    a, b = teacher[0], teacher[3]
    canvas = embed(a, canvas=(320, 192), scale=2.2, angle=0.0, centre=(90.0, 96.0))
    canvas = embed(b, canvas=(320, 192), scale=1.6, angle=0.0, centre=(240.0, 96.0), into=canvas)
    with pytest.raises(FaceAlignmentError, match=r"found 2 faces.*box \(.*confidence.*pass index=k") as e:
        align_face(canvas)
    assert "\n" not in str(e.value)
    first, second = align_face(canvas, index=0), align_face(canvas, index=1)  # largest first
    assert (first - a).abs().mean() < (first - b).abs().mean()
    assert (second - b).abs().mean() < (second - a).abs().mean()
    assert (first - second).abs().mean() > 0.15
    with pytest.raises(FaceAlignmentError, match=r"index=2 but .* 2 face"):
        align_face(canvas, index=2)
    assert len(fc.find_faces(canvas)) == 2


def test_no_face_in_a_flat_gray_image():
    with pytest.raises(FaceAlignmentError, match="no face found"):
        align_face(np.full((128, 128, 3), 128, np.uint8))


def test_real_portrait_lands_on_the_template(grace_path):
    out, info = align_face(grace_path, return_info=True)
    assert out.shape == (3, 64, 64) and info["photo_size"] == (512, 600)
    # MTCNN on the aligned face, seen as the template was measured (with context), finds the
    # landmarks where the template puts them.
    pad = round(fc.CONTEXT * 64)
    conf, points = fc._view_landmarks(F.pad(out[None], (pad,) * 4, mode="replicate"), "cpu")
    found = points[0] - pad  # [5, 2] crop pixels
    assert conf[0] > 0.95
    assert (found / 64 - fc.WORLD_TEMPLATE).norm(dim=1).mean() < 0.04  # < 2.6 px: her face is not the mean face
    assert (found - info["aligned_landmarks"]).norm(dim=1).mean() < 1.5  # consistent: where the fit put them
    # ... and on the bare 64 px crop too.
    assert detect_faces(out[None]).conf[0] > 0.95
    # A path, a PIL image and an array give the same crop; a batch stacks them.
    with Image.open(grace_path) as pil:
        batch = align_faces([pil, np.asarray(pil)])
    assert batch.shape == (2, 3, 64, 64)
    assert (batch - out).abs().max() < 1e-5


# ---------------------------------------------------------------------------------------------
# Loading photos: conversions


def test_grayscale_palette_cmyk_and_float_inputs_become_rgb():
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))  # [40, 64]
    for src in (gray, gray[..., None], Image.fromarray(gray), Image.fromarray(gray).convert("P"),
                gray.astype(np.float32) / 255, gray.astype(np.float64) / 255):
        im = load_photo(src)
        assert im.mode == "RGB" and im.size == (64, 40)
        a = np.asarray(im)
        assert (a[..., 0] == a[..., 2]).all() and abs(int(a[0, 10, 1]) - 40) <= 1
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 0, 0))  # magenta ink only
    assert load_photo(cmyk).getpixel((0, 0)) == (255, 0, 255)
    assert load_photo(np.ones((40, 40), bool)).getpixel((3, 3)) == (255, 255, 255)
    x = load_photo(gray, as_tensor=True)
    assert x.shape == (1, 3, 40, 64) and x.min() == -1 and x.max() <= 1


def test_alpha_is_composited_on_white_or_dropped():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere, opaque only on the left half
    rgba[:, :20, 3] = 255
    for src in (rgba, Image.fromarray(rgba, "RGBA")):
        im = load_photo(src)
        assert im.getpixel((5, 5)) == (200, 0, 0) and im.getpixel((30, 5)) == (255, 255, 255)
        assert load_photo(src, background=None).getpixel((30, 5)) == (200, 0, 0)
        assert load_photo(src, background=(0, 0, 0)).getpixel((30, 5)) == (0, 0, 0)
    pal = Image.fromarray(rgba, "RGBA").convert("P")  # palette with a transparent entry
    pal.info["transparency"] = pal.getpixel((30, 5))
    assert load_photo(pal).getpixel((30, 5)) == (255, 255, 255)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    a16 = np.zeros((40, 40), np.uint16)
    a16[:, 10:] = 32896  # 128 * 257
    a16[:, 20:] = 65535
    path = tmp_path / "gray16.png"
    Image.fromarray(a16).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # PIL's own convert("RGB") would clip these to 255
    with path.open("rb") as file:
        for src in (path, str(path), path.read_bytes(), file, a16, np.stack([a16] * 3, axis=-1)):
            im = np.asarray(load_photo(src))
            assert im[0, 5].tolist() == [0] * 3 and im[0, 15].tolist() == [128] * 3 and im[0, 30].tolist() == [255] * 3


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :10] = 255  # a white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(a).save(path, exif=exif, quality=95)
    im = load_photo(path)
    assert im.size == (40, 60)  # upright: the band is now at the top
    b = np.asarray(im).mean(axis=(1, 2))
    assert b[:8].mean() > 200 and b[20:].mean() < 50


def test_bad_arrays_and_tensors_say_how_to_fix_them():
    with pytest.raises(PhotoError, match=r"in \[0, 1\].*\(a \+ 1\) / 2"):
        load_photo(np.full((40, 40, 3), -0.5, np.float32))
    with pytest.raises(PhotoError, match="channels-first"):
        load_photo(np.zeros((3, 40, 40), np.uint8))
    with pytest.raises(PhotoError, match="uint8, uint16"):
        load_photo(np.zeros((40, 40, 3), np.int64))
    with pytest.raises(PhotoError, match=r"\[-1, 1\]"):
        load_photo(torch.full((3, 40, 40), 3.0))
    with pytest.raises(PhotoError, match="pass a path"):
        load_photo(42)


# ---------------------------------------------------------------------------------------------
# Loading photos: errors


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no photo at .*check the path"):
        load_photo(tmp_path / "nope.jpg")


def test_unreadable_and_truncated_files(tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a photo\n")
    with pytest.raises(PhotoError, match="cannot read .*notes.jpg as an image.*renamed") as e:
        load_photo(fake)
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)
    good = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:400])
    with pytest.raises(PhotoError, match="cannot decode .*truncated"):
        load_photo(good)
    with pytest.raises(PhotoError, match="is a directory"):
        load_photo(tmp_path)


def test_tiny_photo_is_refused_with_the_minimum():
    with pytest.raises(PhotoError, match=r"only 100 x 20 px.*at least 32 px"):
        load_photo(np.zeros((20, 100, 3), np.uint8))
    assert load_photo(np.zeros((20, 100, 3), np.uint8), min_size=16).size == (100, 20)


def test_huge_images_are_refused_before_decoding(tmp_path):
    bomb = png_header(tmp_path / "bomb.png", 20000, 20000)  # 400 MP: PIL's own guard also fires
    assert bomb.stat().st_size < 100
    with pytest.raises(PhotoError, match=r"too large \(400\.0 megapixels.*max_pixels=None") as e:
        load_photo(bomb)
    assert "\n" not in str(e.value)
    big = png_header(tmp_path / "big.png", 10000, 8000)  # 80 MP: under PIL's limit, over ours
    with pytest.raises(PhotoError, match=r"10000 x 8000 = 80\.0 megapixels, more than max_pixels=64,000,000"):
        load_photo(big)
    with Image.open(big) as lazy, pytest.raises(PhotoError, match="too large"):
        load_photo(lazy)  # a lazily opened PIL image is checked before it is decoded
    before = Image.MAX_IMAGE_PIXELS
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    with pytest.raises(PhotoError, match="more than max_pixels=5,000"):
        load_photo(small, max_pixels=5000)
    assert load_photo(small, max_pixels=None).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == before  # PIL's own guard, lifted for max_pixels=None, is back


# ---------------------------------------------------------------------------------------------
# Reliability (#16): shapes MTCNN cannot search, fl.to_tensor through the same loader, tensor values


@pytest.mark.parametrize("size", [(1400, 40), (6000, 180)])
def test_elongated_photos_are_a_one_line_error(size):
    photo = Image.new("RGB", size, (128, 128, 128))
    for call in (align_face, fc.find_faces):
        with pytest.raises(PhotoError, match=rf"only \d+ px across .*detect_size=640.*detect_size={size[0]}") as e:
            call(photo)
        assert "\n" not in str(e.value)


def test_a_face_in_a_long_strip_is_found_with_the_detect_size_the_error_suggests(settled):
    """6000 x 180 with a 162 px face: shrunk to 640 px the face would be 17 px, below MTCNN's 20."""
    strip = embed(settled, canvas=(6000, 180), scale=162 / 64, angle=0.0, centre=(3000.0, 90.0), background=0.2)
    with pytest.raises(PhotoError, match="detect_size=6000"):
        align_face(strip)
    assert (align_face(strip, detect_size=6000) - settled).abs().mean() < 0.1


def test_bad_sizes_are_one_line_errors():
    photo = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"detect_size must be .*>= 20.*got 10"):
        align_face(photo, detect_size=10)
    with pytest.raises(ValueError, match="detect_size must be"):
        fc.find_faces(photo, detect_size=0)
    with pytest.raises(ValueError, match=r"size must be a positive number of pixels.*got 0"):
        align_face(photo, size=0)
    with pytest.raises(ValueError, match="size must be a positive"):
        fl.to_tensor(photo, size=0)


def test_to_tensor_reads_files_through_load_photo(tmp_path):
    """16-bit PNGs scaled (not white), EXIF orientation and alpha applied, one-line errors, bombs refused."""
    a16 = np.full((40, 40), 32896, np.uint16)  # 128 * 257
    Image.fromarray(a16).save(tmp_path / "gray16.png")
    assert fl.imaging.to_uint8(fl.to_tensor(tmp_path / "gray16.png"))[0, 0, 0].tolist() == [128] * 3
    a = np.zeros((40, 60, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "phone.jpg", exif=exif)
    assert fl.to_tensor(str(tmp_path / "phone.jpg")).shape == (1, 3, 60, 40)
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black: white once composited
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    with Image.open(tmp_path / "clear.png") as pil:
        for src in (tmp_path / "clear.png", (tmp_path / "clear.png").read_bytes(), pil):
            assert (fl.to_tensor(src) == 1).all()
    (tmp_path / "notes.png").write_text("not a photo")
    with pytest.raises(PhotoError, match="cannot read .*notes.png as an image") as e:
        fl.to_tensor(tmp_path / "notes.png")
    assert "\n" not in str(e.value)
    with pytest.raises(PhotoError, match="too large"):
        fl.to_tensor(png_header(tmp_path / "big.png", 10000, 10000))  # 100 MP, refused from its header
    assert fl.to_tensor(np.zeros((4, 4, 3), np.uint8)).shape == (1, 3, 4, 4)  # no minimum size for tensors


def test_tensor_photos_in_zero_one_warn_and_nan_is_named():
    x = torch.linspace(0, 1, 3 * 40 * 40).reshape(3, 40, 40)
    with pytest.warns(UserWarning, match=r"like an image in \[0, 1\].*x \* 2 - 1"):
        load_photo(x)
    bad = x * 2 - 1
    bad[0, 0, 0] = float("nan")
    with pytest.raises(PhotoError, match="NaN in") as e:
        load_photo(bad)
    assert "\n" not in str(e.value)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(PhotoError, match="Inf in"):
        align_face(bad)


# ---------------------------------------------------------------------------------------------
# The template


def test_measure_template_agrees_with_the_stored_one():
    t = fc.measure_template(n=12, seed=7)
    assert t.shape == (5, 2)
    assert (t - fc.WORLD_TEMPLATE).abs().max() < 0.03  # 12 faces vs 4096: within 2 px of 64
    s = fc.measure_template(n=4, seed=7, symmetric=True)
    assert torch.allclose(s, fc.mirror_landmarks(s), atol=1e-6)
    assert 0.3 < t[0, 0] < t[2, 0] < t[1, 0] < 0.7 and t[0, 1] < t[2, 1] < t[3, 1]  # eyes, nose, mouth
