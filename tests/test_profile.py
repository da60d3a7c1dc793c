import json

import torch
from click.testing import CliRunner

from tritongcn import GenerativeConvNet, LayerSpec
from tritongcn.cli import main
from tritongcn.profile import profile_steps, random_texture_net


def test_flop_and_byte_counts_match_a_hand_count():
    net = GenerativeConvNet(1, [LayerSpec(4, 3, 1, 1), LayerSpec(2, 3, 2, 0)])
    x = torch.randn(2, 1, 9, 9)
    report = profile_steps(net, x, steps=3, compare=False)
    sites = report["sites"]
    assert list(sites) == ["conv_relu_mask L1", "conv_relu_mask L2", "masked_conv_transpose L2",
                           "masked_conv_transpose L1", "langevin_update"]
    # Layer 1: 2 chains x 4 filters x 9x9 outputs x (1 channel x 3x3 taps) multiply-adds, x2 for FLOPs.
    layer1 = 2 * 2 * 4 * 9 * 9 * 1 * 3 * 3
    # Layer 2: 2 chains x 2 filters x 4x4 outputs (stride 2, no padding) x (4 channels x 3x3 taps), x2.
    layer2 = 2 * 2 * 2 * 4 * 4 * 4 * 3 * 3
    assert sites["conv_relu_mask L1"]["flops_per_step"] == sites["masked_conv_transpose L1"]["flops_per_step"] == layer1
    assert sites["conv_relu_mask L2"]["flops_per_step"] == sites["masked_conv_transpose L2"]["flops_per_step"] == layer2
    assert all(row["calls"] == 3 for row in sites.values())
    # The update reads x and B and writes x: 3 float32 values per element.
    assert sites["langevin_update"]["bytes_per_step"] == 3 * 4 * x.numel()
    # Bits per chain: ceil(81 / 32) = 3 words for each of 4 maps, ceil(16 / 32) = 1 word for each of 2.
    assert report["bits_bytes_per_chain"] == 4 * (4 * 3 + 2 * 1)


def test_random_texture_net_is_the_seeded_texture_net_with_biases_of_both_signs():
    net, again = random_texture_net(), random_texture_net()
    texture = GenerativeConvNet.texture(3, generator=torch.Generator().manual_seed(0))
    assert net.config() == texture.config()
    for conv, same, plain in zip(net.convs, again.convs, texture.convs):
        assert torch.equal(conv.weight, plain.weight) and torch.equal(conv.bias, same.bias)
        # Each layer's biases are the first draws of seed 1: the figures of every run are comparable.
        assert torch.equal(conv.bias, torch.randn(conv.bias.shape, generator=torch.Generator().manual_seed(1)))
        assert (conv.bias > 0).any() and (conv.bias < 0).any()
    assert random_texture_net(1, [LayerSpec(4, 3)], device="cpu").convs[0].weight.shape == (4, 1, 3, 3)


def test_profile_command_prints_the_table_and_writes_a_trace(tmp_path):
    trace = tmp_path / "trace.json"
    result = CliRunner().invoke(main, ["profile", "--chains", "2", "--size", "36", "--steps", "1",
                                       "--trace", str(trace)])
    assert result.exit_code == 0, result.output
    for site in ("conv_relu_mask L1", "masked_conv_transpose L3", "langevin_update", "autograd loop",
                 "held per chain", "medians of 3 alternating rounds"):
        assert site in result.output
    assert "periodic boundary" in result.output  # as `learn` makes texture nets
    assert json.loads(trace.read_text())["traceEvents"]


def test_profile_command_reads_a_learned_model_and_its_boundary(model_path, tmp_path):
    args = ["profile", str(model_path), "--chains", "1", "--size", "36", "--steps", "1", "--no-compare"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "autograd loop" not in result.output and str(model_path) in result.output
    assert "periodic boundary" in result.output  # the model was learned on the torus
    result = CliRunner().invoke(main, args + ["--zero-padding"])
    assert result.exit_code == 0 and "zero boundary" in result.output


def test_profile_refuses_bfloat16_on_the_triton_interpreter_in_one_line():
    result = CliRunner().invoke(main, ["profile", "--backend", "triton", "--precision", "bfloat16",
                                       "--chains", "1", "--size", "30", "--steps", "1", "--no-compare"])
    assert result.exit_code == 1 and "interpreter" in result.output and "Traceback" not in result.output


def test_profile_rounds_a_periodic_size_up_to_the_stride_as_sample_does():
    result = CliRunner().invoke(main, ["profile", "--periodic", "--chains", "1", "--size", "37",
                                       "--steps", "1", "--no-compare", "--precision", "float32"])
    assert result.exit_code == 0, result.output
    assert "profiling at 39 px" in result.output and "1 chain of 39 px" in result.output
