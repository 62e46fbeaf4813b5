"""Train a StyleGAN2 on faces streamed from the DCGAN teacher.

    python -m facelab.train.gan --preset world64 --out runs/world64 --minutes 120

The recipe is StyleGAN2's (Karras et al. 2020) as configured in StyleGAN2-ADA: non-saturating
logistic loss, lazy R1 on real images every ``r1_interval`` steps, lazy path-length regularisation
every ``pl_interval`` steps, style-mixing regularisation, an exponential moving average of the
generator (the one we ship), Adam with betas (0, 0.99) and the learning rate / betas adjusted for lazy
regularisation. There is no dataset on disk: every real batch is a fresh draw from the teacher, so
there is nothing to overfit and no augmentation.

Runs are resumable and exact: a checkpoint (written atomically every ``snap_kimg``) holds the
networks, optimisers, EMA, RNG states and counters; running the same command again continues the
same run, and an interrupted run resumed from a checkpoint produces the same weights as one that
never stopped. SIGTERM or Ctrl-C stop a run after its current step and write the checkpoint (exit
status 130); a second Ctrl-C stops at once, and the last snapshot stays the checkpoint. Mixed
precision (bfloat16 autocast) is used on CUDA only; the CPU path is float32.
Everything in the checkpoint is plain tensors and Python scalars, loadable with ``weights_only=True``.

Discriminators (``--disc``): ``stylegan2`` (the residual StyleGAN2 discriminator with lazy R1),
``projected`` (small heads on frozen MTCNN-ONet features, Sauer et al. 2021;
:mod:`facelab.nets.projected`), or ``both`` (their losses summed, as in Kumari et al. 2022).
``--init-from CKPT`` starts a new run from another run's generator, its EMA, its optimiser and its
counters (and its discriminator when both use one), so recipes can be compared from the same start.
``--cpu-minutes`` budgets processor time rather than wall time, which stays fair when the machine is
shared; the log and the exported generator record both.
``--commit-to DIR`` writes a compact copy of the run's checkpoint and its gzipped log into the
repository (``checkpoints/world64``); ``--export-ema FILE`` writes any checkpoint's EMA generator as
a generator file, so ``facelab.train.evaluate`` can measure it before anything ships.

Several processes (GPUs, or CPU processes with the gloo backend) train one run together under
``torchrun --standalone --nproc_per_node=N -m facelab.train.gan ...``: ``--batch`` stays the global
batch, each rank renders its own slice of it (its own teacher faces), gradients are averaged, and
rank 0 writes the checkpoints, so a run may be resumed under any N (:mod:`facelab.train.distributed`).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import io
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..hub import atomic_torch_save, atomic_write, export_generator, load_file
from ..imaging import resize, save_image
from ..nets.projected import ProjectedDiscriminator
from ..nets.stylegan2 import Discriminator, Generator, count_params, get_config, style_mix
from ..nets.teacher import load_teacher
from ..utils import Config, get_device
from .distributed import Shard, init_from_torchrun, launched_by_torchrun, leave
from .loop import run_main, stop_requests

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "facelab.gan-checkpoint/1"
DISCRIMINATORS = ("stylegan2", "projected", "both")
# Settings that may change between invocations of one run (budgets and bookkeeping, not the recipe).
INVOCATION_SETTINGS = ("kimg", "minutes", "cpu_minutes", "snap_kimg", "keep_snapshots", "channels_last")
NETWORK_STATES = ("G", "G_ema", "opt_G", "D", "opt_D", "P", "opt_P")  # what a checkpoint holds, when present
STOP_CHECK_STEPS = 10  # under data parallelism, how often the ranks agree on stopping (a host sync)


@dataclass(frozen=True)
class TrainConfig(Config):
    """Training hyperparameters. Defaults: StyleGAN2's values for the ``world64`` preset; the shipped world64
    was trained with ``disc="both"`` at batch 64, then 256 on GPUs (``checkpoints/world64/train_config.json``).

    Frozen: make variants with ``cfg.replace(...)``; ``TrainConfig.from_dict`` reads the
    ``train_config`` dict that checkpoints and ``train_config.json`` store, refusing unknown keys.
    """

    preset: str = "world64"
    batch: int = 16
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 0.2          # R1 weight; StyleGAN2-ADA's heuristic 0.0002 R^2 / batch gives 0.05
    r1_interval: int = 16
    pl_weight: float = 2.0         # path-length regularisation (0 disables)
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9      # probability of mixing two latents in a training batch
    ema_kimg: float | None = None  # EMA half-life in thousands of images; None: batch * 10 / 32 (ADA's rule)
    ema_rampup: float | None = 0.05
    kimg: float = 300.0            # stop after this many thousand real images...
    minutes: float | None = None   # ...or after this much wall time in this invocation
    cpu_minutes: float | None = None  # ...or after this much processor time in this invocation
    snap_kimg: float = 4.0         # checkpoint + sample grid interval
    seed: int = 0
    amp: bool = True               # bfloat16 autocast, CUDA only (ignored on CPU)
    disc: str = "stylegan2"        # stylegan2 | projected | both (see the module docstring)
    keep_snapshots: bool = False   # also keep every snapshot's EMA generator (for learning curves)
    channels_last: bool = False    # activations of G and the discriminators in channels_last (speed only)

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(self.betas))  # JSON gives a list
        if self.batch < 1 or self.batch % 2:
            raise ValueError(f"batch must be a positive even number (minibatch-stddev groups), got {self.batch}")
        if self.ema_kimg is None:  # StyleGAN2-ADA's: the average spans about 312 steps at any batch
            object.__setattr__(self, "ema_kimg", self.batch * 10 / 32)
        if self.disc not in DISCRIMINATORS:
            raise ValueError(f"disc must be one of {DISCRIMINATORS}, got {self.disc!r}")
        positive = {"kimg": self.kimg, "snap_kimg": self.snap_kimg, "ema_kimg": self.ema_kimg, "g_lr": self.g_lr,
                    "d_lr": self.d_lr, "r1_interval": self.r1_interval, "pl_interval": self.pl_interval,
                    "minutes": self.minutes, "cpu_minutes": self.cpu_minutes}
        for name, v in positive.items():
            if v is not None and not v > 0:  # (NaN too) kimg -1 trained nothing and wrote a random generator
                raise ValueError(f"{name} must be > 0, got {v}")
        for name, v in {"r1_gamma": self.r1_gamma, "pl_weight": self.pl_weight}.items():
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0 (0 turns it off), got {v}")
        if not 0 <= self.style_mixing <= 1:
            raise ValueError(f"style_mixing is a probability, in [0, 1]; got {self.style_mixing}")


@dataclass
class RunState:
    step: int = 0
    nimg: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    pl_mean: float = 0.0
    log: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------


def _lazy_adam(params, lr, betas, interval):
    """Adam with lr and betas rescaled for a regulariser applied every ``interval`` steps."""
    ratio = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=tuple(b ** ratio for b in betas), eps=1e-8)


class Trainer:
    """Holds the networks, optimisers and counters of one run; ``train()`` runs it."""

    def __init__(self, cfg: TrainConfig, out: str | Path, *, device=None, progress: bool = True,
                 shard: Shard | None = None):
        self.cfg, self.out = cfg, Path(out)
        self.shard = shard or Shard.current()  # every rank seeds alike: see facelab.train.distributed
        self.shard.local(cfg.batch)  # refuse a batch the ranks cannot share
        self.progress = progress and self.shard.leader
        self.device = get_device(device)
        self.amp = cfg.amp and self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        net_cfg = get_config(cfg.preset)
        self.G = Generator(net_cfg).to(self.device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.teacher = load_teacher(self.device)
        self.opt_G = _lazy_adam(self.G.parameters(), cfg.g_lr, cfg.betas, cfg.pl_interval if cfg.pl_weight else 0)
        self.D = self.opt_D = self.P = self.opt_P = None
        if cfg.disc in ("stylegan2", "both"):
            self.D = Discriminator(net_cfg).to(self.device).train()
            self.opt_D = _lazy_adam(self.D.parameters(), cfg.d_lr, cfg.betas, cfg.r1_interval)
        if cfg.disc in ("projected", "both"):
            self.P = ProjectedDiscriminator().to(self.device).train()
            self.opt_P = _lazy_adam(self.P.trainable_parameters(), cfg.d_lr, cfg.betas, 0)
        self.discs = [d for d in (self.D, self.P) if d is not None]
        if cfg.channels_last:  # NHWC: the layout tensor cores convolve in, without a transpose per layer
            self.G.synthesis.memory_format = "channels_last"
            for d in self.discs:
                d.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick each convolution's fastest kernel once
        self.state = RunState()
        self.stopped = False  # set when SIGTERM or Ctrl-C ended train() between two steps (loop.stop_requests)
        # Fixed latents for the sample grids, independent of the training RNG.
        self.grid_z = torch.randn(64, self.G.z_dim, generator=torch.Generator().manual_seed(123))

    # -- data and latents ------------------------------------------------------------------------

    # Every random draw is made for the global batch of n and sliced (Shard.randn): [n / world, ...].

    def randn(self, n: int, *shape: int) -> torch.Tensor:
        return self.shard.randn(n, *shape, device=self.device)

    def real_batch(self, n: int) -> torch.Tensor:
        """This rank's share of n fresh teacher faces: [n / world, 3, R, R]."""
        with torch.no_grad():
            z = self.randn(n, self.teacher.z_dim)
            return self.layout(resize(self.teacher(z).clamp(-1, 1), self.G.img_resolution))

    def layout(self, img: torch.Tensor) -> torch.Tensor:
        """Images in the memory layout the discriminators run in (``cfg.channels_last``)."""
        return img.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else img

    def sample_ws(self, n: int) -> torch.Tensor:
        """Latents for a training batch of n, with style mixing: [n / world, num_ws, w_dim]."""
        G = self.G
        ws = G.mapping(self.randn(n, G.z_dim))
        if self.cfg.style_mixing > 0:  # the cut is drawn on the CPU: reading a GPU draw back would sync every step
            cut = int(torch.randint(1, G.num_ws, ()))
            if float(torch.rand(())) >= self.cfg.style_mixing:
                cut = G.num_ws
            ws2 = G.mapping(self.randn(n, G.z_dim), update_w_avg=False)
            ws = style_mix(ws, ws2, cut)
        return ws

    def fakes(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents and images of a training batch of n (per-layer noise drawn like the latents)."""
        ws = self.sample_ws(n)
        noise = [self.randn(n, *shape[1:]) for shape in self.G.synthesis.noise_shapes()]
        return ws, self.G.synthesis(ws, noise=noise)

    def average_gradients(self, *modules) -> None:
        self.shard.average_gradients(p for m in modules for p in m.parameters())

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def logits(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Every discriminator's logits for images [N, 3, R, R]: [N, 1] (StyleGAN2) and/or [N, P]."""
        img = self.layout(img)
        return [d(img) for d in self.discs]

    def set_training(self, *, generator: bool) -> None:
        """Gradients for the generator's step or for the discriminators' step, never both."""
        self.G.requires_grad_(generator)
        for d in self.discs:
            d.requires_grad_(not generator)

    # -- one training step -------------------------------------------------------------------------

    def step(self) -> dict:
        """One training step; returns its losses and logits as 0-d tensors on the device.

        Nothing here reads a value back to the host except the path-length mean (every
        ``pl_interval`` steps), so on a GPU the host queues the next kernels while the device
        still runs these; ``train()`` converts the statistics with ``float()`` only when it logs.
        """
        cfg, st = self.cfg, self.state
        G, D = self.G, self.D
        opts_d = [o for o in (self.opt_D, self.opt_P) if o is not None]
        n = cfg.batch
        stats = {}

        # Generator: non-saturating logistic loss, softplus(-D(G(z))), summed over discriminators.
        self.set_training(generator=True)
        with self.autocast():
            _, fake = self.fakes(n)
            loss_g = sum(F.softplus(-logits).mean() for logits in self.logits(fake))
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.average_gradients(G)
        self.opt_G.step()
        stats["loss_g"] = loss_g.detach()

        # Lazy path-length regularisation: keep |J_w^T y| constant for random image-space y.
        if cfg.pl_weight > 0 and st.step % cfg.pl_interval == 0:
            world = self.shard.world
            m = -(-max(n // cfg.pl_batch_shrink, 1) // world) * world  # a multiple of the ranks
            ws, img = self.fakes(m)
            y = self.randn(m, *img.shape[1:]) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()  # [m / world]
            batch_mean = self.shard.average_(lengths.detach().mean()).item()
            st.pl_mean = st.pl_mean + cfg.pl_decay * (batch_mean - st.pl_mean)
            loss_pl = (lengths - st.pl_mean).square().mean() * cfg.pl_weight * cfg.pl_interval
            self.opt_G.zero_grad(set_to_none=True)
            loss_pl.backward()
            self.average_gradients(G)
            self.opt_G.step()
            stats["loss_pl"] = loss_pl.detach()

        # Discriminators: softplus(D(fake)) + softplus(-D(real)); their parameters are disjoint, so
        # one backward pass of the summed loss gives each its own gradient.
        self.set_training(generator=False)
        real = self.real_batch(n)
        with torch.no_grad(), self.autocast():
            _, fake = self.fakes(n)
        with self.autocast():
            logits_fake, logits_real = self.logits(fake.float()), self.logits(real)
            loss_d = sum(F.softplus(f).mean() + F.softplus(-r).mean() for f, r in zip(logits_fake, logits_real))
        for opt in opts_d:
            opt.zero_grad(set_to_none=True)
        loss_d.backward()
        self.average_gradients(*self.discs)
        for opt in opts_d:
            opt.step()
        stats["loss_d"] = loss_d.detach()
        for prefix, f, r in zip(("d" if D is not None else "p", "p"), logits_fake, logits_real):
            stats[f"{prefix}_real"] = r.detach().float().mean()
            stats[f"{prefix}_fake"] = f.detach().float().mean()

        # Lazy R1 (StyleGAN2 discriminator only): gamma/2 * |grad_x D(x)|^2 on real images, in float32.
        if D is not None and cfg.r1_gamma > 0 and st.step % cfg.r1_interval == 0:
            real = real.detach().requires_grad_(True)
            logits = D(real)
            (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3))
            loss_r1 = (r1 * (cfg.r1_gamma / 2)).mean() * cfg.r1_interval
            self.opt_D.zero_grad(set_to_none=True)
            loss_r1.backward()
            self.average_gradients(D)
            self.opt_D.step()
            stats["r1"] = r1.detach().mean()

        self.shard.average_(G.mapping.w_avg)  # a linear running mean: the ranks' average is the global one
        self.update_ema()  # the ramp-up uses the image count before this step, as in StyleGAN2-ADA
        st.step += 1
        st.nimg += n
        return stats

    @torch.no_grad()
    def update_ema(self):
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.state.nimg * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        nets = {k: _lean(getattr(self, k).state_dict()) if k.startswith("opt") else getattr(self, k).state_dict()
                for k in NETWORK_STATES if getattr(self, k) is not None}
        if "P" in nets:  # the frozen ONet comes from facenet-pytorch: only the heads are state
            nets["P"] = {k: v for k, v in nets["P"].items() if not k.startswith("features.")}
        return {"format": CHECKPOINT_FORMAT, "train_config": self.cfg.to_dict(), "net_config": self.G.cfg.to_dict(),
                **nets, "state": asdict(self.state), "rng": rng}

    def save(self) -> Path:
        path = self.out / CHECKPOINT
        atomic_torch_save(self.state_dict(), path)
        return path

    def load(self, path: str | Path, *, warm_start: bool = False) -> None:
        """Resume this run from ``path``; or, with ``warm_start``, begin a new run from its generator.

        A warm start takes the generator, its EMA, its optimiser, the counters and the RNG state, and
        the StyleGAN2 discriminator (with its optimiser) when both runs have one; a projected
        discriminator the checkpoint lacks starts fresh.
        """
        ckpt = load_file(path)
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a facelab GAN checkpoint (format {ckpt.get('format')!r})")
        if ckpt["net_config"] != self.G.cfg.to_dict():
            raise ValueError(f"{path} was trained with preset {ckpt['train_config']['preset']!r} "
                             f"and a different network; pass --preset {ckpt['train_config']['preset']} "
                             "or use a new --out directory")
        for k in NETWORK_STATES:
            target = getattr(self, k)
            if target is None:
                continue
            if k not in ckpt:
                if warm_start:
                    continue
                raise ValueError(f"{path} has no {k!r} state: it was trained with --disc "
                                 f"{ckpt['train_config'].get('disc', 'stylegan2')}; repeat that flag, or "
                                 "use --init-from with a new --out directory")
            if k.startswith("opt"):
                target.load_state_dict(_unlean(ckpt[k]))
            elif k == "P":
                missing, unexpected = target.load_state_dict(ckpt[k], strict=False)
                if unexpected or any(not m.startswith("features.") for m in missing):
                    raise ValueError(f"{path}: projected discriminator state does not match "
                                     f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
            else:
                target.load_state_dict(ckpt[k])
        self.state = RunState(**ckpt["state"])
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(_numpy_state_from(rng["numpy"]))
        random.setstate(_python_state_from(rng["python"]))
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # -- the loop ----------------------------------------------------------------------------------

    def snapshot(self) -> None:
        """Checkpoint, sample grid from the EMA generator, and the exported EMA generator."""
        kimg = self.state.nimg / 1000
        self.save()  # first: nothing after it can lose the checkpoint
        export_generator(self.G_ema, self.out / "generator.pt", meta=self.meta())
        if self.cfg.keep_snapshots:
            export_generator(self.G_ema, self.out / "snapshots" / f"generator-{kimg:08.2f}kimg.pt", meta=self.meta())
        with torch.no_grad():
            img = torch.cat([self.G_ema(z.to(self.device), noise_mode="const").cpu()
                             for z in self.grid_z.split(16)])
        # a generator's raw output overshoots [-1, 1] (an untrained one by far); the grid shows it clamped
        save_image(img.clamp(-1, 1), self.out / "samples" / f"grid-{kimg:08.2f}kimg.png", nrow=8)

    def meta(self) -> dict:
        st = self.state
        return {"kimg": round(st.nimg / 1000, 3), "steps": st.step, "train_seconds": round(st.seconds, 1),
                "train_cpu_seconds": round(st.cpu_seconds, 1),
                "device": _device_name(self.device), "preset": self.cfg.preset,
                "train_config": self.cfg.to_dict(), "torch": str(torch.__version__)}

    def train(self, *, max_steps: int | None = None) -> RunState:
        """Train until ``cfg.kimg``, or this invocation's ``cfg.minutes``, ``cfg.cpu_minutes`` or ``max_steps``."""
        cfg, st, leader = self.cfg, self.state, self.shard.leader
        if leader:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            _trim_log(self.out / "log.jsonl", st.step)
        log_file = open(self.out / "log.jsonl", "a") if leader else None
        start, cpu_start, steps_here = time.time(), time.process_time(), 0
        next_snap = (math.floor(st.nimg / 1000 / cfg.snap_kimg) + 1) * cfg.snap_kimg
        total_steps = math.ceil(cfg.kimg * 1000 / cfg.batch)
        bar = _progress(total=total_steps, initial=st.step, enabled=self.progress)
        with stop_requests() as stop, contextlib.ExitStack() as closing:
            closing.callback(bar.close)
            if log_file is not None:
                closing.callback(log_file.close)
            # a second Ctrl-C raises KeyboardInterrupt inside a step: no snapshot of its half-taken update
            while st.nimg < cfg.kimg * 1000:
                if max_steps is not None and steps_here >= max_steps:
                    break
                out_of_time = (cfg.minutes is not None and time.time() - start > cfg.minutes * 60
                               or cfg.cpu_minutes is not None and time.process_time() - cpu_start > cfg.cpu_minutes * 60)
                # every rank stops on one step; with several, they agree only every STOP_CHECK_STEPS steps
                # (the same steps on all: st.step is shared), as each agreement waits for the device
                if ((self.shard.world == 1 or st.step % STOP_CHECK_STEPS == 0)
                        and self.shard.any(out_of_time or stop["now"], device=self.device)):
                    self.stopped = self.shard.any(stop["now"], device=self.device)  # not the clock: a signal
                    break
                t0, c0 = time.time(), time.process_time()
                stats = self.step()
                st.seconds += time.time() - t0
                st.cpu_seconds += time.process_time() - c0
                steps_here += 1
                # steps 1, 11, 21, ...: each follows a step index divisible by 10, as the lazy R1 and path-length
                # steps are (every r1_interval and pl_interval), so the log records them too
                if log_file is not None and st.step % 10 == 1:
                    rec = {"step": st.step, "kimg": round(st.nimg / 1000, 3), "sec": round(st.seconds, 1),
                           "cpu": round(st.cpu_seconds, 1),
                           **{k: round(float(v), 4) for k, v in stats.items()}}
                    log_file.write(json.dumps(rec) + "\n")
                    log_file.flush()
                    bar.set_postfix(kimg=f"{rec['kimg']:.1f}", g=f"{rec['loss_g']:.2f}", d=f"{rec['loss_d']:.2f}")
                bar.update(1)
                if st.nimg / 1000 >= next_snap:
                    if leader:
                        self.snapshot()
                    next_snap += cfg.snap_kimg
        if leader:  # the ranks hold the same weights after every finished step
            self.snapshot()
            if self.stopped:
                print(f"\nstopped at step {st.step}: checkpoint written; rerun the same command to continue")
        return st


# ---------------------------------------------------------------------------------------------
# Lean optimiser states. With beta1 = 0 (StyleGAN2's Adam), Adam's first moment is just the last
# gradient: the next step overwrites it exactly (lerp with weight 1 returns its end point), so it
# need not be saved. Dropping it halves the optimiser state and keeps resumption bitwise exact.


def _lean(opt_state: dict) -> dict:
    if any(g.get("betas", (1.0,))[0] != 0 for g in opt_state["param_groups"]):
        return opt_state
    state = {i: {k: v for k, v in st.items() if k != "exp_avg"} for i, st in opt_state["state"].items()}
    return {**opt_state, "state": state}


def _unlean(opt_state: dict) -> dict:
    state = {i: {**st, "exp_avg": st["exp_avg"] if "exp_avg" in st else torch.zeros_like(st["exp_avg_sq"])}
             for i, st in opt_state["state"].items()}
    return {**opt_state, "state": state}


# ---------------------------------------------------------------------------------------------
# The committed checkpoint. A run's own checkpoints are exact; the one kept in the repository (and
# sent to a lent GPU, which receives at most 64 MiB of working tree) is compact: the EMA generator
# (the product) and the projected heads stay float32, while the raw G and D are rounded to float16
# (their weights lie well inside its range) and Adam's second moments, squared gradients far too
# small for float16, to bfloat16. Resuming from it is therefore close, not bitwise: the rounding
# moves each weight by about one Adam step (commit_checkpoint prints both), which training absorbs.

COMPACT = {"G": torch.float16, "D": torch.float16,
           "opt_G": torch.bfloat16, "opt_D": torch.bfloat16, "opt_P": torch.bfloat16}


def compact_state(ckpt: dict) -> dict:
    """A checkpoint with G, D and the optimiser moments rounded as above; marked ``compact``."""
    def cast(x, dtype):
        if isinstance(x, torch.Tensor):
            return x.to(dtype) if x.is_floating_point() and x.ndim > 0 else x
        return {k: cast(v, dtype) for k, v in x.items()} if isinstance(x, dict) else x

    return {**ckpt, **{k: cast(ckpt[k], dtype) for k, dtype in COMPACT.items() if k in ckpt},
            "compact": {k: str(dtype) for k, dtype in COMPACT.items()}}


COMMITTED_LOG = "log.jsonl.gz"


def commit_checkpoint(run_dir: str | Path, dest: str | Path) -> dict:
    """Write a compact copy of ``run_dir``'s checkpoint, with its log and config, into ``dest``."""
    run_dir, dest = Path(run_dir), Path(dest)
    ckpt = load_file(run_dir / CHECKPOINT)
    small = compact_state(ckpt)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(small, dest / CHECKPOINT)
    # From the checkpoint itself: a run folder brought back from a GPU may lack train_config.json.
    (dest / "train_config.json").write_text(json.dumps(ckpt["train_config"], indent=2))
    _append_log(run_dir / "log.jsonl", dest)
    g, g16 = ckpt["G"], small["G"]
    floats = [k for k, v in g.items() if v.is_floating_point() and v.ndim > 0]
    rounding = torch.cat([(g16[k].float() - g[k]).abs().flatten() for k in floats]).mean().item()
    lr = ckpt["opt_G"]["param_groups"][0]["lr"]
    return {"path": dest / CHECKPOINT, "mib": (dest / CHECKPOINT).stat().st_size / 2 ** 20,
            "rounding": rounding, "adam_step": lr}


def export_ema(path: str | Path, dest: str | Path, *, raw: bool = False) -> Path:
    """Write checkpoint ``path``'s EMA generator as a facelab generator file at ``dest`` (what
    ``facelab.train.evaluate`` and ``load_generator`` read), so any checkpoint, the committed compact
    one included (its EMA is kept in float32), can be measured without training on. ``raw``: the
    generator training optimises instead of its average (float16-rounded in a compact checkpoint;
    ``scripts/probe_ema.py`` measures what the average buys)."""
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a facelab GAN checkpoint; pass a run's or checkpoints/world64's checkpoint.pt")
    trainer = Trainer(TrainConfig.from_dict(ckpt["train_config"]), Path(dest).parent, device="cpu", progress=False)
    trainer.load(path)
    # a checkpoint carries on across runs and machines; its history (beside it) says which ran where
    meta = {**trainer.meta(), "device": f"several devices (the history beside {path})", "exported_from": str(path)}
    if raw:
        meta["exported_from"] += " (its raw G, not the EMA)"
    return export_generator(trainer.G if raw else trainer.G_ema, dest, meta=meta)


def _trim_log(path: Path, step: int) -> None:
    """Drop the lines of a run's log past ``step``, where training (re)starts: the steps a crashed run
    took after its last snapshot are taken again, and a fresh run (step 0) starts a fresh log."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) < len(lines):
        atomic_write(path, "".join(line + "\n" for line in kept))


def _append_log(src: Path, dest: Path) -> None:
    """Make the gzip log in ``dest`` the history of the checkpoint committed beside it: its lines
    before ``src``'s first step, then ``src``'s. A run that continues the committed one only adds
    lines; a run warm-started from an *earlier* state (a branch) replaces the abandoned lines from its
    first step on, which stay in git history (it says how many). Gzip keeps the tracked tree small
    (the log grows with every committed run); a plain ``log.jsonl`` left by an older commit is folded
    in and removed."""
    if not src.exists():
        return
    old = read_committed_log(dest)
    new = [line for line in src.read_text().splitlines() if line]
    first = json.loads(new[0])["step"] if new else math.inf
    kept = [line for line in old if json.loads(line)["step"] < first]
    ours = set(new)
    abandoned = [line for line in old[len(kept):] if line not in ours]
    if abandoned:
        print(f"log: this run's history leaves the committed one at step {json.loads(abandoned[0])['step']}; "
              f"{len(abandoned)} committed lines of the abandoned branch are replaced by its own (git history "
              "keeps them)")
    text = "".join(line + "\n" for line in kept + new).encode()
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as z:
        z.write(text)  # mtime=0 and no name: the same lines give the same bytes
    atomic_write(dest / COMMITTED_LOG, packed.getvalue())
    (dest / "log.jsonl").unlink(missing_ok=True)


def read_committed_log(dest: str | Path) -> list[str]:
    """The lines of a committed log (``log.jsonl.gz``, or a plain ``log.jsonl`` from before it)."""
    dest = Path(dest)
    if (dest / COMMITTED_LOG).exists():
        return gzip.decompress((dest / COMMITTED_LOG).read_bytes()).decode().splitlines()
    if (dest / "log.jsonl").exists():
        return (dest / "log.jsonl").read_text().splitlines()
    return []


# ---------------------------------------------------------------------------------------------
# RNG states as tensors / plain Python values, so checkpoints load with weights_only=True.


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from(d: dict):
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_state_from(s: list):
    return (s[0], tuple(s[1]), s[2])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------


def check_same_settings(ckpt: Path, cfg: TrainConfig) -> None:
    """Refuse to resume ``ckpt`` with a recipe other than its own (the invocation's budgets may change)."""
    saved = TrainConfig.from_dict(load_file(ckpt)["train_config"])  # keys it lacks take today's defaults
    changed = {k: (getattr(saved, k), v) for k, v in cfg.to_dict().items()
               if k not in INVOCATION_SETTINGS and getattr(saved, k) != v}
    if changed:
        raise ValueError(f"{ckpt} was trained with different settings {changed}; "
                         "repeat the original flags to resume, or pass --fresh / a new --out")


def train(out: str | Path, config: TrainConfig | None = None, *, device=None, resume: bool = True,
          init_from: str | Path | None = None, max_steps: int | None = None, progress: bool = True) -> Trainer:
    """Train (or resume, if ``out/checkpoint.pt`` exists and ``resume``) and return the trainer.

    ``init_from``: a checkpoint to warm-start a *new* run from (see ``Trainer.load``); ignored when
    the run is resumed from its own checkpoint.
    """
    cfg = config or TrainConfig()
    ckpt = Path(out) / CHECKPOINT
    if resume and ckpt.exists():
        check_same_settings(ckpt, cfg)
    trainer = Trainer(cfg, out, device=device, progress=progress)
    if not resume and ckpt.exists() and trainer.shard.leader:
        # the new run starts its log and config now: an old checkpoint left until the first snapshot would
        # be resumed by a plain rerun after a kill, with the new run's log and config beside it
        ckpt.unlink()
        print(f"fresh run: the earlier checkpoint in {out} is replaced (its log starts again)", flush=True)
    if resume and ckpt.exists():
        if init_from is not None and trainer.shard.leader:
            print(f"resuming {ckpt}: --init-from {init_from} starts new runs only, and is not used")
        trainer.load(ckpt)
    elif init_from is not None:
        trainer.load(init_from, warm_start=True)
    trainer.train(max_steps=max_steps)
    return trainer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m facelab.train.gan", description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    p.add_argument("--out", required=True, help="run directory (checkpoint, samples, log, generator.pt)")
    p.add_argument("--preset", default=defaults.preset, help="network preset (world64, tiny, ...)")
    p.add_argument("--kimg", type=float, default=defaults.kimg, help="total thousands of real images")
    p.add_argument("--minutes", type=float, default=None, help="stop this invocation after N minutes")
    p.add_argument("--cpu-minutes", type=float, default=None, help="stop this invocation after N minutes of CPU time")
    p.add_argument("--disc", choices=DISCRIMINATORS, default=defaults.disc, help="discriminator(s) (default stylegan2)")
    p.add_argument("--init-from", default=None, help="start a new run from this checkpoint's generator")
    p.add_argument("--keep-snapshots", action="store_true", help="keep every snapshot's EMA generator")
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--lr", type=float, default=defaults.g_lr, help="G and D learning rate")
    p.add_argument("--r1-gamma", type=float, default=defaults.r1_gamma)
    p.add_argument("--pl-weight", type=float, default=defaults.pl_weight)
    p.add_argument("--ema-kimg", type=float, default=None,
                   help="EMA half-life in thousands of images (default: batch * 10 / 32, StyleGAN2-ADA's rule)")
    p.add_argument("--snap-kimg", type=float, default=defaults.snap_kimg)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: FACELAB_DEVICE or best available)")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA too")
    p.add_argument("--channels-last", action="store_true",
                   help="run G's and the discriminators' activations in channels_last (speed only; "
                        "bench/train_step.py --layouts says whether it pays on this device)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--commit-to", default=None, metavar="DIR",
                   help="no training: write a compact copy of --out's checkpoint, log and config to DIR")
    p.add_argument("--export-ema", default=None, metavar="FILE",
                   help="no training: write the EMA generator of --out's checkpoint to FILE (for evaluate)")
    a = p.parse_args(argv)
    if a.export_ema:
        if not (Path(a.out) / CHECKPOINT).is_file():
            raise SystemExit(f"error: no {CHECKPOINT} in {a.out}; --out must be a run directory or checkpoints/world64")
        path = export_ema(Path(a.out) / CHECKPOINT, a.export_ema)
        print(f"wrote {path}: the EMA generator at {load_file(path)['meta']['kimg']} kimg")
        return
    if a.commit_to:
        stats = commit_checkpoint(a.out, a.commit_to)
        print(f"wrote {stats['path']}: {stats['mib']:.1f} MiB; float16 rounding of G, mean "
              f"{stats['rounding']:.2e} vs Adam's step size (lr) {stats['adam_step']:.2e}")
        return
    cfg = TrainConfig(preset=a.preset, batch=a.batch, g_lr=a.lr, d_lr=a.lr, r1_gamma=a.r1_gamma,
                      pl_weight=a.pl_weight, ema_kimg=a.ema_kimg, kimg=a.kimg, minutes=a.minutes,
                      snap_kimg=a.snap_kimg, seed=a.seed, amp=not a.no_amp, cpu_minutes=a.cpu_minutes,
                      disc=a.disc, keep_snapshots=a.keep_snapshots, channels_last=a.channels_last)
    ckpt = Path(a.out) / CHECKPOINT
    if ckpt.exists() and not a.fresh:
        saved = TrainConfig.from_dict(load_file(ckpt)["train_config"])  # keys it lacks take today's defaults
        if a.ema_kimg is None:  # a resume keeps its run's EMA half-life (runs before 2026-12-07 stored 5.0)
            cfg = cfg.replace(ema_kimg=saved.ema_kimg)
    device = init_from_torchrun(a.device) if launched_by_torchrun() else a.device
    shard = Shard.current()
    if shard.leader:
        ranks = f" x {shard.world} processes (batch {cfg.batch // shard.world} each)" if shard.world > 1 else ""
        print(f"facelab.train.gan: preset {cfg.preset}, G {count_params(Generator(cfg.preset)):,} params, "
              f"device {get_device(device)}{ranks}, out {a.out}" + (" (resuming)" if ckpt.exists() and not a.fresh else ""))
    trainer = None  # SIGTERM or Ctrl-C stop training after its current step (loop.stop_requests)
    try:
        trainer = train(a.out, cfg, device=device, resume=not a.fresh, init_from=a.init_from)
    except (FileNotFoundError, ValueError) as e:  # a missing or mismatched --init-from, a bad --preset
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:  # a second Ctrl-C, inside a step: the last snapshot stays the checkpoint
        raise SystemExit(130) from None
    finally:
        leave(wait=trainer is not None)
    st = trainer.state
    if trainer.stopped:
        raise SystemExit(130)
    if not trainer.shard.leader:
        return
    print(f"done: {st.step} steps, {st.nimg / 1000:.1f} kimg, {st.seconds / 60:.1f} min of training; "
          f"EMA generator at {Path(a.out) / 'generator.pt'}")


if __name__ == "__main__":
    run_main(main)
