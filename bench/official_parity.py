"""Numerical parity of facelab's StyleGAN2 with NVIDIA's StyleGAN2-ADA reference code.

NVIDIA's code is not part of facelab (different licence); point this script at a checkout of
https://github.com/NVlabs/stylegan2-ada-pytorch that you obtained yourself:

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/sg2ada
    python bench/official_parity.py --official-repo /tmp/sg2ada            # 64 px and 1024 px
    python bench/official_parity.py --official-repo /tmp/sg2ada --preset world64

For each preset it builds the official G and D (fp32, no custom CUDA ops needed on CPU), randomises
every parameter and buffer (biases, noise strengths and w_avg are 0 at init, which would hide
bugs), copies them into facelab's networks through :func:`facelab.nets.official.official_to_facelab`
and prints the max abs difference of: mapping ws (psi 1, psi 0.7 with cutoff 8, psi 0.7 all
layers); synthesis of a W+ latent with a different w per layer, noise_mode const / none / random
(same seed) against the official fused and non-fused modulated convolution; D logits; and the same
after the way back through :func:`facelab_to_official` into a fresh official network. Exits 1 if a
difference exceeds ``--tol`` (relative to the largest official output magnitude).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

from facelab.nets.official import facelab_to_official, official_to_facelab
from facelab.nets.stylegan2 import Discriminator, Generator, StyleGAN2Config, get_config


def import_official(repo: Path):
    """Import ``training.networks`` from an official StyleGAN2-ADA checkout (fails clearly)."""
    if not (repo / "training" / "networks.py").is_file() or not (repo / "torch_utils").is_dir():
        sys.exit(f"error: --official-repo {repo} is not a stylegan2-ada-pytorch checkout "
                 "(no training/networks.py or torch_utils/); clone "
                 "https://github.com/NVlabs/stylegan2-ada-pytorch and pass its path")
    sys.path.insert(0, str(repo.resolve()))
    return importlib.import_module("training.networks")


def official_kwargs(cfg: StyleGAN2Config) -> tuple[dict, dict]:
    """Constructor kwargs of the official Generator and Discriminator equivalent to ``cfg``."""
    g = dict(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
             img_channels=cfg.img_channels,
             mapping_kwargs=dict(num_layers=cfg.mapping_layers, lr_multiplier=cfg.mapping_lr_multiplier,
                                 w_avg_beta=cfg.w_avg_beta),
             synthesis_kwargs=dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                   num_fp16_res=0, conv_clamp=cfg.conv_clamp))
    d = dict(c_dim=0, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels,
             architecture="resnet", channel_base=cfg.channel_base, channel_max=cfg.channel_max,
             num_fp16_res=0, conv_clamp=cfg.conv_clamp,
             epilogue_kwargs=dict(mbstd_group_size=cfg.mbstd_group_size,
                                  mbstd_num_channels=cfg.mbstd_num_channels))
    return g, d


@torch.no_grad()
def randomise(net: torch.nn.Module) -> None:
    """Give every zero-initialised tensor (biases, noise strengths, w_avg) a random value."""
    for name, t in net.state_dict().items():
        if name.endswith("resample_filter") or name.endswith(".weight") or name.endswith("const"):
            continue
        t.add_(0.2 * torch.randn_like(t))


def check(results: list, name: str, ours: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    diff = (ours.double() - ref.double()).abs().max().item()
    scale = ref.abs().max().item()
    ok = diff <= tol * max(scale, 1.0)
    results.append(ok)
    print(f"  {name:<56s} max|diff| {diff:.3e}   max|ref| {scale:9.3e}   {'ok' if ok else 'FAIL'}", flush=True)


@torch.no_grad()
def run(nets, preset: str, batch: int, seed: int, tol: float, **overrides) -> list[bool]:
    cfg = get_config(preset, **overrides)
    g_kw, d_kw = official_kwargs(cfg)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    G_ref = nets.Generator(**g_kw).eval()
    D_ref = nets.Discriminator(**d_kw).eval()
    randomise(G_ref)
    randomise(D_ref)
    G = Generator(cfg).eval()
    D = Discriminator(cfg).eval()
    G.load_state_dict(official_to_facelab(G_ref.state_dict(), which="G"))
    D.load_state_dict(official_to_facelab(D_ref.state_dict(), which="D"))
    n_g, n_d = len(G_ref.state_dict()), len(D_ref.state_dict())
    print(f"{preset}: {cfg.img_resolution} px, conv_clamp {cfg.conv_clamp}, num_ws {G.num_ws}; official G {n_g} keys -> facelab "
          f"{len(G.state_dict())}, D {n_d} -> {len(D.state_dict())} (built in {time.perf_counter() - t0:.1f} s)")

    res: list[bool] = []
    c = torch.zeros(batch, 0)
    z = torch.randn(batch, cfg.z_dim)
    check(res, "mapping ws, psi 1", G.mapping(z), G_ref.mapping(z, c), tol)
    check(res, "mapping ws, psi 0.7 cutoff 8",
          G.mapping(z, truncation_psi=0.7, truncation_cutoff=8),
          G_ref.mapping(z, c, truncation_psi=0.7, truncation_cutoff=8), tol)
    check(res, "mapping ws, psi 0.7 all layers", G.mapping(z, truncation_psi=0.7),
          G_ref.mapping(z, c, truncation_psi=0.7), tol)

    # W+ with a different w in every layer, so a wrong ws index would show.
    zs = torch.randn(batch * G.num_ws, cfg.z_dim)
    ws = G_ref.mapping(zs, torch.zeros(len(zs), 0), truncation_psi=0.7)[:, 0].reshape(batch, G.num_ws, -1)
    img = None
    for mode in ("const", "none", "random"):
        torch.manual_seed(seed + 1)
        ours = G.synthesis(ws, noise_mode=mode)
        for fused in (True, False):
            torch.manual_seed(seed + 1)
            ref = G_ref.synthesis(ws, noise_mode=mode, force_fp32=True, fused_modconv=fused)
            check(res, f"synthesis noise={mode}, official fused={fused}", ours, ref, tol)
        img = ref if mode == "const" else img
    check(res, "D logits (on the const-noise images)", D(img), D_ref(img, torch.zeros(batch, 0)), tol)
    x = torch.randn(batch, cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
    check(res, "D logits (on N(0,1) images)", D(x), D_ref(x, torch.zeros(batch, 0)), tol)

    # The way back: facelab -> official into fresh official networks (strict load).
    G_back = nets.Generator(**g_kw).eval()
    D_back = nets.Discriminator(**d_kw).eval()
    G_back.load_state_dict(facelab_to_official(G.state_dict(), which="G"))
    D_back.load_state_dict(facelab_to_official(D.state_dict(), which="D"))
    check(res, "round trip: official G(const) after facelab_to_official",
          G_back.synthesis(ws, noise_mode="const", force_fp32=True), G.synthesis(ws, noise_mode="const"), tol)
    check(res, "round trip: official D after facelab_to_official",
          D_back(x, torch.zeros(batch, 0)), D(x), tol)
    print(f"  ({time.perf_counter() - t0:.1f} s)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official-repo", type=Path, required=True,
                    help="path of a stylegan2-ada-pytorch checkout (not part of facelab)")
    ap.add_argument("--preset", action="append", choices=["world64", "ffhq-config-f", "tiny"],
                    help="networks to compare (repeatable; default world64 and ffhq-config-f)")
    ap.add_argument("--batch", type=int, default=2, help="batch size (>= 2 exercises minibatch std)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conv-clamp", type=float, default=None,
                    help="override conv_clamp (e.g. 256 as in ADA's fp16 configs, or 0.5 to exercise it)")
    ap.add_argument("--tol", type=float, default=1e-4, help="allowed max|diff| / max(max|ref|, 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets = import_official(args.official_repo)
    ok: list[bool] = []
    for preset in args.preset or ["world64", "ffhq-config-f"]:
        overrides = {} if args.conv_clamp is None else {"conv_clamp": args.conv_clamp}
        ok += run(nets, preset, args.batch, args.seed, args.tol, **overrides)
    print(f"{sum(ok)}/{len(ok)} comparisons within tolerance {args.tol:g}")
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
