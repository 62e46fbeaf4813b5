"""How fast is facelab's StyleGAN2 on this machine? Generator (and world64 discriminator) timings.

For each preset and device this reports the parameter count and, as the median of ``--repeats``
timed runs after warm-up:

* ``G fwd``: ``G.synthesis(ws, noise_mode="const")`` on W+ latents from ``G.mapping`` (eval mode,
  ``torch.no_grad``) — what rendering an edit costs;
* ``G fwd+bwd``: the same forward with gradients, then ``backward`` to the W+ latent *and* to G's
  weights — one step of W+ projection combined with pivotal tuning (PTI), an upper bound for a plain
  projection step (gradients to the latent only);
* ``D fwd``/``D fwd+bwd`` (world64 only): the discriminator on a batch of images, gradients to the
  images and D's weights (a GAN training step does about two of each, plus G).

Times are per batch and per image; on CUDA the device is synchronised around every timed run and the
peak allocated memory (weights included) is reported. Weights are random (timings do not depend on
their values), so nothing is downloaded or loaded.

    python bench/generator.py                               # world64 + config-f, every device here
    python bench/generator.py --presets world64 --device cpu --threads 2 --json bench.json
    python bench/generator.py --smoke                       # 1 repeat, batch 1: checks every path

Defaults keep a full run under about two minutes on 2 CPU cores: batch 16 for world64, batch 1 and
2 repeats for config-f (1024 px) on the CPU.

**Against NVIDIA's code** (``--against-official PATH``, PATH a checkout of
https://github.com/NVlabs/stylegan2-ada-pytorch that you fetched yourself; facelab never ships it)
the same run times our generator and NVIDIA's StyleGAN2-ADA generator side by side: the same
architecture (``bench/official_parity.py``'s constructor arguments, fp32), the same random weights
(NVIDIA's, randomised, copied into ours with ``facelab.nets.official``; the max abs difference of
the two images is printed), ``noise_mode="const"``, a W+ latent with a different w per layer, at
batch 1 and a training batch (16 for world64, 4 for config-f: StyleGAN2-ADA's per-GPU batch at
1024 px), in three modes:

* ``forward``: synthesis under ``torch.no_grad`` (rendering an edit);
* ``fwd+bwd to W+``: the generator frozen (``requires_grad_(False)``), ``img.square().mean()``
  backpropagated to the W+ latent only: a projection (inversion) step;
* ``fwd+bwd to W+ and weights``: the same with gradients for the generator's weights too: a
  pivotal-tuning (PTI) or training step.

Both networks run in eval mode with their defaults (NVIDIA's picks its fused modconv there).
Repetitions of ours and NVIDIA's alternate (ours, NVIDIA, ours, NVIDIA, ...) after one untimed run
of each, so that other load on the machine hits both alike; the table shows medians and their
ratio. On the CPU NVIDIA's code runs its reference ops (its custom ops are CUDA-only); on CUDA it
tries to compile its bias_act/upfirdn2d plugins and falls back to the reference ops when that
fails: the header says which ran. ``--compile`` adds ours under ``torch.compile`` (inductor) as a
third column group, with the time of each first, compiling call.

    OMP_NUM_THREADS=1 python bench/generator.py --against-official /tmp/sg2ada --device cpu --threads 1
    python bench/generator.py --against-official /tmp/sg2ada --presets world64 --batch 1 --compile
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from facelab.nets.stylegan2 import PRESETS, Discriminator, Generator, count_params, get_config

DEFAULT_BATCH = {"world64": 16, "ffhq-config-f": 1, "tiny": 16}


@dataclass
class Result:
    preset: str
    device: str
    net: str          # "G" or "D"
    params: int
    batch: int
    repeats: int
    fwd_s: list[float] = field(default_factory=list)       # every timed forward, seconds per batch
    fwdbwd_s: list[float] = field(default_factory=list)    # every timed forward+backward
    fwd_peak_mib: float | None = None                      # CUDA only
    fwdbwd_peak_mib: float | None = None
    note: str = ""

    @property
    def fwd(self) -> float | None:
        return statistics.median(self.fwd_s) if self.fwd_s else None

    @property
    def fwdbwd(self) -> float | None:
        return statistics.median(self.fwdbwd_s) if self.fwdbwd_s else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device: torch.device, *, warmup: int, repeats: int) -> tuple[list[float], float | None]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; returns (seconds, peak MiB)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return times, peak


def bench_generator(preset: str, device: torch.device, *, batch: int, warmup: int, repeats: int,
                    seed: int = 0) -> Result:
    torch.manual_seed(seed)
    G = Generator(get_config(preset)).eval().to(device)
    res = Result(preset, device.type, "G", count_params(G), batch, repeats)
    z = torch.randn(batch, G.z_dim, device=device)
    with torch.no_grad():
        ws = G.mapping(z)  # [N, num_ws, w_dim]

    def forward():
        with torch.no_grad():
            G.synthesis(ws, noise_mode="const")

    G.requires_grad_(True)
    ws_param = ws.clone().requires_grad_(True)

    def forward_backward():
        G.zero_grad(set_to_none=True)
        ws_param.grad = None
        img = G.synthesis(ws_param, noise_mode="const")  # [N, 3, R, R]
        img.square().mean().backward()

    return measure_pair(res, forward, forward_backward, device, warmup=warmup, repeats=repeats)


def measure_pair(res: Result, forward, forward_backward, device, *, warmup: int, repeats: int) -> Result:
    """Time a forward and a forward+backward closure into ``res`` (an OOM is recorded, not raised)."""
    try:
        res.fwd_s, res.fwd_peak_mib = measure(forward, device, warmup=warmup, repeats=repeats)
        res.fwdbwd_s, res.fwdbwd_peak_mib = measure(forward_backward, device, warmup=warmup, repeats=repeats)
    except torch.cuda.OutOfMemoryError:
        res.note = "out of memory"
    return res


def bench_discriminator(preset: str, device: torch.device, *, batch: int, warmup: int, repeats: int,
                        seed: int = 0) -> Result:
    torch.manual_seed(seed)
    D = Discriminator(get_config(preset)).eval().to(device)
    res = Result(preset, device.type, "D", count_params(D), batch, repeats)
    r = D.img_resolution
    img = torch.rand(batch, 3, r, r, device=device) * 2 - 1  # [N, 3, R, R] in [-1, 1]

    def forward():
        with torch.no_grad():
            D(img)

    img_param = img.clone().requires_grad_(True)

    def forward_backward():
        D.zero_grad(set_to_none=True)
        img_param.grad = None
        D(img_param).sum().backward()  # gradients to D's weights and the images (as for R1)

    return measure_pair(res, forward, forward_backward, device, warmup=warmup, repeats=repeats)


def default_repeats(preset: str, device: torch.device) -> int:
    if device.type == "cuda":
        return 20
    return 2 if get_config(preset).img_resolution >= 512 else 5


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.3f}"


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def table(results: list[Result]) -> str:
    head = ["preset", "device", "net", "params", "batch", "reps",
            "fwd ms/batch", "fwd ms/img", "fwd+bwd ms/batch", "fwd+bwd ms/img", "peak MiB fwd/fwd+bwd"]
    rows = []
    for r in results:
        peak = "-" if r.fwd_peak_mib is None else f"{r.fwd_peak_mib:.0f}/{r.fwdbwd_peak_mib or 0:.0f}"
        per_img = lambda t: None if t is None else t / r.batch  # noqa: E731
        rows.append([r.preset, r.device, r.net, fmt_params(r.params), str(r.batch), str(r.repeats),
                     fmt_ms(r.fwd), fmt_ms(per_img(r.fwd)), fmt_ms(r.fwdbwd), fmt_ms(per_img(r.fwdbwd)),
                     peak + (f"  ({r.note})" if r.note else "")])
    if all(r.fwd_peak_mib is None and not r.note for r in results):  # CPU only: no memory column
        head, rows = head[:-1], [row[:-1] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    left = {0, 1, 2}
    line = lambda cells: "  ".join(c.ljust(w) if i in left else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(head), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out)


def environment(devices: list[torch.device]) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "cpu": _cpu_name(), "threads": torch.get_num_threads()}
    if any(d.type == "cuda" for d in devices):
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name()
        env["cudnn_tf32"] = torch.backends.cudnn.allow_tf32
        env["matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------
# Against NVIDIA's StyleGAN2-ADA (--against-official)

TRAIN_BATCH = {"world64": 16, "ffhq-config-f": 4, "tiny": 16}
MODES = {"f": "forward", "w": "fwd+bwd to W+", "wp": "fwd+bwd to W+ and weights"}


def default_compare_repeats(preset: str, batch: int, device: torch.device) -> int:
    if device.type == "cuda":
        return 20
    if get_config(preset).img_resolution >= 512:  # ~10 s per forward+backward at 1024 px on one core
        return 3 if batch == 1 else 1
    return 15 if batch == 1 else 5


def import_nvidia(path: str):
    """NVIDIA's ``training.networks`` from a checkout, without building anything at import.

    Their custom ops compile only on first use on a CUDA tensor (never on the CPU); the build's
    console output is silenced, and a failed build falls back to their reference ops with a
    warning, which :func:`nvidia_ops` reports. Nothing needed patching under torch 2.14 on the CPU.
    """
    from pathlib import Path

    repo = Path(path)
    if not (repo / "training" / "networks.py").is_file() or not (repo / "torch_utils").is_dir():
        sys.exit(f"error: --against-official {path} is not a stylegan2-ada-pytorch checkout (no "
                 "training/networks.py or torch_utils/); clone https://github.com/NVlabs/stylegan2-ada-pytorch "
                 "and pass its path")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from official_parity import import_official

    try:
        nets = import_official(repo)
        from torch_utils import custom_ops
    except ImportError as e:  # e.g. a dependency of their code missing from this environment
        sys.exit(f"error: cannot import NVIDIA's code from {path}: {e}")
    custom_ops.verbosity = "none"
    return nets


def nvidia_ops(device: torch.device) -> str:
    """Which implementation of bias_act/upfirdn2d NVIDIA's code used on ``device`` (after a forward)."""
    if device.type != "cuda":
        return "NVIDIA's reference ops (its custom ops are CUDA-only)"
    from torch_utils.ops import bias_act, upfirdn2d

    built = {"bias_act": bias_act._plugin is not None, "upfirdn2d": upfirdn2d._plugin is not None}
    if all(built.values()):
        return "NVIDIA's compiled CUDA ops (bias_act, upfirdn2d plugins)"
    failed = ", ".join(k for k, ok in built.items() if not ok)
    return f"NVIDIA's reference ops: its CUDA plugins did not build ({failed}; see the warnings above)"


