"""What limits how far InterFaceGAN's W edits move the teacher: the labeler, the fit or the world?

    OMP_NUM_THREADS=1 python scripts/edit_bottleneck.py labelers [--labels runs/build/world64/labels] [--n 200] [--C 1]
    OMP_NUM_THREADS=1 python scripts/edit_bottleneck.py sweep-c [--scores runs/build/world64/boundary-labels] \
        [--C 1,0.1,0.01,0.001] [--n 100 --seed 7]

**labelers**:
The shipped boundaries are fitted on H's scores of 100 000 fresh latents. The build's label stage
already holds the *teacher's* labels of tens of thousands of faces of the same generator, and their
W codes can be recovered without rendering (:func:`facelab.train.regressor.chunk_draws`). So on the
same codes this fits one boundary per attribute twice, by the same recipe as the shipped ones
(:func:`facelab.interpret.train_boundary`: top and bottom 2 %, linear SVM): once on H's scores of
those faces and once on the teacher's; and, beside them, the least-squares direction of the
teacher's scores (every labelled face, not only the extremes). H was trained on most of these
faces, so its scores here are as close to the teacher's as they get. Every direction is then judged
exactly as the targets judge the shipped normals (:func:`facelab.train.targets.edit_claims`: the
same fresh faces, +-2 distance std, the change in teacher std), with one common step unit: each
direction's distance std is measured over W latents at psi = 1, the stream the shipped boundaries
were fitted on (the labelled faces are truncated, psi in [psi_min, 1]).

Reading it: if the teacher-fitted normals move the teacher much more than the H-fitted ones on the
same codes, H is the bottleneck; if not, the labeler is not, and the weakness lies in the world (how
linearly W carries the attribute) or in what the SVM's normal measures. The cosines between the
directions say how far apart they are. The comparison is tilted: the teacher-fitted rows are judged
by the labelers they were fitted on (no other judge exists offline), which favours them, since a fit
can follow its judge's own noise. So "H is the bottleneck" would need a wide gap; the teacher-fitted
rows doing no better is the safer reading.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facelab import claims as C  # noqa: E402
from facelab import interpret as I  # noqa: E402
from facelab.hub import load_file, load_regressor, sha256_file, weights_path, weights_sha256  # noqa: E402
from facelab.nets.regressor import OUTPUTS  # noqa: E402
from facelab.train.regressor import CHUNK, chunk_draws, drawn_from, generator_key, load_chunks, predict  # noqa: E402
from facelab.train.targets import EDITED, PATTERN_CODES, edit_claims  # noqa: E402
from facelab.worlds import load_world  # noqa: E402


@torch.no_grad()
def label_set_codes(G, labels: Path, n: int) -> torch.Tensor:
    """The W codes [n, w_dim] of the first ``n`` faces in a label stage's folder."""
    stamp = drawn_from(labels)
    codes = []
    for i in range(math.ceil(n / CHUNK)):
        z, psi = chunk_draws(i, G.z_dim, psi_min=stamp["psi_min"], seed=stamp["seed"])
        w = G.mapping(z, truncation_psi=1.0)[:, 0]
        codes.append(G.mapping.w_avg.lerp(w, psi[:, None]))
    return torch.cat(codes)[:n]


def in_stream_units(b: I.Boundary, w_stream: torch.Tensor) -> I.Boundary:
    """``b`` with its distance std measured over ``w_stream`` (the edit step's unit)."""
    std = float((w_stream @ b.normal).std())
    return dataclasses.replace(b, report=dataclasses.replace(b.report, distance_std=std))


def least_squares(w: torch.Tensor, scores: torch.Tensor, attribute: str, w_stream: torch.Tensor) -> I.Boundary:
    """The unit direction of the least-squares fit of ``scores`` on ``w`` (labelled rows), as a boundary."""
    ok = ~torch.isnan(scores)
    x, y = w[ok].double(), scores[ok].double()
    x = x - x.mean(0)
    beta = torch.linalg.lstsq(x, y - y.mean()).solution
    normal = (beta / beta.norm()).float()
    fitted = float(torch.corrcoef(torch.stack([x @ beta, y]))[0, 1])
    nan = math.nan
    report = I.BoundaryReport(n_samples=int(ok.sum()), n_invalid=int((~ok).sum()), n_chosen=0, n_train=0, n_val=0,
                              train_accuracy=nan, val_accuracy=nan, remaining_accuracy=nan, all_accuracy=nan,
                              threshold=nan, score_correlation=fitted, distance_mean=0.0, distance_std=1.0,
                              ratio=nan, split=nan, C=nan, seed=0)
    return in_stream_units(I.Boundary(normal, 0.0, attribute, "w", report=report, meta={"direction": "lstsq"}),
                           w_stream)


