"""The observed side of learning: the training images as the model learns them, and how they are scored.

`observed` are mean-subtracted images; `mean` (C,) is the colour added back to chains to show them. With
`shading` "flatten" (or "auto" on a photo that is more slope than texture), each image's plane of light
(`shading_plane`, per channel, of its known pixels) is subtracted too and nothing adds it back: the model
learns the texture without the light's slope, and with each image's own mean colour taken out. `known`
(M, 1, H, W) bool, where given, marks the pixels that are known: the texture is learned from the rest of
each image only (a photo with a hole, an object or a logo in it), scored by the top-layer windows that hold
no unknown pixel, so the hole teaches nothing. The data's spectrum is where chains start
(`starts.spectrum_kernel`); the model file keeps it for `sample`.
"""

import torch

from ..config import ConfigError
from ..starts import spectrum_kernel

# `shading="auto"` flattens images whose planes of light hold more than this share of their variance (about
# their mean colour): photos that are more slope than texture (the bundled wood's hold 63 %, brick's 0.1 %).
SHADING_SHARE = 0.5
# Learning from the known part of an image needs at least as many fully known top-layer windows as a known
# square of twice the receptive field holds (144 for the texture net): less is a few patches, not a texture.
KNOWN_SQUARE = 2


def per_position_score(model, x: torch.Tensor, boundary: str = "zero", activity=None,
                       known: list | None = None) -> torch.Tensor:
    """Mean over images of f / (number of top-layer positions); of f itself for the object model.

    The texture score is a sum over positions, so dividing by their number makes observed and
    synthesized images of different sizes comparable. If `activity` is a list, the share of active ReLU
    units of each layer is appended to it, from the same bottom-up pass. `known`, a list of (N, 1, h, w)
    bool per layer (`GenerativeConvNet.known_positions`), counts only those positions of each layer, in the
    score (the top layer's) and in the shares (texture model only).
    """
    for i, top in enumerate(model.relu_responses(x, boundary)):
        if activity is not None:
            on = top > 0
            share = on.float().mean() if known is None else (on & known[i]).sum() / (known[i].sum() * top.shape[1])
            activity.append(share.item())
    top = top.float()  # summed in float32 when the convolutions ran in bfloat16
    if model.top == "fc":  # one number per image already: the top filter covers the whole map
        return model.top_score(top).mean()
    if known is not None:
        return (top * known[-1]).sum() / known[-1].sum()
    _, _, h, w = top.shape
    return model.top_score(top).mean() / (h * w)


