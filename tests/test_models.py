import pytest
import torch

from fedetf.methods import ClientRound, LocalMethod, ModelSpec, TrainSettings, adaptation_vector
from fedetf.methods.fedgela import FedGELA
from fedetf.models import ETFHead, build_model
from fedetf.train import evaluate, initial_state, train_local

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=10, feature_dim=16, seed=5)


def test_etf_head_logits_follow_the_spec() -> None:
    head = ETFHead(dim=16, num_classes=10, seed=1, temperature=0.5)
    ew = torch.tensor([0, 0, 5, 5, 0, 0, 0, 0, 0, 0], dtype=torch.float32)
    head.set_adaptation(ew)
    h = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(head(h), h @ head.etf)
    torch.testing.assert_close(head(h, personal=True), (h @ (head.etf * ew)) / 0.5)


def test_etf_is_a_buffer_and_adaptation_stays_local() -> None:
    model = build_model("cnn", 1, 10, 16, head="etf", seed=0, feature_norm="batchnorm")
    names = {n for n, _ in model.named_parameters()}
    assert not any("etf" in n for n in names)
    state = model.state_dict()
    assert "classifier.etf" in state and "classifier.adaptation" not in state


def test_adaptation_vector_is_k_times_local_proportion() -> None:
    counts = torch.tensor([30, 0, 10, 0])
    assert torch.allclose(adaptation_vector(counts), torch.tensor([3.0, 0.0, 1.0, 0.0]))
    assert torch.equal(adaptation_vector(counts, "none"), torch.ones(4))


def test_fedavg_and_fedgela_share_backbone_initialisation() -> None:
    a = LocalMethod(SPEC).build_model().state_dict()
    b = FedGELA(SPEC).build_model().state_dict()
    for key in a:
        if key.startswith("backbone.") or key.startswith("feature_head.mlp"):
            assert torch.equal(a[key], b[key]), key


def test_fedgela_training_keeps_etf_and_load_restores_it() -> None:
    method = FedGELA(SPEC)
    model = method.build_model()
    init = initial_state(model)
    etf = model.classifier.etf.clone()
    method.begin(model, ClientRound(torch.tensor([20, 20, 20, 0, 0, 0, 0, 0, 0, 0])))
    torch.manual_seed(0)
    y = torch.arange(3).repeat(20)
    x = torch.randn(60, 1, 8, 8) * 0.5 + 2.0 * y.view(-1, 1, 1, 1)  # the class sets the image's mean
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    before = model.backbone.features[0].weight.clone()
    loss, steps = train_local(model, method, loader, TrainSettings(epochs=2))
    assert steps == 8 and 0 < loss < 100
    assert not torch.equal(before, model.backbone.features[0].weight)
    assert torch.equal(model.classifier.etf, etf)
    with torch.no_grad():
        model.classifier.etf += 1e-3  # a drifted ETF is replaced by the seeded one on load
    method.load(model, method.shared_state(model), init, {})
    assert torch.equal(model.classifier.etf, etf)
    personal = evaluate(model, loader, personal=True)
    assert personal.num_examples == 60 and personal.num_correct == round(personal.acc * 60)
    assert personal.acc > 1 / 3  # two epochs on 3 well-separated classes beat chance


def test_resnet18_cifar_variant_shapes() -> None:
    model = build_model("resnet18", 3, 10, 10, head="etf", seed=0)
    assert model.backbone.conv1.stride == (1, 1)
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("head,params", [("etf", 58_024), ("linear", 58_706)])
def test_simple_cnn_has_the_authors_parameter_counts(head: str, params: int) -> None:
    model = build_model(
        "simple-cnn", 1, 10, 84, head=head, seed=0, image_size=28, feature_norm="batchnorm" if head == "etf" else "none"
    )
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    rgb = build_model("simple-cnn", 3, 10, 84, head=head, seed=0, image_size=32)
    assert rgb.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_simple_cnn_rejects_other_sizes_in_one_line() -> None:
    with pytest.raises(ValueError, match="takes 28x28 or 32x32 images, not 8x8") as info:
        build_model("simple-cnn", 1, 10, 84, image_size=8)
    assert "\n" not in str(info.value)
