import torch

from fedetf.methods import FedAvgMethod, FedGELAMethod, ModelSpec, adaptation_vector
from fedetf.models import ETFHead, build_model
from fedetf.train import TrainSettings, evaluate, train_local

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=10, feature_dim=16, seed=5, temperature=0.2)


def test_etf_head_logits_follow_the_spec() -> None:
    head = ETFHead(dim=16, num_classes=10, seed=1, temperature=0.5)
    ew = torch.tensor([0, 0, 5, 5, 0, 0, 0, 0, 0, 0], dtype=torch.float32)
    head.set_adaptation(ew)
    h = torch.randn(4, 16)
    assert torch.allclose(head(h), h @ head.etf)
    assert torch.allclose(head(h, personal=True), (h @ (head.etf * ew)) / 0.5)


def test_etf_is_a_buffer_and_adaptation_stays_local() -> None:
    model = build_model("cnn", 1, 10, 16, head="etf", seed=0)
    names = {n for n, _ in model.named_parameters()}
    assert not any("etf" in n for n in names)
    state = model.state_dict()
    assert "classifier.etf" in state and "classifier.adaptation" not in state


def test_adaptation_vector_is_k_times_local_proportion() -> None:
    counts = torch.tensor([30, 0, 10, 0])
    assert torch.allclose(adaptation_vector(counts), torch.tensor([3.0, 0.0, 1.0, 0.0]))
    assert torch.equal(adaptation_vector(counts, "none"), torch.ones(4))


def test_fedavg_and_fedgela_share_backbone_initialisation() -> None:
    a = FedAvgMethod(SPEC).build_model().state_dict()
    b = FedGELAMethod(SPEC).build_model().state_dict()
    for key in a:
        if key.startswith("backbone.") or key.startswith("feature_head.mlp"):
            assert torch.equal(a[key], b[key]), key


def test_fedgela_training_keeps_etf_and_load_global_restores_it() -> None:
    method = FedGELAMethod(SPEC)
    model = method.build_model()
    etf = model.classifier.etf.clone()
    method.prepare(model, torch.tensor([20, 20, 20, 0, 0, 0, 0, 0, 0, 0]))
    x = torch.randn(60, 1, 8, 8)
    y = torch.arange(3).repeat(20)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    before = model.backbone.features[0].weight.clone()
    loss, steps = train_local(model, method, loader, TrainSettings(epochs=2))
    assert steps == 8 and loss == loss
    assert not torch.equal(before, model.backbone.features[0].weight)
    assert torch.equal(model.classifier.etf, etf)
    # A drifted ETF in incoming global arrays is ignored: the seeded one is kept.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["classifier.etf"] += 1e-3
    method.load_global(model, state)
    assert torch.equal(model.classifier.etf, etf)
    personal = evaluate(model, loader, personal=True)
    assert personal.num_examples == 60 and 0.0 <= personal.acc <= 1.0


def test_resnet18_cifar_variant_shapes() -> None:
    model = build_model("resnet18", 3, 10, 10, head="etf", seed=0)
    assert model.backbone.conv1.stride == (1, 1)
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
