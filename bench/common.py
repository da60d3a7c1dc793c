"""What the benchmarks share: the machine's name, the benchmark net, and one way to record results (a JSON
line per result, stamped with the benchmark, the date, the machine and the versions)."""

import datetime
import json
from dataclasses import fields
from pathlib import Path

import torch

import tritongcn
from tritongcn import GenerativeConvNet
from tritongcn.config import LearnConfig
from tritongcn.geometry import TEXTURE_LAYERS
from tritongcn.profile import random_texture_net

RESULTS = Path(__file__).with_name("results.jsonl")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_name(device: torch.device | str = "cpu") -> str:
    """The GPU's name, or the CPU's with the threads torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def bench_model(device: torch.device, layers=TEXTURE_LAYERS) -> GenerativeConvNet:
    """The texture net (or a net of `layers`) with random weights and biases of both signs, as after
    learning, so the bits are mixed: `tritongcn profile`'s net, the same numbers."""
    return random_texture_net(3, layers, device)


def append_results(path, bench: str, records: list, device="cpu") -> None:
    """Append `records` to the JSON-lines file at `path`, each stamped with `bench`, the date, the machine
    it ran on and the torch and tritongcn versions."""
    stamp = {"bench": bench, "date": datetime.datetime.now().isoformat(timespec="seconds"),
             "machine": machine_name(device), "torch": torch.__version__, "tritongcn": tritongcn.__version__}
    with open(path, "a") as f:
        for record in records:
            f.write(json.dumps({**stamp, **record}) + "\n")


def learn_settings(assignments) -> dict:
    """LearnConfig settings from NAME=VALUE strings (`--set lr=0.002 chains=16`), typed as the config's fields."""
    types = {f.name: f.type for f in fields(LearnConfig)}
    out = {}
    for item in assignments:
        name, _, value = item.partition("=")
        if name not in types:
            raise SystemExit(f"unknown setting {name!r}: choose from {', '.join(types)}")
        kind = types[name]
        out[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out