def labelers(a) -> None:
    """The ``labelers`` comparison (see the module docstring)."""
    world = load_world(a.world)
    G = world.G
    stamp = drawn_from(a.labels)
    if not stamp:
        raise SystemExit(f"error: {a.labels} holds no label stage's faces (no labels.json); label this world's "
                         f"faces with `python -m facelab.train.build {a.world} --only label`")
    ours = {"generator_sha256": sha256_file(weights_path(a.world)), "weights_sha256": weights_sha256(G)}
    key = generator_key(stamp, ours)
    if stamp.get(key) != ours[key]:
        raise SystemExit(f"error: {a.labels} was labelled on another generator than {a.world}'s; label this "
                         f"world's faces with `python -m facelab.train.build {a.world} --only label`")
    images, teacher = load_chunks(a.labels)
    images, teacher = images[:a.faces], teacher[:a.faces]
    w = label_set_codes(G, a.labels, len(images))
    H = load_regressor(a.regressor)
    with torch.no_grad():
        h_scores = predict(H, images)
    w_stream = I.sample_latents(G, PATTERN_CODES, space="w", seed=0).w
    col = {k: list(OUTPUTS).index(k) for k in EDITED}
    sets: dict[str, dict[str, I.Boundary]] = {"shipped (H, 100k psi=1)": world.boundaries("w")}
    for name, scores in (("H, label set", h_scores), ("teacher, label set", teacher)):
        sets[name] = {k: in_stream_units(I.train_boundary(w, scores[:, col[k]], C=a.C, attribute=k, space="w"),
                                         w_stream)
                      for k in EDITED}
    sets["teacher, least squares"] = {k: least_squares(w, teacher[:, col[k]], k, w_stream) for k in EDITED}
    print(f"{len(w)} labelled faces (psi {stamp['psi_min']}..1, seed {stamp['seed']}), H {a.regressor}, SVM C {a.C:g}; "
          f"distance std over {PATTERN_CODES} psi=1 latents", flush=True)
    names = list(sets)
    for k in EDITED:
        print(f"\n{k}: cosine between normals (rows/columns: {', '.join(names)})")
        for n1 in names:
            print(f"  {n1:<26}" + " ".join(f"{float(sets[n1][k].normal @ sets[n2][k].normal):+.2f}" for n2 in names))
        for n1 in names[1:3]:
            r = sets[n1][k].report
            print(f"  {n1}: SVM val accuracy {r.val_accuracy:.3f}, r(distance, score) {r.score_correlation:.3f}")
    report(edit_claims(G, sets, n=a.n, seed=a.seed))


def sweep_c(a) -> None:
    """The ``sweep-c`` comparison (see the module docstring)."""
    world = load_world(a.world)
    G = world.G
    files = sorted(a.scores.glob("scores_w_*.pt"))
    if not files:
        raise SystemExit(f"error: no cached W scores in {a.scores}; run the boundary stage with --work first")
    cached = [load_file(f) for f in files]
    scores = {k: torch.cat([c["scores"][k] for c in cached]) for k in EDITED}
    config = cached[0]["config"]
    w = I.sample_latents(G, len(scores[EDITED[0]]), psi=config["psi"], seed=config["seed"]).w
    w_stream = w[:PATTERN_CODES]
    print(f"{len(w)} latents, labeler {config['labeler']}", flush=True)
    shipped, sets = world.boundaries("w"), {}
    for c in a.C:
        sets[f"C={c:g}"] = {k: I.train_boundary(w, scores[k], C=c, attribute=k, space="w") for k in EDITED}
        row = ", ".join(f"{k} val {b.report.val_accuracy:.3f} cos(shipped) {float(b.normal @ shipped[k].normal):+.2f}"
                        for k, b in sets[f"C={c:g}"].items())
        print(f"C={c:g}: {row}", flush=True)
    sets = {name: {k: in_stream_units(b, w_stream) for k, b in bs.items()} for name, bs in sets.items()}
    report(edit_claims(G, sets, n=a.n, seed=a.seed))


def report(edits: dict) -> None:
    for name, rows in edits.items():
        print(f"\n## {name}\n")
        table = C.table(rows)
        print(getattr(table, "data", table))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--world", default="world64")
    sub = p.add_subparsers(dest="what", required=True)
    lab = sub.add_parser("labelers", help="H's scores against the teacher's, on the same codes")
    lab.add_argument("--labels", type=Path, default=Path("runs/build/world64/labels"),
                     help="a label stage's folder of this world's generator (teacher labels)")
    lab.add_argument("--faces", type=int, default=50_000, help="labelled faces to fit on")
    lab.add_argument("--regressor", default="attribute_regressor", help="the H whose scores are compared")
    lab.add_argument("--n", type=int, default=200, help="fresh faces the edits are judged on")
    lab.add_argument("--seed", type=int, default=31, help="their seed (the targets')")
    lab.add_argument("--C", type=float, default=1.0, help="the SVM's C for both label sets (the shipped fit uses "
                                                          "facelab.train.build.BOUNDARY_C)")
    sw = sub.add_parser("sweep-c", help="the shipped recipe at several SVM C")
    sw.add_argument("--scores", type=Path, default=Path("runs/build/world64/boundary-labels"),
                    help="the boundary stage's --work folder (cached H scores)")
    sw.add_argument("--C", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 0.1, 0.01, 0.001])
    sw.add_argument("--n", type=int, default=100, help="fresh faces the edits are judged on")
    sw.add_argument("--seed", type=int, default=7, help="their seed: a selection seed, not the targets' 31")
    a = p.parse_args(argv)
    t0 = time.time()
    (labelers if a.what == "labelers" else sweep_c)(a)
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