@dataclass
class Comparison:
    preset: str
    device: str
    batch: int
    repeats: int
    max_abs_diff: float                       # |ours - NVIDIA's| on the same latent, const noise
    nvidia_ops: str = ""
    times: dict = field(default_factory=dict)  # mode -> impl -> [seconds per batch]
    compile_s: dict = field(default_factory=dict)  # mode -> seconds of the first compiled call

    def median(self, mode: str, impl: str) -> float | None:
        t = self.times.get(mode, {}).get(impl)
        return statistics.median(t) if t else None


def compare_with_nvidia(nets, preset: str, device: torch.device, *, batch: int, repeats: int,
                        compile_ours: bool = False, seed: int = 0) -> Comparison:
    from official_parity import official_kwargs, randomise

    from facelab.nets.official import official_to_facelab

    cfg = get_config(preset)
    torch.manual_seed(seed)
    G_nv = nets.Generator(**official_kwargs(cfg)[0]).eval()
    randomise(G_nv)  # biases, noise strengths and w_avg are 0 at init
    G = Generator(cfg).eval()
    G.load_state_dict(official_to_facelab(G_nv.state_dict()))
    G_nv, G = G_nv.to(device), G.to(device)
    with torch.no_grad():  # W+ with a different w per layer
        z = torch.randn(batch * G.num_ws, G.z_dim, device=device)
        ws = G.mapping(z, truncation_psi=0.7)[:, 0].reshape(batch, G.num_ws, G.w_dim)

    renders = {"ours": lambda w: G.synthesis(w, noise_mode="const"),
               "nvidia": lambda w: G_nv.synthesis(w, noise_mode="const", force_fp32=True)}
    owners = {"ours": G, "nvidia": G_nv}
    if compile_ours:
        renders["ours+compile"] = torch.compile(renders["ours"])
        owners["ours+compile"] = G
    with torch.no_grad():
        diff = (renders["ours"](ws) - renders["nvidia"](ws)).abs().max().item()
    res = Comparison(preset, device.type, batch, repeats, diff, nvidia_ops(device))

    def step(impl: str, mode: str):
        render = renders[impl]
        if mode == "f":
            with torch.no_grad():
                render(ws)
            return
        if mode == "wp":
            owners[impl].zero_grad(set_to_none=True)
        w = ws.clone().requires_grad_(True)
        render(w).square().mean().backward()

    for mode in MODES:
        for net in (G, G_nv):
            net.requires_grad_(mode == "wp")
        times = {impl: [] for impl in renders}
        for impl in renders:  # untimed first run: allocator, oneDNN primitives, compilation
            sync(device)
            t0 = time.perf_counter()
            step(impl, mode)
            sync(device)
            if impl == "ours+compile":
                res.compile_s[mode] = time.perf_counter() - t0
        for _ in range(repeats):  # interleaved: ours, NVIDIA's, (compiled,) ours, NVIDIA's, ...
            for impl in renders:
                sync(device)
                t0 = time.perf_counter()
                step(impl, mode)
                sync(device)
                times[impl].append(time.perf_counter() - t0)
        res.times[mode] = times
        print(f"    {MODES[mode]}: " + ", ".join(f"{k} {fmt_ms(statistics.median(v))} ms" for k, v in times.items()),
              file=sys.stderr, flush=True)
    return res


