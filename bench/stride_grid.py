"""Is there a grid tied to the first layer's stride in the samples? The share of each image's power (its
mean removed) on the frequencies of period `stride` along either axis, for samples against crops of the
training image of the samples' size (rounded down to a multiple of the stride, so those frequencies
fall on the FFT's grid). A sampler that leaves the stride's phase pattern in its images shows a share
well above the texture's own.

    python bench/stride_grid.py TEXTURE SAMPLE_DIR_OR_PNG... [--stride 3] [--image-size 224]
"""

import argparse

import torch

from tritongcn.images import image_paths, load_image, preprocess


def stride_power_share(images: torch.Tensor, stride: int) -> float:
    """Mean over (N, C, H, W) images of the share of the grey level's power at the frequencies k·H/stride
    (rows) and k·W/stride (columns), k = 1 .. stride - 1; H and W must be multiples of `stride`."""
    grey = images.float().mean(dim=1)
    grey = grey - grey.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(grey).abs().pow(2)
    h, w = grey.shape[-2:]
    on_grid = torch.zeros(h, w, dtype=torch.bool)
    for k in range(1, stride):
        on_grid[k * h // stride, :] = True
        on_grid[:, k * w // stride] = True
    return (power[:, on_grid].sum(dim=1) / power.sum(dim=(-2, -1))).mean().item()


def _images(paths) -> list:
    return [torch.from_numpy(load_image(f)).permute(2, 0, 1).float() for f in image_paths(paths)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texture")
    parser.add_argument("samples", nargs="+")
    parser.add_argument("--stride", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    samples = torch.stack(_images(args.samples))
    side = min(samples.shape[-2:]) // args.stride * args.stride
    samples = samples[..., :side, :side]
    training = preprocess(load_image(args.texture), args.image_size)
    crop = min(side, args.image_size // args.stride * args.stride)
    step = max(1, (args.image_size - crop) // 3)
    crops = torch.stack([training[:, i:i + crop, j:j + crop] for i in range(0, args.image_size - crop + 1, step)
                         for j in range(0, args.image_size - crop + 1, step)])
    print(f"share of power at period {args.stride}: samples {stride_power_share(samples, args.stride):.4f} "
          f"({len(samples)} of {side} px), training crops {stride_power_share(crops, args.stride):.4f} "
          f"({len(crops)} of {crop} px)")


if __name__ == "__main__":
    main()
