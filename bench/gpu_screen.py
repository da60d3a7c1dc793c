"""Many `tune_recipe.py` runs at once, for screening recipes or nets over textures and seeds in one call of
a GPU lease: every texture x seed x variant, WORKERS at a time, no new run after --minutes.

    python bench/gpu_screen.py --textures bark.jpg rose.jpg --seeds 0 1 2 \\
        --variant base= --variant l3x100="--layer 2=100,3,1,2" --variant it700="--set iterations=700" \\
        --workers 8 --minutes 5 --out $OUT

A variant is NAME=OPTIONS, the options `tune_recipe.py` takes (`--set`, `--layer`). Each run appends its
record, with `"variant"`, to OUT/tuning.jsonl as it ends, and its new samples' contact sheet goes into
OUT/samples.tgz (two files, as a lease brings back; the runs' own files stay in --work), so a call cut
short still brings back every run it finished. The runs share the GPU, so
their seconds are not timings: this screens quality. ps_z needs plenoptic where the runs go (on a machine
without a network: `python3 -m pip install --no-index --no-deps` of its wheels, carried along).
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

TUNE = Path(__file__).with_name("tune_recipe.py")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--textures", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=OPTIONS")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each run")
    parser.add_argument("--minutes", type=float, default=float("inf"), help="start no run after this long")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_screen"), help="each run's own files")
    return parser.parse_args()


def run_dir(work: Path, seed, texture, name) -> Path:
    """The folder in `work` of the run of variant `name` on texture with seed."""
    return work / f"{Path(texture).stem}_s{seed}_{name}"


def tune(job, options: str, args, deadline: float):
    """One tune_recipe.py run of job (seed, texture, variant name) with the variant's options: the job and
    its record, with the variant's name (the output's tail where it failed; None when past the deadline)."""
    seed, texture, name = job
    if time.monotonic() > deadline:
        return job, None
    images = run_dir(args.work, *job)
    shutil.rmtree(images, ignore_errors=True)  # a warm machine keeps an earlier call's files
    command = [sys.executable, str(TUNE), texture, "--threads", str(args.threads),
               "--set", f"device={args.device}", f"seed={seed}", *shlex.split(options),
               "--images", str(images), "--out", str(images / "record.jsonl")]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return job, {"variant": name, "texture": Path(texture).name, "settings": {"seed": seed},
                     "error": (done.stdout + done.stderr)[-2000:]}
    return job, {**json.loads((images / "record.jsonl").read_text().splitlines()[-1]), "variant": name}


def report(out: Path, job, record: dict) -> None:
    """Append a run's record to OUT/tuning.jsonl and print its scores (ps_z, or patch_swd) or its error."""
    seed, texture, name = job
    with open(out / "tuning.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    scores = {k: round(v.get("ps_z", v["patch_swd"]), 3) for k, v in record.get("eval", {}).items()
              if isinstance(v, dict) and "patch_swd" in v}
    print(Path(texture).stem, seed, name, scores or record["error"], flush=True)


def archive_samples(out: Path, finished: list) -> None:
    """The finished runs' contact sheets into OUT/samples.tgz, one a run, named after its folder."""
    # Rewritten whole and swapped in, so a call killed at its time limit leaves a complete archive.
    with tarfile.open(out / "samples.tgz.part", "w:gz") as tar:
        for folder in finished:
            for sheet in folder.glob("*_samples.png"):
                tar.add(sheet, arcname=f"{folder.name}.png")
    os.replace(out / "samples.tgz.part", out / "samples.tgz")


def main():
    args = parse_args()
    variants = dict(item.partition("=")[::2] for item in args.variant)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 60 * args.minutes
    # Seeds outermost: a call cut short has every variant on the same seeds.
    jobs = [(seed, texture, name) for seed in args.seeds for texture in args.textures for name in variants]
    finished, failed = [], 0
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(tune, job, variants[job[2]], args, deadline) for job in jobs]
        for future in as_completed(futures):
            job, record = future.result()
            if record is None:
                continue
            report(args.out, job, record)
            if "error" in record:
                failed += 1
                continue
            finished.append(run_dir(args.work, *job))
            archive_samples(args.out, finished)
    print(f"{len(finished)} of {len(jobs)} runs finished, {failed} failed", flush=True)


if __name__ == "__main__":
    sys.exit(main())