def fmt_time(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 10 else f"{fmt_ms(seconds)} ms"


def comparison_table(rows: list[Comparison]) -> str:
    """A markdown table: per mode, ours vs NVIDIA's median time per batch and the speed-up."""
    compiled = any("ours+compile" in r.times.get("f", {}) for r in rows)
    head = ["config", "batch", "runs"] + list(MODES.values())
    if compiled:
        head += [f"compiled, {m}" for m in MODES.values()]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.preset, str(r.batch), str(r.repeats)]
        for mode in MODES:
            ours, nv = r.median(mode, "ours"), r.median(mode, "nvidia")
            cells.append(f"{fmt_time(ours)} vs {fmt_time(nv)} ({nv / ours:.2f}x)")
        if compiled:
            for mode in MODES:
                c, nv = r.median(mode, "ours+compile"), r.median(mode, "nvidia")
                cells.append("-" if c is None else f"{fmt_time(c)} ({nv / c:.2f}x; compile {r.compile_s[mode]:.0f} s)")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def run_against_official(args: argparse.Namespace, devices: list[torch.device], env: dict) -> int:
    nets = import_nvidia(args.against_official)
    print(f"Ours vs NVIDIA's StyleGAN2-ADA generator ({args.against_official}), same weights, noise_mode const; "
          f"{env['threads']} torch threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rows: list[Comparison] = []
    for i, preset in enumerate(args.presets):
        batches = args.batch if args.batch is not None else [1, TRAIN_BATCH.get(preset, 16)]
        for device in devices:
            for batch in batches:
                repeats = args.repeats or default_compare_repeats(preset, batch, device)
                print(f"  {preset} on {device.type}, batch {batch}, 1 untimed + {repeats} interleaved runs each ...",
                      file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                try:
                    rows.append(compare_with_nvidia(nets, preset, device, batch=batch, repeats=repeats,
                                                    compile_ours=args.compile))
                except torch.cuda.OutOfMemoryError:
                    print(f"    out of memory at batch {batch}; skipped", file=sys.stderr)
                    continue
                print(f"    done in {time.perf_counter() - t0:.0f} s (max |ours - NVIDIA's| "
                      f"{rows[-1].max_abs_diff:.1e})", file=sys.stderr, flush=True)
    for device in devices:
        dev_rows = [r for r in rows if r.device == device.type]
        if not dev_rows:
            continue
        print(f"\n{device.type}: {dev_rows[0].nvidia_ops}; ours vs NVIDIA's, time per batch, median of "
              "`runs` interleaved runs of each (after one untimed run), speed-up = NVIDIA's / ours")
        print(comparison_table(dev_rows))
        diffs = ", ".join(f"{r.preset} b{r.batch} {r.max_abs_diff:.1e}" for r in dev_rows)
        print(f"max |ours - NVIDIA's| per image batch (same weights and latent): {diffs}")
    if args.json:
        payload = {"environment": env, "against_official": args.against_official,
                   "comparisons": [{**asdict(r), "medians_s": {m: {k: statistics.median(v) for k, v in t.items()}
                                                               for m, t in r.times.items()}}
                                   for r in rows]}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                    help="all (default): the CPU, and CUDA when available")
    ap.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=["world64", "ffhq-config-f"])
    ap.add_argument("--batch", type=int, nargs="+", default=None,
                    help="batch size: one for every preset, or one per preset "
                         "(default: 16 for world64, 1 for ffhq-config-f)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs per measurement, median reported "
                         "(default: 5 on CPU, 2 for config-f on CPU, 20 on CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 1 on CPU, 3 on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    ap.add_argument("--no-discriminator", action="store_true", help="skip the world64 discriminator")
    ap.add_argument("--smoke", action="store_true",
                    help="check every code path quickly: batch 1, 1 repeat, no warm-up (timings not meaningful)")
    ap.add_argument("--json", metavar="PATH", help="also write the results and the environment as JSON")
    ap.add_argument("--against-official", metavar="PATH",
                    help="compare with NVIDIA's StyleGAN2-ADA generator from this checkout of "
                         "NVlabs/stylegan2-ada-pytorch (not part of facelab); --batch then lists the "
                         "batch sizes for every preset (default: 1 and a training batch)")
    ap.add_argument("--compile", action="store_true",
                    help="with --against-official: also time ours under torch.compile, and its compile time")
    args = ap.parse_args(argv)
    if args.compile and not args.against_official:
        ap.error("--compile needs --against-official")
    if args.batch is not None and not args.against_official and len(args.batch) not in (1, len(args.presets)):
        ap.error(f"--batch takes one value or one per preset ({len(args.presets)}), got {len(args.batch)}")
    for name in ("repeats", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        ap.error("--warmup must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    notes = []
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        else:
            notes.append("cuda: skipped (torch.cuda.is_available() is False)")
    if not devices:
        print("\n".join(notes) + "\nnothing to benchmark", file=sys.stderr)
        return 0

    env = environment(devices)
    if args.against_official:
        return run_against_official(args, devices, env)
    print(f"facelab generator benchmark — torch {env['torch']}, CPU {env['cpu']}, {env['threads']} threads"
          + (f", GPU {env['gpu']} (CUDA {env['cuda']})" if "gpu" in env else ""))
    if args.smoke:
        print("smoke mode: batch 1, 1 repeat, no warm-up — checks the code paths, timings are not meaningful")
    for n in notes:
        print(n)

    results: list[Result] = []
    for i, preset in enumerate(args.presets):
        if args.smoke:
            batch = 1
        elif args.batch is not None:
            batch = args.batch[0] if len(args.batch) == 1 else args.batch[i]
        else:
            batch = DEFAULT_BATCH.get(preset, 1)
        for device in devices:
            repeats = 1 if args.smoke else args.repeats or default_repeats(preset, device)
            warmup = 0 if args.smoke else args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 1)
            jobs = [("G", bench_generator)]
            if preset == "world64" and not args.no_discriminator:
                jobs.append(("D", bench_discriminator))
            for net, fn in jobs:
                print(f"  {preset} {net} on {device.type}, batch {batch}, {warmup} warm-up + {repeats} timed ...",
                      file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                results.append(fn(preset, device, batch=batch, warmup=warmup, repeats=repeats))
                print(f"    done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    print()
    print(table(results))
    print("\nfwd: G.synthesis(ws, noise_mode='const') under no_grad; fwd+bwd: gradients to the W+ latent "
          "and G's weights (D: to the images and D's weights). Median of the timed runs.")

    if args.json:
        payload = {"environment": env, "notes": notes, "smoke": args.smoke,
                   "results": [{**asdict(r), "fwd_median_s": r.fwd, "fwdbwd_median_s": r.fwdbwd,
                                "fwd_per_image_s": None if r.fwd is None else r.fwd / r.batch,
                                "fwdbwd_per_image_s": None if r.fwdbwd is None else r.fwdbwd / r.batch}
                               for r in results]}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
