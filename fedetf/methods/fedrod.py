"""FedRoD (Chen & Chao, ICLR 2022): a generic head trained with balanced softmax, plus a personal head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedetf.methods.base import ClientRound, LocalMethod, Phase, TrainSettings
from fedetf.methods.fedgela import log_prior
from fedetf.models import FedModel


class FedRoD(LocalMethod):
    """FedRoD's client: ``BSM(g(h), y) + CE(g(h).detach() + p(h.detach()), y)``.

    ``g`` is the shared generic head, trained with balanced softmax (logits plus
    ``log max(n_c, 1)``); ``p`` is the personal head, kept on the client and
    trained on detached features with plain SGD, as in the references. Personal
    logits are ``g(h) + p(h)``.
    """

    name = "fedrod"
    paper = "Chen & Chao, ICLR 2022"
    shares = "body + generic head"
    keeps = "its personal head"
    objective = "balanced softmax (generic head) + CE of generic + personal logits (personal head)"
    personal_model = True
    head = "dual"
    local_prefixes = ("classifier.personal.",)
    personal_prefixes = ("classifier.personal.",)

    def phases(self, model: FedModel, base: TrainSettings) -> list[Phase]:
        """Body and generic head with the run's optimiser; the personal head with plain SGD at the same lr
        (ZexiLee/ICCV-2023-FedETF ``client_funct.py`` 287-311: ``SGD(p_head.parameters(), lr=args.lr)``)."""
        personal = list(model.classifier.personal.parameters())
        ids = {id(p) for p in personal}
        shared = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        return [Phase(shared, base.epochs, base.lr, plain=personal)]

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._log_prior = log_prior(rnd.label_counts)

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = model.features(x)
        g = model.classifier.generic(h)
        bsm = self.criterion(g + self._log_prior.to(g.device), y)
        personal = g.detach() + model.classifier.personal(h.detach())
        return bsm + F.cross_entropy(personal, y)
