"""The weight update: the paper's clipped SGD (weight decay on weights only, biases at twice the rate),
each tensor's step scaled by its layer's share (halved when a guard grows the layer again) and by its
reversal damping, then the first layer's filters projected back to zero mean."""

import torch


class ReversalDamping:
    """Rprop's sign rule, per tensor, on top of the clipped SGD step: a tensor whose gradient points
    against its previous one (cosine < 0) has its step halved, down to `FLOOR` of the rate; one whose
    gradient keeps its direction has it grown by 1.2x, back up to the full rate.

    Why: the clip rescales each tensor's gradient to a largest entry of `clip` at every iteration (the
    raw gradients are 1e4 to 1e5), so the plain step never shrinks as the weights near the point where
    data and chains balance. The weights of the upper layers then bounce across it, each update pointing
    against the last and the gap swinging sign at every iteration. Halving on a reversal lets the step
    shrink to the size the balance needs; the tensors that move steadily keep the full rate.
    """

    DOWN, UP, FLOOR = 0.5, 1.2, 0.03

    def __init__(self):
        self.scale = {}  # parameter name -> its step, as a fraction of the rate
        self.last = {}  # parameter name -> its last gradient (clipped, before the scale)

    @torch.no_grad()
    def apply(self, named_params) -> None:
        """Scale each gradient in place by its tensor's step, updated from the last gradient."""
        for name, p in named_params:
            g, last = p.grad, self.last.get(name)
            scale = self.scale.get(name, 1.0)  # a new tensor starts at the full rate
            if last is not None:
                norms = g.norm() * last.norm()
                if norms > 0:
                    reversed_ = (g * last).sum() < 0
                    scale = max(self.FLOOR, scale * self.DOWN) if reversed_ else min(1.0, scale * self.UP)
            self.scale[name], self.last[name] = scale, g.clone()
            g.mul_(scale)

    def state_dict(self) -> dict:
        return {"scale": dict(self.scale), "last": {k: v.cpu() for k, v in self.last.items()}}

    def load_state_dict(self, state: dict, device) -> None:
        self.scale = dict(state["scale"])
        self.last = {k: v.to(device) for k, v in state["last"].items()}


class WeightUpdate:
    """Moves the active weights of `model` by their gradients, as `config` says."""

    def __init__(self, model, config):
        self.model, self.config = model, config
        weights = [conv.weight for conv in model.convs] + list(model.fc_weights)
        biases = [conv.bias for conv in model.convs] + list(model.fc_biases)
        groups = [{"params": weights, "lr": config.lr, "weight_decay": config.weight_decay},
                  {"params": biases, "lr": 2 * config.lr, "weight_decay": 0.0}]
        self.optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.0)
        self.damping = ReversalDamping() if config.damp_reversals else None
        self.layer_scale = [1.0] * len(model.layers)  # each layer's step, as a share of the rate
        self.project()

    def set_rate(self, factor: float) -> None:
        """The rate at `factor` of the config's (`Schedule.rate_factor`), biases at twice it."""
        for group, scale in zip(self.optimizer.param_groups, (1.0, 2.0)):
            group["lr"] = self.config.lr * scale * factor

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self) -> float:
        """Clip each active tensor's gradient, scale it by its layer's step and its reversal damping, take
        the optimiser's step and project the filters; the gradient's norm before all that."""
        params = self.model.active_parameters()
        norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in params)).item()
        for p in params:
            largest = p.grad.abs().max()
            if largest > self.config.clip:
                p.grad.mul_(self.config.clip / largest)
        for i, conv in enumerate(self.model.active_convs()):
            if self.layer_scale[i] != 1.0:
                for p in conv.parameters():
                    p.grad.mul_(self.layer_scale[i])
        if self.damping is not None:
            self.damping.apply(self.model.active_named_parameters())
        self.optimizer.step()
        self.project()
        return norm

    @torch.no_grad()
    def project(self) -> None:
        """Make each first-layer filter sum to zero over its channels and taps (if configured).

        A filter with a DC component responds to the brightness of a whole region. Learning then grows it
        wherever the data have bright patches, and the model gains a brightness mode that chains started at
        the mean image never reach: the gap stays open and the samples collapse to flat patches. Zero-mean
        filters see structure and colour contrasts, not the grey level the data's mean already gives."""
        if self.config.zero_mean_filters:
            weight = self.model.convs[0].weight
            weight.sub_(weight.mean(dim=(1, 2, 3), keepdim=True))

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "step_scale": list(self.layer_scale),
                "damping": self.damping.state_dict() if self.damping is not None else None}

    def load_state_dict(self, state: dict, device) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.layer_scale = list(state.get("step_scale", self.layer_scale))
        if self.damping is not None and state.get("damping") is not None:
            self.damping.load_state_dict(state["damping"], device)
