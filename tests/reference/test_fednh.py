"""FedNH against its authors' code: Yutong-Dai/FedNH@60c3161.

* Model (``src/flbase/models/CNN.py`` 40-72): features L2-normalised, ``logits = scaling * h @ prototype^T``
  with fixed unit prototypes and a learned ``scaling`` starting at 1.0 (line 51).
* Initialisation (``src/flbase/strategies/FedUH.py`` 59-60): ``torch.nn.init.orthogonal_`` of a K x d matrix
  (orthonormal rows for K <= d); the prototypes are never trained (line 50).
* Client upload (``src/flbase/strategies/FedNH.py`` 29-58): in eval mode, per present class,
  ``n_c * normalize(mean of the normalised features)``, and the counts.
* Server (``FedNH.py`` 145-164): ``avg_c = sum_i n_ic mu_ic / sum_i n_ic``, ``avg = normalize(avg)``,
  ``W <- normalize(rho W + (1 - rho) avg)``, rho = ``FedNH_smoothing`` = 0.9 (``main.py`` 221).

Worked example (K = 2, d = 2, W = I, rho 0.9): client A counts [3, 0] with class-0 direction [0.6, 0.8];
client B counts [1, 2], class 0 [1, 0], class 1 [0.6, 0.8]. Class 0: (3 [0.6, 0.8] + [1, 0]) / 4 = [0.7, 0.6],
normalised [0.759257, 0.650791]; class 1: [0.6, 0.8]. New W = normalize(0.9 I + 0.1 avg) =
[[0.997784, 0.066537], [0.061110, 0.998131]]. Logits for h = [3, 4] with W = I, scale 1: [0.6, 0.8];
CE(y = 1) = log(1 + e^-0.2) = 0.598139.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import Array, ArrayRecord
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec
from fedetf.methods.fednh import CLASS_STATS_KEY, PROTOTYPES_KEY, FedNH, initial_prototypes
from strategies.fednh import FedNH as FedNHServer

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
TINY = ModelSpec(backbone="cnn", in_channels=1, num_classes=2, feature_dim=2, seed=0, image_size=8)


def _record(scaled: list[list[float]], counts: list[float]) -> dict[str, ArrayRecord]:
    return {
        CLASS_STATS_KEY: ArrayRecord(
            {"scaled": Array(np.array(scaled, np.float32)), "counts": Array(np.array(counts, np.float32))}
        )
    }


def test_server_update_worked_example() -> None:
    server = FedNHServer(initial_prototypes=np.eye(2, dtype=np.float32), rho=0.9)
    a = _record([[3 * 0.6, 3 * 0.8], [0.0, 0.0]], [3, 0])
    b = _record([[1.0, 0.0], [2 * 0.6, 2 * 0.8]], [1, 2])
    server.aggregate_extras(1, [a, b], [3.0, 3.0])
    expected = np.array([[0.997784, 0.066537], [0.061110, 0.998131]])
    np.testing.assert_allclose(server.prototypes, expected, atol=1e-6)
    np.testing.assert_allclose(server.broadcast[PROTOTYPES_KEY]["prototypes"].numpy(), expected, atol=1e-6)


def test_a_class_nobody_holds_keeps_its_prototype() -> None:
    server = FedNHServer(initial_prototypes=np.eye(2, dtype=np.float32), rho=0.9)
    server.aggregate_extras(1, [_record([[3 * 0.6, 3 * 0.8], [0.0, 0.0]], [3, 0])], [3.0])
    np.testing.assert_allclose(server.prototypes[1], [0.0, 1.0], atol=1e-7)
    # class 0: normalize(0.9 [1, 0] + 0.1 [0.6, 0.8]) = [0.96, 0.08] / 0.963328
    np.testing.assert_allclose(server.prototypes[0], [0.996546, 0.083046], atol=1e-6)


def test_logits_are_scale_times_cosine_to_the_received_prototypes() -> None:
    method = FedNH(TINY)
    model = method.build_model()
    init = model.state_dict()
    received = {PROTOTYPES_KEY: {"prototypes": torch.eye(2)}}
    method.load(model, method.shared_state(init), init, {}, received)
    logits = model.classifier(torch.tensor([[3.0, 4.0]]), personal=True)
    torch.testing.assert_close(logits, torch.tensor([[0.6, 0.8]]))
    loss = F.cross_entropy(logits, torch.tensor([1]))
    assert math.isclose(float(loss.detach()), 0.598139, abs_tol=1e-6)
    assert not any(k.startswith("classifier.etf") for k in method.shared_state(model))  # prototypes never sent
    assert "classifier.scale" in method.shared_state(model) and float(model.classifier.scale.detach()) == 1.0


def test_initial_prototypes_are_orthonormal_seeded_and_unit() -> None:
    w = initial_prototypes(4, 8, seed=3)
    torch.testing.assert_close(w @ w.T, torch.eye(4), atol=1e-6, rtol=0)
    assert torch.equal(w, initial_prototypes(4, 8, seed=3)) and not torch.equal(w, initial_prototypes(4, 8, seed=4))
    wide = initial_prototypes(10, 3, seed=0)  # K > d: rows normalised
    torch.testing.assert_close(wide.norm(dim=1), torch.ones(10))


def test_client_upload_is_count_times_unit_class_mean_of_normalised_features() -> None:
    method = FedNH(SPEC)
    model = method.build_model()
    init = model.state_dict()
    method.load(model, method.shared_state(init), init, {})
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(7, 1, 8, 8, generator=g), torch.tensor([0, 0, 2, 0, 2, 2, 2])
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    stats = method.end(model, ClientRound(torch.tensor([3, 0, 4, 0]), train_loader=loader), steps=1)[CLASS_STATS_KEY]
    # The authors' _estimate_prototype, written out.
    model.eval()
    with torch.no_grad():
        h = F.normalize(model.features(x), dim=1)
    expected = torch.zeros(4, 8)
    for c, n in ((0, 3), (2, 4)):
        expected[c] = n * F.normalize(h[y == c].mean(0), dim=0)
    torch.testing.assert_close(stats["scaled"], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(stats["counts"], torch.tensor([3.0, 0.0, 4.0, 0.0]))


def test_prototypes_never_train_and_a_fixed_scale_stays_out_of_training() -> None:
    method = FedNH(SPEC, FedNH.Settings(fixed_scale=True, scale=30.0))
    model = method.build_model()
    trained = {id(p) for p in method.trainable_parameters(model)}
    assert id(model.classifier.scale) not in trained and float(model.classifier.scale.detach()) == 30.0
    assert "classifier.etf" in dict(model.named_buffers())  # a buffer: no gradient, never sent
