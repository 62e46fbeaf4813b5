"""Could the encoder's latent discriminator have told its codes from W? A probe of the shipped encoder.

    python scripts/probe_latent_disc.py [--world world64] [--faces 2000] [--steps 3716] [--lrs 2e-5,2e-4,2e-3]

The shipped encoder's card reports that e4e's latent discriminator stayed near chance for the whole
run. That can mean two things: its codes already look like ``w = f(z)`` to an MLP, or the
discriminator learns too slowly at e4e's learning rate in a run this short. This probe freezes the
shipped encoder, encodes fresh world faces, and trains fresh discriminators on those codes with the
training's own step (:func:`facelab.train.encoder._discriminator_step`: the same batch, loss and lazy
R1) for as many steps as the encoder's run, at e4e's learning rate and larger ones. It then reports
each one's balanced accuracy on held-out codes and held-out mapped ``w`` (chance: 0.5).
The encoder does not adapt here, as it would in training, so this bounds what the discriminator
could see, not what the encoder would have done about it.
"""
from __future__ import annotations

import argparse

import torch

from facelab.encoder import PRESETS, LatentDiscriminator, encode
from facelab.hub import PACKAGE_WEIGHTS, load_encoder
from facelab.train.encoder import _discriminator_step
from facelab.worlds import load_world


def codes_and_w(world, E, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``n`` fresh faces: their codes [n, num_ws, w_dim], one random open layer of each [n, w_dim],
    and ``n`` mapped w [n, w_dim] (psi 1)."""
    G, gen = world.G, torch.Generator().manual_seed(seed)
    with torch.no_grad():
        faces = G(torch.randn(n, G.z_dim, generator=gen), noise_mode="random").clamp(-1, 1)
        w = G.mapping(torch.randn(n, G.z_dim, generator=gen))[:, 0]
    ws = encode(E, faces, G=G)
    layer = torch.randint(0, E.stage, (n,), generator=gen)
    return ws, ws[torch.arange(n), layer], w


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default="world64")
    p.add_argument("--faces", type=int, default=2000, help="faces encoded for training (and a quarter held out)")
    p.add_argument("--steps", type=int, default=None, help="discriminator steps (default: the encoder's own run)")
    p.add_argument("--lrs", default="2e-5,2e-4,2e-3")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    world = load_world(args.world, device="cpu")
    E = load_encoder(PACKAGE_WEIGHTS / f"encoder_{world.name}.pt", device="cpu")
    cfg = PRESETS["cpu"]
    steps = args.steps or int(E.meta["steps"])
    train_ws, _, _ = codes_and_w(world, E, args.faces, seed=1)
    _, val_fake, val_real = codes_and_w(world, E, args.faces // 4, seed=2)
    print(f"{world.name}: encoder of {E.meta['steps']} steps, {E.stage} open layers; {args.faces} training faces, "
          f"{args.faces // 4} held out; {steps} discriminator steps, batch {cfg.batch}, R1 {cfg.r1}")
    print("| discriminator lr | held-out balanced accuracy | held-out mean abs. logit | mean loss, last 200 steps "
          "(chance 1.386) |")
    print("|---|---|---|---|")
    for lr in (float(x) for x in args.lrs.split(",")):
        torch.manual_seed(0)
        D = LatentDiscriminator(world.G.w_dim)
        opt = torch.optim.Adam(D.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(3)
        losses = []
        for step in range(steps):
            idx = torch.randint(0, train_ws.shape[0], (cfg.batch,), generator=gen)
            losses.append(_discriminator_step(D, opt, train_ws[idx], world.G, E.stage, step, cfg, gen))
        with torch.no_grad():
            real, fake = D(val_real), D(val_fake)
        acc = ((real > 0).float().mean() + (fake < 0).float().mean()) / 2
        logit = torch.cat([real, fake]).abs().mean()
        print(f"| {lr:g} | {float(acc):.3f} | {float(logit):.3f} | {sum(losses[-200:]) / len(losses[-200:]):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
