"""Photos <-> tensors and grids (facelab/imaging.py); device choice and seeding (facelab/utils.py)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from facelab.imaging import grid_tiles, make_grid, save_image, to_pil, to_tensor, to_uint8
from facelab.utils import device_key, get_device, seed_all


def random_uint8(h=6, w=5, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Conversions


def test_uint8_round_trip_is_exact():
    a = random_uint8()
    a[0, 0] = 0
    a[0, 1] = 255
    x = to_tensor(a)
    assert x.shape == (1, 3, 6, 5) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    back = to_uint8(x)
    assert back.shape == (1, 6, 5, 3) and back.dtype == np.uint8
    np.testing.assert_array_equal(back[0], a)
    np.testing.assert_array_equal(to_uint8(x[0]), a)  # [3, H, W] -> [H, W, 3]
    # A PIL image and a path give the same tensor.
    assert torch.equal(to_tensor(Image.fromarray(a)), x)


def test_to_uint8_clamps_out_of_range_values():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 5).expand(3, 1, 5)
    np.testing.assert_array_equal(to_uint8(x)[0, :, 0], [0, 0, 128, 255, 255])


def test_path_input(tmp_path):
    a = random_uint8(seed=1)
    Image.fromarray(a).save(tmp_path / "face.png")
    np.testing.assert_array_equal(to_uint8(to_tensor(tmp_path / "face.png"))[0], a)
    np.testing.assert_array_equal(to_uint8(to_tensor(str(tmp_path / "face.png")))[0], a)


def test_grayscale_palette_and_rgba_become_rgb():
    gray = Image.fromarray(np.full((4, 4), 200, dtype=np.uint8), mode="L")
    x = to_tensor(gray)
    assert x.shape == (1, 3, 4, 4)
    torch.testing.assert_close(x, torch.full_like(x, 200 / 127.5 - 1))

    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((1, 2), 1)
    x = to_tensor(pal)
    assert x.shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(to_uint8(x)[0, 2, 1], [10, 20, 30])
    np.testing.assert_array_equal(to_uint8(x)[0, 0, 0], [0, 0, 0])

    rgba = random_uint8(c=4, seed=2)
    over_white = (rgba[..., :3] * (rgba[..., 3:] / 255) + 255 * (1 - rgba[..., 3:] / 255)).round()
    for image in (Image.fromarray(rgba, mode="RGBA"), rgba):  # one loader (faces.load_photo) for both
        x = to_tensor(image)
        assert x.shape == (1, 3, 6, 5)
        np.testing.assert_allclose(to_uint8(x)[0], over_white, atol=1)  # composited onto white
        np.testing.assert_array_equal(to_uint8(to_tensor(image, background=None))[0], rgba[..., :3])  # dropped

    x = to_tensor(np.full((3, 3), 7, dtype=np.uint8))  # a 2-D array is grayscale
    assert x.shape == (1, 3, 3, 3)


def test_float_and_misshapen_arrays_are_refused_with_the_fix():
    a = np.random.default_rng(0).random((4, 4, 3))  # float in [0, 1]: read as such
    np.testing.assert_array_equal(to_uint8(to_tensor(a))[0], (a * 255).round())
    with pytest.raises(ValueError, match=r"astype\(np.uint8\)"):
        to_tensor(a * 255)
    with pytest.raises(ValueError, match=r"channels-first.*\[H, W, C\]"):
        to_tensor(np.zeros((3, 8, 8), dtype=np.uint8))


def test_resize_on_load():
    x = to_tensor(Image.fromarray(random_uint8(h=20, w=30)), size=8)
    assert x.shape == (1, 3, 8, 8)
    assert to_tensor(random_uint8(h=20, w=30), size=8).shape == (1, 3, 8, 8)


# ---------------------------------------------------------------------------------------------
# Grids and PIL output


def test_make_grid_layout():
    images = torch.stack([torch.full((3, 4, 6), float(i) / 10) for i in range(5)])  # [5, 3, 4, 6]
    grid = make_grid(images, nrow=3, padding=2, pad_value=-1.0)
    assert grid.shape == (3, 2 * (4 + 2) + 2, 3 * (6 + 2) + 2)
    for i in range(5):
        r, c = divmod(i, 3)
        top, left = 2 + r * 6, 2 + c * 8
        assert torch.equal(grid[:, top:top + 4, left:left + 6], images[i])
    assert torch.equal(grid[:, 8:12, 18:24], torch.full((3, 4, 6), -1.0))  # the empty 6th cell
    assert (grid[:, :2] == -1).all() and (grid[:, :, :2] == -1).all()  # the border
    assert make_grid(images).shape[2] == 3 * 8 + 2  # default nrow = ceil(sqrt(5)) = 3
    with pytest.raises(ValueError, match=r"make_grid expects \[N, C, H, W\], got \[3, "):
        make_grid(images[0])


def test_to_pil_scale_is_nearest_neighbour():
    img = torch.rand(1, 3, 4, 5) * 2 - 1
    pil = to_pil(img, scale=3)
    assert pil.size == (15, 12) and pil.mode == "RGB"
    a = np.asarray(pil)
    small = to_uint8(img)[0]
    np.testing.assert_array_equal(a[::3, ::3], small)
    np.testing.assert_array_equal(a[2::3, 2::3], small)
    grid = to_pil(torch.rand(5, 3, 4, 6) * 2 - 1, nrow=3, scale=2)
    assert grid.size == (2 * (3 * 8 + 2), 2 * (2 * 6 + 2))


def test_save_image_writes_a_png_and_no_temp_file(tmp_path):
    img = to_tensor(random_uint8(seed=3))
    path = save_image(img, tmp_path / "out" / "x.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im), to_uint8(img)[0])
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]


def test_save_image_writes_the_format_its_name_asks_for_and_refuses_a_name_without_one(tmp_path):
    img = to_tensor(random_uint8(seed=3))
    for name, kind in (("x.jpg", "JPEG"), ("x.webp", "WEBP"), ("x.PNG", "PNG")):
        with Image.open(save_image(img, tmp_path / name)) as im:
            assert im.format == kind
    for name in ("x.txt", "x"):
        with pytest.raises(ValueError, match=f"'{name}' asks for; name it .png"):
            save_image(img, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.PNG", "x.jpg", "x.webp"]


def test_an_image_that_is_not_in_minus_one_one_is_not_silently_saved(tmp_path):
    """NaN would be saved black and 0..255 pixels white: both are refused in one line. A generator's raw
    output overshoots [-1, 1] (an untrained one far) and is saved clamped, as before."""
    for bad, message in ((torch.full((3, 4, 4), float("nan")), "NaN in images"),
                         (torch.full((3, 4, 4), 200.0), r"like 0..255 pixels.*x / 127.5 - 1")):
        with pytest.raises(ValueError, match=message):
            save_image(bad, tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())
    overshoot = torch.linspace(-9, 9, 48).reshape(3, 4, 4)
    assert np.array_equal(np.asarray(to_pil(overshoot)), np.asarray(to_pil(overshoot.clamp(-1, 1))))


def test_grid_tiles_gives_back_the_images_of_a_saved_grid(tmp_path):
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    as_saved = torch.cat([to_tensor(a) for a in to_uint8(images)])  # what a PNG keeps: 8-bit values
    for scale in (1, 3):
        path = save_image(images, tmp_path / f"grid{scale}.png", nrow=3, scale=scale)
        tiles = grid_tiles(path, 8)
        assert tiles.shape == (6, 3, 8, 8) and torch.equal(tiles, as_saved)
    assert torch.equal(grid_tiles(make_grid(images, nrow=2), 8), images)  # a tensor grid, 3 rows of 2
    with pytest.raises(ValueError, match="not made of 7 px tiles"):
        grid_tiles(tmp_path / "grid3.png", 7)


def test_difference_map_shows_where_and_how_much_an_edit_changed():
    from facelab.viz import difference

    ref = torch.zeros(1, 3, 4, 4)
    edited = ref.repeat(2, 1, 1, 1)
    edited[0, :, 1, 2] = 0.1   # a change of 0.05 of the range; x4 = 0.2 -> grey -0.6
    edited[1, 0, 0, 0] = 2.0   # one channel by the whole range: 1/3 of the range x4 saturates at white
    d = difference(edited, ref)
    assert d.shape == (2, 3, 4, 4) and d.min() >= -1 and d.max() <= 1
    assert torch.allclose(d[0, :, 1, 2], torch.full((3,), -0.6)) and d[1, :, 0, 0].eq(1).all()
    unchanged = torch.ones(4, 4, dtype=torch.bool)
    unchanged[1, 2] = False
    assert d[0][:, unchanged].eq(-1).all()  # every other pixel black
    assert torch.equal(difference(edited, ref, gain=1)[0, 0, 1, 2], torch.tensor(-0.9))
    with pytest.raises(ValueError, match="one shape"):
        difference(edited, torch.zeros(1, 3, 5, 5))


def test_spread_labels_untangles_a_crowded_line_and_leaves_a_clear_one():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from facelab.viz import labelled_line, spread_labels

    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    names = ["W", "W+ λ=3", "W+ λ=0.3", "W+ λ=0"]
    labelled_line(ax, [0.27, 0.25, 0.22, 0.23], [0.77, 0.80, 0.88, 0.85], names)  # a tight cluster
    labelled_line(ax, [1.0, 1.4, 1.8], [1.0, 1.3, 1.6], ["a", "b", "c"], marker="s")  # room to spare
    ax.margins(0.1)
    before = {t.get_text(): tuple(t.xyann) for t in ax.texts}
    assert spread_labels(ax) == 0
    renderer = fig.canvas.get_renderer()
    boxes = {}
    for t in ax.texts:
        t.update_positions(renderer)
        boxes[t.get_text()] = Text.get_window_extent(t, renderer)
    texts = {t.get_text(): t for t in ax.texts}
    assert sorted(texts) == sorted(names + ["a", "b", "c"])  # every label still there, once
    for a in boxes:
        for b in boxes:
            assert a == b or not boxes[a].overlaps(boxes[b]), (a, b)
    for name in "abc":  # the clear line's labels did not move, and got no line
        assert tuple(texts[name].xyann) == before[name] and texts[name].arrow_patch is None
    # the crowded labels are stacked in their points' vertical order, each joined to its point
    assert [n for n in sorted(names, key=lambda n: -boxes[n].y0)] == ["W+ λ=0.3", "W+ λ=0", "W+ λ=3", "W"]
    assert all(texts[n].arrow_patch is not None for n in names)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Devices and seeds


def test_get_device_from_environment(monkeypatch):
    monkeypatch.setenv("FACELAB_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("FACELAB_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="FACELAB_DEVICE"):
        get_device()
    assert get_device("cpu") == torch.device("cpu")  # an explicit device wins
    monkeypatch.setenv("FACELAB_DEVICE", "banana")
    with pytest.raises(ValueError, match="FACELAB_DEVICE"):
        get_device()
    monkeypatch.setenv("FACELAB_DEVICE", "xpu")  # a device type torch knows but facelab does not run on
    with pytest.raises(ValueError, match="facelab runs on cpu, cuda, cuda:N or mps"):
        get_device()
    # given explicitly (project(..., device=), PTIConfig(device=), on_device): the variable is not named
    from facelab.utils import on_device

    with pytest.raises(ValueError, match=r"^unknown device 'banana'; use cpu, cuda, cuda:N or mps$"):
        on_device(torch.nn.Linear(1, 1), "banana")


def test_get_device_falls_back_to_cpu(monkeypatch):
    monkeypatch.delenv("FACELAB_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    monkeypatch.setenv("FACELAB_DEVICE", "")  # empty means unset
    assert get_device() == torch.device("cpu")


def test_seed_all_makes_draws_reproducible():
    def draw():
        return torch.randn(5), np.random.rand(5), random.random()

    g = seed_all(123)
    a = draw()
    ga = torch.randn(3, generator=g)
    g = seed_all(123)
    b = draw()
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert torch.equal(torch.randn(3, generator=g), ga)
    seed_all(124)
    assert not torch.equal(draw()[0], a[0])


def test_a_device_is_one_cache_key_however_it_is_spelled():
    # the per-device caches (MTCNN, the expression net, dlib, dlib-lpips, the shipped mapper) were keyed by
    # str(device): get_device() gives 'cuda' and a tensor reports 'cuda:0', so a GPU loaded each network twice
    assert device_key("cuda") == device_key("cuda:0") == device_key(torch.device("cuda", 0)) == "cuda:0"
    assert device_key("cuda:1") == "cuda:1" and device_key(torch.device("cpu")) == device_key("cpu") == "cpu"
    assert device_key("mps") == "mps:0"
    import facelab.metrics as M
    M._perceptual.cache_clear()
    assert M.default_perceptual("cpu") is M.default_perceptual(torch.device("cpu"))


def test_a_save_stopped_mid_write_leaves_nothing_in_the_folder(tmp_path, monkeypatch):
    from PIL import Image
    from facelab.imaging import save_image

    def dies(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_image(torch.zeros(1, 3, 8, 8), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []  # out.png.tmp was left behind
