import pytest
import torch

from kaggle_transfer.errors import KtError
from kaggle_transfer.training.models import Backbone, GeM, Head, build_model


def _images(n=2, c=3, s=32):
    return torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8)


@pytest.mark.parametrize("arch", ["test_resnet", "test_efficientnet"])
@pytest.mark.parametrize("pool", ["avg", "gem"])
def test_cnn_heads(arch, pool):
    model = build_model(arch, 5, head=Head(pool, 0.1))
    assert isinstance(model.pool, GeM) == (pool == "gem")
    assert model(_images()).shape == (2, 5)


def test_vit_pools_its_own_tokens_and_refuses_gem():
    assert build_model("test_vit", 1)(_images()).shape == (2, 1)
    with pytest.raises(KtError, match="--pool gem needs a convolutional"):
        build_model("test_vit", 1, head=Head("gem"))


def test_gem_between_mean_and_max():
    x = torch.rand(2, 4, 5, 5)
    gem = GeM(p=3.0)
    assert gem.p.item() == pytest.approx(3.0, rel=1e-5)
    out = gem(x)
    assert (out >= x.mean((-2, -1)) - 1e-6).all() and (out <= x.amax((-2, -1)) + 1e-6).all()
    assert torch.allclose(GeM(p=1.0001)(x), x.mean((-2, -1)), atol=1e-3)
    gem.raw_p.data.fill_(-50.0)  # p can never fall to or below 1
    assert gem.p.item() >= 1.0


def test_normalisation_is_inside_the_network():
    model = build_model("test_efficientnet", 1).eval()
    x = _images()
    # uint8 and the same values as float give the same output: the model normalises itself
    assert torch.allclose(model(x), model(x.float()), atol=1e-6)
    assert model.mean.flatten().tolist() == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])


def test_unknown_arch_suggests_close_matches():
    with pytest.raises(KtError, match="unknown --arch 'resnet5O'.*close matches: .*resnet50"):
        build_model("resnet5O", 1)


def test_local_weights_load_into_the_backbone(tmp_path):
    source = build_model("test_resnet", 1)
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": source.backbone.state_dict()}, path)
    loaded = build_model("test_resnet", 3, backbone=Backbone(weights=str(path)))
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value), key
    from safetensors.torch import save_file

    save_file(source.backbone.state_dict(), str(tmp_path / "b.safetensors"))
    again = build_model(
        "test_resnet", 3, backbone=Backbone(weights=str(tmp_path / "b.safetensors"))
    )
    assert torch.equal(
        again.backbone.conv1[0].weight
        if hasattr(again.backbone.conv1, "__getitem__")
        else again.backbone.conv1.weight,
        source.backbone.conv1[0].weight
        if hasattr(source.backbone.conv1, "__getitem__")
        else source.backbone.conv1.weight,
    )


def test_rgb_weights_adapt_to_four_channels(tmp_path):
    source = build_model("test_resnet", 1)
    torch.save(source.backbone.state_dict(), tmp_path / "rgb.pt")
    model = build_model(
        "test_resnet", 28, in_chans=4, backbone=Backbone(weights=str(tmp_path / "rgb.pt"))
    )
    assert model(_images(c=4)).shape == (2, 28)
    assert model.mean.numel() == 4


def test_weights_of_another_arch_or_garbage_are_refused(tmp_path):
    torch.save(build_model("test_efficientnet", 1).backbone.state_dict(), tmp_path / "eff.pt")
    with pytest.raises(KtError, match="matches only .* is it a checkpoint of this --arch"):
        build_model("test_resnet", 1, backbone=Backbone(weights=str(tmp_path / "eff.pt")))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(KtError, match="not a readable state dict"):
        build_model("test_resnet", 1, backbone=Backbone(weights=str(tmp_path / "junk.pt")))
    with pytest.raises(KtError, match="not found"):
        build_model("test_resnet", 1, backbone=Backbone(weights=str(tmp_path / "none.pt")))


def test_pretrained_failure_offline_is_a_clear_error(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(*args, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    # the host answers the probe (so check_pretrained lets it through) but the download itself fails
    monkeypatch.setattr("kaggle_transfer.training.weights.reachable", lambda url: True)
    with pytest.raises(KtError, match="pass --weights FILE or --no-pretrained"):
        build_model("test_resnet", 1, backbone=Backbone(pretrained=True))


def test_drop_path_reaches_the_timm_backbone_and_is_refused_where_it_cannot():
    from timm.layers import DropPath

    from kaggle_transfer.errors import KtError

    rates = [
        m.drop_prob
        for m in build_model("test_resnet", 1, backbone=Backbone(drop_path=0.2)).modules()
        if isinstance(m, DropPath)
    ]
    assert rates and max(rates) == pytest.approx(0.2)  # timm ramps the rate up to drop_path_rate
    assert not [m for m in build_model("test_resnet", 1).modules() if isinstance(m, DropPath)]
    with pytest.raises(KtError, match="--drop-path is a timm backbone's"):
        build_model("tv:squeezenet1_1", 1, backbone=Backbone(drop_path=0.1))