def shading_plane(images: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """(M, C, H, W): each image's and channel's least-squares plane a + b x + c y over its pixels (its
    `known` ones, a bool (M or 1, 1, H, W), where given)."""
    m, c, h, w = images.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    basis = torch.stack([torch.ones_like(xs), xs, ys]).to(images)  # (3, H, W)
    weight = (torch.ones(1, 1, h, w) if known is None else known).to(images).expand(m, 1, h, w)
    weighted = basis[None] * weight  # (M, 3, H, W)
    gram = torch.einsum("mihw,jhw->mij", weighted, basis)  # (M, 3, 3)
    moments = torch.einsum("mihw,mchw->mci", weighted, images)  # (M, C, 3)
    coefficients = torch.linalg.solve(gram[:, None], moments[..., None])[..., 0]  # (M, C, 3)
    return torch.einsum("mci,ihw->mchw", coefficients, basis)


def checked_images(observed: torch.Tensor, device) -> torch.Tensor:
    """The observed images as float32 on `device`, refused if they are not (M, C, H, W) finite values."""
    if observed.dim() != 4:
        raise ValueError("observed images must be a (M, C, H, W) tensor")
    images = observed.to(device, torch.float32)
    if not torch.isfinite(images).all():
        raise ValueError("observed images hold NaN or infinite values")
    return images


def mean_colour(images: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """(C,) the mean colour of (M, C, H, W) images, of their `known` pixels where given."""
    if known is None:
        return images.mean(dim=(0, 2, 3))
    weight = known.to(images.dtype).expand_as(images)
    return (images * weight).sum(dim=(0, 2, 3)) / weight.sum(dim=(0, 2, 3)).clamp_min(1)


class ObservedData:
    """The training images, mean-subtracted, with their known pixels and resolved shading (see the module).
    `shading` is what was done, "flatten" or "keep", for the config to record."""

    def __init__(self, images: torch.Tensor, mean: torch.Tensor | None, config, model,
                 known: torch.Tensor | None = None):
        self.images, self.boundary = images, config.data_boundary()
        self.mean = torch.zeros(images.shape[1]) if mean is None else mean.reshape(-1).float().cpu()
        self.model, self.known, self._known_maps = model, None, {}
        self.check_size(config.layers)
        if known is not None:
            self._set_known(known, config)
        self.shading = self._resolve_shading(config)
        self.start_kernel = spectrum_kernel(self.images, known=self.known)

    def _set_known(self, known: torch.Tensor, config) -> None:
        """Learn from the known pixels only: checked, and the unknown ones set to the mean."""
        if known.shape != (self.images.shape[0], 1) + self.images.shape[2:]:
            raise ValueError(f"a known-pixel mask of shape {tuple(known.shape)} does not fit images of shape "
                             f"{tuple(self.images.shape)}")
        if config.cd_steps or self.boundary != "valid":
            raise ValueError("learning from the known part of an image needs periodic texture chains: not with "
                             "contrastive divergence, the object model or zero padding")
        self.known = known.to(self.images.device, torch.bool)
        self.images = torch.where(self.known, self.images, torch.zeros((), device=self.images.device))
        with self.model.at_depth(config.layers):  # what is checked must hold at the end
            usable, needed = int(self.model.known_positions(self.known)[-1].sum()), self._fewest_known_positions()
        if usable < needed:
            field = self.model.receptive_field(config.layers)
            raise ValueError(f"the unknown pixels leave {usable} windows of {field} px that are wholly known, "
                             f"too little texture to learn from (at least {needed}, a known square of "
                             f"{KNOWN_SQUARE * field} px): mark a smaller region unknown, or give a model")

    def _fewest_known_positions(self) -> int:
        """The fewest fully known top-layer windows a masked image may leave (`KNOWN_SQUARE`), at its depth."""
        side = KNOWN_SQUARE * self.model.receptive_field()
        _, _, h, w = self.model.output_shape((1, self.model.in_channels, side, side), "valid")
        return h * w

    def _resolve_shading(self, config) -> str:
        """Flatten the shading if the config says so, or says "auto" and these are texture images whose
        planes hold more than SHADING_SHARE of their variance; "flatten" or "keep", what was done."""
        plane = shading_plane(self.images, self.known)  # of the known pixels; the unknown ones stay at 0
        weight = torch.ones_like(self.images[:, :1]) if self.known is None else self.known.float()
        energy = (self.images.pow(2) * weight).sum().clamp_min(1e-12)  # about the mean colour
        self.shading_share = float((plane.pow(2) * weight).sum() / energy)
        if config.shading == "auto":
            flatten = config.texture_chains() and self.shading_share > SHADING_SHARE
        else:
            flatten = config.shading == "flatten"
        if flatten:
            flat = self.images - plane
            self.images = flat if self.known is None else torch.where(self.known, flat, self.images)
        return "flatten" if flatten else "keep"

    def known_positions(self) -> list | None:
        """Each active layer's fully known positions at the model's current depth (None: every position)."""
        if self.known is None:
            return None
        depth = self.model.depth
        if depth not in self._known_maps:
            self._known_maps[depth] = self.model.known_positions(self.known)
        return self._known_maps[depth]

    def score(self, activity: list | None = None) -> torch.Tensor:
        """The data's score per position (`per_position_score`), of their known windows only."""
        return per_position_score(self.model, self.images, self.boundary, activity, known=self.known_positions())

    def check_size(self, layers: int) -> None:
        """Refuse images the model cannot score at its last depth, naming the setting that sized them."""
        try:
            with self.model.at_depth(layers):
                self.model.check_size(self.images.shape, self.boundary)
        except ValueError as err:
            raise ConfigError(str(err), "image_size") from None

    def state_dict(self) -> dict:
        return {"mean": self.mean.clone(), "start_kernel": self.start_kernel.clone()}
