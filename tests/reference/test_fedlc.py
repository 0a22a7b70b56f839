"""FedLC's client against PFLlib's and FL-bench's logit calibration: CE on ``z_c - tau * n_c^(-1/4)``.

References
----------
* TsingZ0/PFLlib @ d832e76, ``system/flcore/clients/clientlc.py`` 12-16 (class counts)
  and 40: ``loss = self.loss(output - self.calibration, y)`` with
  ``calibration = tau * sample_per_class ** (-1/4)`` (``system/flcore/servers/serverlc.py`` 24-26).
* KarhouTam/FL-bench @ 06e658b, ``src/client/fedlc.py`` 13-34 (``logit_calibrated_loss``).

Absent classes and whose counts: PFLlib builds ``sample_per_class`` on the server as the
sum over *all* clients (``serverlc.py`` 20-23), so a class missing on this client but
present elsewhere keeps a finite shift there. fedetf follows the paper (Zhang et al.,
ICML 2022) and FL-bench (``clients_label_counts[self.client_id]``): the client's own
counts. For a class with ``n_c = 0`` fedetf shifts by ``+inf`` (the class drops out of
the softmax), which is what PFLlib's line gives for a zero count (``0 ** -0.25 = inf``);
FL-bench uses ``n_c = 1e-8`` instead (a shift of ``100 * tau``), equal to float
precision for logits of ordinary size.

The literal numbers below come from running PFLlib's line and FL-bench's
``logit_calibrated_loss`` on these tensors with the client's counts (float64); the
same rule is also written out here in plain torch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from fedetf.methods import ClientRound, ModelSpec
from fedetf.methods.logit_adjust import FedLC

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
LOGITS = torch.tensor([[1.2, -0.3, 0.5, 0.1], [0.2, 0.9, -1.1, 0.4], [-0.5, 0.3, 0.8, -0.2], [0.7, 0.1, -0.4, 1.3]])
LABELS = torch.tensor([0, 2, 2, 3])
CASES = [
    # counts, tau, PFLlib's loss, FL-bench's loss
    ([5, 0, 3, 1], 0.7, 0.9570776945414938, 0.9570776972039151),
    ([6, 2, 3, 1], 1.0, 1.2473732191768725, 1.2473732272874076),
]


class FixedLogits(nn.Module):
    """A stand-in model whose logits are its input, so the loss sees exactly ``LOGITS``."""

    def forward(self, x: torch.Tensor, personal: bool = False) -> torch.Tensor:
        return x


def _fedlc_loss(counts: list[int], tau: float) -> torch.Tensor:
    method = FedLC(SPEC, FedLC.Settings(tau=tau))
    model = FixedLogits()
    method.begin(model, ClientRound(torch.tensor(counts)))  # type: ignore[arg-type]
    return method.loss(model, LOGITS, LABELS)  # type: ignore[arg-type]


@pytest.mark.parametrize(("counts", "tau", "pfllib", "fl_bench"), CASES)
def test_loss_equals_pfllib_and_fl_bench_on_local_counts(
    counts: list[int], tau: float, pfllib: float, fl_bench: float
) -> None:
    got = _fedlc_loss(counts, tau)
    assert_close(got, torch.tensor(pfllib, dtype=torch.float32), rtol=1e-6, atol=1e-7)
    assert_close(got, torch.tensor(fl_bench, dtype=torch.float32), rtol=1e-6, atol=1e-7)
    written_out = F.cross_entropy(LOGITS - tau * torch.tensor(counts, dtype=torch.float32) ** -0.25, LABELS)
    assert_close(got, written_out, rtol=1e-6, atol=1e-7)


def test_locally_absent_class_leaves_the_softmax() -> None:
    counts, tau = [5, 0, 3, 1], 0.7
    present = torch.tensor([0, 2, 3])
    shifted = LOGITS[:, present] - tau * torch.tensor(counts, dtype=torch.float32)[present] ** -0.25
    expected = F.cross_entropy(shifted, torch.tensor([0, 1, 1, 2]))  # labels re-indexed over the present classes
    assert_close(_fedlc_loss(counts, tau), expected, rtol=1e-6, atol=1e-7)
