"""Train a small DeepFace-style network with lcnumba's forward and backward functions.

``python -m lcnumba demo [--dataset digits|faces] [--plot FILE.png] ...``

The network uses every op family, in DeepFace's order (shared convolution
and pooling first, then unshared layers) with a NetVLAD head::

    x -> conv2d -> ReLU -> max_pool2d -> local_conv2d -> ReLU
      -> tiled_conv2d -> ReLU -> NetVLAD (GhostVLAD) -> linear -> softmax cross-entropy

The training loop is plain NumPy: every forward activation and every
gradient lives in a buffer allocated once and passed as ``out=``; weight and
bias gradients of a batch split into micro-batches are summed with
``accumulate=True``; the first layer asks for its weight and bias gradients
only (no input gradient). The optimiser is Adam, written out below.

Data ships with the ``demo`` extra, nothing is downloaded: scikit-learn's
8x8 handwritten digits (10 classes) and scikit-image's LFW subset (100 faces
and 100 non-faces, 25x25). Needs ``pip install 'lcnumba[demo]'``.
"""

import argparse
import sys
import time
from contextlib import contextmanager

import numpy as np
import matplotlib  # noqa: F401  (the demo extra; imported here so a missing extra is reported at once)
import sklearn.datasets
import sklearn.model_selection
import skimage.data

import lcnumba

DTYPE = np.float32
FAMILIES = ("conv2d", "max_pool2d", "local_conv2d", "tiled_conv2d", "netvlad", "linear+softmax")

# Per-dataset architecture and training settings. Sizes in the comments are (channels, height, width).
CONFIGS = {
    # 8x8 -> conv 3x3 pad 1 (16, 8, 8) -> pool 3x3 stride 1 pad 1 (16, 8, 8)
    #     -> local 3x3 (16, 6, 6) -> tiled 3x3 pad 1, 2x2 tiles (16, 6, 6) -> NetVLAD 8 + 1 ghost (128)
    "digits": dict(conv=dict(filters=16, kernel=3, padding=1), pool=dict(kernel=3, stride=1, padding=1),
                   local=dict(filters=16, kernel=3), tiled=dict(filters=16, kernel=3, padding=1, tiles=(2, 2)),
                   clusters=8, ghost=1, epochs=8, batch_size=32, lr=3e-3, weight_decay=1e-4, flip=False),
    # 25x25 -> conv 5x5 (16, 21, 21) -> pool 3x3 stride 2 (16, 10, 10)
    #       -> local 3x3 (16, 8, 8) -> tiled 3x3, 2x2 tiles (16, 6, 6) -> NetVLAD 8 + 1 ghost (128)
    "faces": dict(conv=dict(filters=16, kernel=5, padding=0), pool=dict(kernel=3, stride=2, padding=0),
                  local=dict(filters=16, kernel=3), tiled=dict(filters=16, kernel=3, padding=0, tiles=(2, 2)),
                  clusters=8, ghost=1, epochs=15, batch_size=16, lr=2e-3, weight_decay=1e-3, flip=True),
}


# ================================================================ data


def load(name, seed):
    """``(x_train, y_train, x_test, y_test, class_names)``; x is float32 (N, 1, H, W), y int64."""
    if name == "digits":
        digits = sklearn.datasets.load_digits()
        images, labels = digits.images / 16.0, digits.target
        names = [str(k) for k in range(10)]
    else:
        images = skimage.data.lfw_subset()  # 100 faces, then 100 non-faces
        labels = np.repeat([1, 0], 100)
        names = ["non-face", "face"]
    x_train, x_test, y_train, y_test = sklearn.model_selection.train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=seed)
    mean, std = x_train.mean(), x_train.std()  # statistics of the training split only

    def prepare(x):
        return np.ascontiguousarray(((x - mean) / std)[:, None], dtype=DTYPE)

    return prepare(x_train), y_train.astype(np.int64), prepare(x_test), y_test.astype(np.int64), names


# ================================================================ timing


class Timer:
    """Seconds per (family, direction); a family's first call of a direction (compiling or loading
    its kernels) is counted apart."""

    def __init__(self):
        self.seconds = {}
        self.calls = {}
        self.first = 0.0

    @contextmanager
    def __call__(self, family, direction):
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        key = (family, direction)
        if key not in self.calls:
            self.calls[key] = 0
            self.seconds[key] = 0.0
            self.first += elapsed
        else:
            self.seconds[key] += elapsed
        self.calls[key] += 1

    def report(self):
        lines = [f"  {'op family':<16}{'forward s':>11}{'backward s':>12}{'calls':>8}"]
        for family in FAMILIES:
            fwd = self.seconds.get((family, "forward"), 0.0)
            bwd = self.seconds.get((family, "backward"), 0.0)
            calls = self.calls.get((family, "forward"), 0)
            lines.append(f"  {family:<16}{fwd:>11.2f}{bwd:>12.2f}{calls:>8}")
        return "\n".join(lines)


# ================================================================ the network


class Network:
    """Parameters, gradient buffers and per-micro-batch activation buffers of the demo network."""

    def __init__(self, config, input_shape, n_classes, micro_batch, seed):
        c, h, w = input_shape
        self.cfg = config
        self.micro_batch = micro_batch
        conv, pool, local, tiled = config["conv"], config["pool"], config["local"], config["tiled"]
        seeds = np.random.SeedSequence(seed).generate_state(5)
        p = {}
        # shared convolution: (F, C, KH, KW)
        p["conv_w"] = lcnumba.he_normal((conv["filters"], c, conv["kernel"], conv["kernel"]), "conv2d",
                                        seed=int(seeds[0]))
        p["conv_b"] = np.zeros(conv["filters"], DTYPE)
        s1 = lcnumba.conv2d_output_shape((micro_batch, c, h, w), p["conv_w"].shape, padding=conv["padding"])
        s2 = lcnumba.max_pool2d_output_shape(s1, pool["kernel"], stride=pool["stride"], padding=pool["padding"])
        # unshared convolution: one (F, C, KH, KW) bank per output position
        s3 = lcnumba.local_conv2d_output_shape(s2, local["kernel"], local["filters"])
        p["local_w"] = lcnumba.he_normal(s3[2:] + (local["filters"], s2[1], local["kernel"], local["kernel"]),
                                         "local_conv2d", seed=int(seeds[1]))
        p["local_b"] = np.zeros((local["filters"],) + s3[2:], DTYPE)
        # tiled convolution: a bank per tile, output (i, j) uses tile (i % TH, j % TW)
        p["tiled_w"] = lcnumba.he_normal(tuple(tiled["tiles"]) + (tiled["filters"], s3[1], tiled["kernel"],
                                                                  tiled["kernel"]), "tiled_conv2d", seed=int(seeds[2]))
        p["tiled_b"] = np.zeros((tiled["filters"],) + tuple(tiled["tiles"]), DTYPE)
        s4 = lcnumba.tiled_conv2d_output_shape(s3, p["tiled_w"].shape, padding=tiled["padding"])
        # NetVLAD parameters come from k-means on the first batch's features (init_netvlad)
        k, d = config["clusters"], s4[1]
        self.vlad_dim = k * d
        p["linear_w"] = lcnumba.glorot_uniform((n_classes, k * d), "linear", seed=int(seeds[3]))
        p["linear_b"] = np.zeros(n_classes, DTYPE)
        self.params = p
        self.seed = int(seeds[4])
        self.shapes = (s1, s2, s3, s4)
        # activation buffers, allocated once for a micro-batch (out=)
        self.act = {name: np.empty(shape, DTYPE) for name, shape in zip(("a1", "a2", "a3", "a4"), self.shapes)}
        self.act["indices"] = np.empty(s2, np.int64)
        self.act["v"] = np.empty((micro_batch, k * d), DTYPE)
        self.act["logits"] = np.empty((micro_batch, n_classes), DTYPE)
        # input-gradient buffers
        self.dact = {"d1": np.empty(s1, DTYPE), "d2": np.empty(s2, DTYPE), "d3": np.empty(s3, DTYPE)}

    def init_netvlad(self, x, timer):
        """NetVLAD weights, biases and centroids from k-means on the features of ``x`` (one batch)."""
        features = self.features(x, timer)[-1]
        w, b, c = lcnumba.netvlad_init(features, self.cfg["clusters"], num_ghost=self.cfg["ghost"], seed=self.seed)
        self.params.update(vlad_w=w, vlad_b=b, vlad_c=c)

    def zero_grads(self):
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}

    # ---------------------------------------------------------------- forward

    def features(self, x, timer, act=None):
        """``(a1, a2, indices, a3, a4)``: activations up to NetVLAD's input, into the buffers ``act``
        when given (``x`` then has the micro-batch size), else freshly allocated."""
        p, cfg = self.params, self.cfg
        act = {} if act is None else act
        with timer("conv2d", "forward"):
            a1 = lcnumba.conv2d_forward(x, p["conv_w"], p["conv_b"], padding=cfg["conv"]["padding"], out=act.get("a1"))
            np.maximum(a1, 0, out=a1)
        with timer("max_pool2d", "forward"):
            pool = cfg["pool"]
            a2, indices = lcnumba.max_pool2d_forward(a1, pool["kernel"], stride=pool["stride"],
                                                     padding=pool["padding"], return_indices=True,
                                                     out=act.get("a2"), indices_out=act.get("indices"))
        with timer("local_conv2d", "forward"):
            a3 = lcnumba.local_conv2d_forward(a2, p["local_w"], p["local_b"], out=act.get("a3"))
            np.maximum(a3, 0, out=a3)
        with timer("tiled_conv2d", "forward"):
            a4 = lcnumba.tiled_conv2d_forward(a3, p["tiled_w"], p["tiled_b"], padding=cfg["tiled"]["padding"],
                                              out=act.get("a4"))
            np.maximum(a4, 0, out=a4)
        return a1, a2, indices, a3, a4

    def predict(self, x, timer, batch=256):
        """Logits of ``x``, in batches, with freshly allocated outputs."""
        p = self.params
        logits = []
        for start in range(0, len(x), batch):
            a4 = self.features(x[start:start + batch], timer)[-1]
            with timer("netvlad", "forward"):
                v = lcnumba.netvlad_forward(a4, p["vlad_w"], p["vlad_b"], p["vlad_c"])
            with timer("linear+softmax", "forward"):
                logits.append(v @ p["linear_w"].T + p["linear_b"])
        return np.concatenate(logits)

    # ---------------------------------------------------------------- one micro-batch, forward and backward

    def step(self, x, labels, timer, accumulate):
        """Forward and backward of one micro-batch.

        Writes (``accumulate=False``) or adds (``accumulate=True``) its gradients of the batch's
        mean loss (``self.scale`` is 1 / batch size) into ``self.grads``; returns the summed loss
        and the number of correct predictions of the micro-batch."""
        p, g, cfg, act, dact = self.params, self.grads, self.cfg, self.act, self.dact
        a1, a2, indices, a3, a4 = self.features(x, timer, act)
        with timer("netvlad", "forward"):
            v = lcnumba.netvlad_forward(a4, p["vlad_w"], p["vlad_b"], p["vlad_c"], out=act["v"])
        with timer("linear+softmax", "forward"):
            logits = np.matmul(v, p["linear_w"].T, out=act["logits"])
            logits += p["linear_b"]
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            rows = np.arange(len(labels))
            loss = -float(log_prob[rows, labels].sum())
            correct = int(np.sum(np.argmax(logits, axis=1) == labels))

        with timer("linear+softmax", "backward"):
            dlogits = np.exp(log_prob)  # softmax - one_hot, divided by the batch size
            dlogits[rows, labels] -= 1
            dlogits *= DTYPE(self.scale)
            g["linear_w"] += dlogits.T @ v
            g["linear_b"] += dlogits.sum(axis=0)
            dv = dlogits @ p["linear_w"]
        with timer("netvlad", "backward"):
            d4, dw, db, dc = lcnumba.netvlad_backward(dv, a4, p["vlad_w"], p["vlad_b"], p["vlad_c"])
            g["vlad_w"] += dw
            g["vlad_b"] += db
            g["vlad_c"] += dc
        with timer("tiled_conv2d", "backward"):
            d4 *= a4 > 0  # ReLU
            pad = cfg["tiled"]["padding"]
            lcnumba.tiled_conv2d_backward_weight(d4, a3, p["tiled_w"].shape, padding=pad,
                                                 out=g["tiled_w"], accumulate=accumulate)
            lcnumba.tiled_conv2d_backward_bias(d4, p["tiled_b"].shape, out=g["tiled_b"], accumulate=accumulate)
            d3 = lcnumba.tiled_conv2d_backward_input(d4, p["tiled_w"], a3.shape, padding=pad, out=dact["d3"])
        with timer("local_conv2d", "backward"):
            d3 *= a3 > 0
            lcnumba.local_conv2d_backward_weight(d3, a2, p["local_w"].shape, out=g["local_w"], accumulate=accumulate)
            lcnumba.local_conv2d_backward_bias(d3, p["local_b"].shape, out=g["local_b"], accumulate=accumulate)
            d2 = lcnumba.local_conv2d_backward_input(d3, p["local_w"], a2.shape, out=dact["d2"])
        with timer("max_pool2d", "backward"):
            d1 = lcnumba.max_pool2d_backward(d2, indices, a1.shape, out=dact["d1"])
        with timer("conv2d", "backward"):
            d1 *= a1 > 0
            # the first layer needs no input gradient: ask for the weight and bias gradients only
            lcnumba.conv2d_backward_weight(d1, x, p["conv_w"].shape, padding=cfg["conv"]["padding"],
                                           out=g["conv_w"], accumulate=accumulate)
            lcnumba.conv2d_backward_bias(d1, p["conv_b"].shape, out=g["conv_b"], accumulate=accumulate)
        return loss, correct

    def train_batch(self, x, labels, timer):
        """Gradients of the mean loss over the batch, summed over its micro-batches."""
        self.scale = 1.0 / len(x)
        m = self.micro_batch
        for name in ("linear_w", "linear_b", "vlad_w", "vlad_b", "vlad_c"):  # added to with +=
            self.grads[name].fill(0)
        loss = correct = 0
        for i, start in enumerate(range(0, len(x), m)):
            # the first micro-batch overwrites the conv gradients (beta = 0), later ones add (beta = 1)
            part_loss, part_correct = self.step(x[start:start + m], labels[start:start + m], timer, accumulate=i > 0)
            loss += part_loss
            correct += part_correct
        return loss, correct


class Adam:
    """Adam (Kingma and Ba 2015) with decoupled weight decay on the weights (AdamW)."""

    def __init__(self, params, lr, weight_decay, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.wd, self.b1, self.b2, self.eps = lr, weight_decay, beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        lr = self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        for k, w in params.items():
            m, v, g = self.m[k], self.v[k], grads[k]
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            if k.endswith("_w"):
                w *= DTYPE(1 - self.lr * self.wd)
            w -= (lr * m / (np.sqrt(v) + self.eps)).astype(DTYPE)


# ================================================================ main


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m lcnumba demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(CONFIGS), default="digits",
                        help="digits: scikit-learn's 8x8 digits, 10 classes (default); "
                             "faces: scikit-image's LFW subset, faces vs non-faces")
    parser.add_argument("--epochs", type=int, help="passes over the training split (default: per dataset)")
    parser.add_argument("--batch-size", type=int, help="samples per optimiser step (default: per dataset)")
    parser.add_argument("--micro-batches", type=int, default=1,
                        help="split every batch into this many parts whose gradients are accumulated "
                             "(accumulate=True); the result is the same up to rounding")
    parser.add_argument("--lr", type=float, help="Adam's learning rate (default: per dataset)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the shuffling")
    parser.add_argument("--plot", metavar="FILE.png", help="save the training curves to this PNG file")
    return parser.parse_args(argv)


def plot_curves(path, history, title):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, history["loss"], marker="o", label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("mean cross-entropy")
    left.set_yscale("log")
    left.grid(True, alpha=0.3)
    left.legend()
    right.plot(epochs, history["train_acc"], marker="o", label="training")
    right.plot(epochs, history["test_acc"], marker="s", label="held-out test")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy")
    right.set_ylim(min(0.5, min(history["test_acc"]) - 0.05), 1.0)
    right.grid(True, alpha=0.3)
    right.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    """Run the demo; ``argv`` as for the command line (without ``demo``). Returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = CONFIGS[args.dataset]
    epochs = args.epochs if args.epochs is not None else cfg["epochs"]
    batch_size = args.batch_size if args.batch_size is not None else cfg["batch_size"]
    lr = args.lr if args.lr is not None else cfg["lr"]
    if epochs < 1 or batch_size < 1 or not 1 <= args.micro_batches <= batch_size or batch_size % args.micro_batches:
        print("--epochs and --batch-size must be >= 1 and --micro-batches must divide --batch-size", file=sys.stderr)
        return 2
    start_all = time.perf_counter()
    x_train, y_train, x_test, y_test, names = load(args.dataset, args.seed)
    if batch_size > len(x_train):
        print(f"--batch-size must be at most the {len(x_train)} training samples", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    timer = Timer()
    net = Network(cfg, x_train.shape[1:], len(names), batch_size // args.micro_batches, args.seed)
    print(f"lcnumba demo: {args.dataset}, {len(x_train)} training and {len(x_test)} test images of "
          f"{x_train.shape[2]}x{x_train.shape[3]}, {len(names)} classes")
    c, h, w = x_train.shape[1:]
    layers = [("input", (c, h, w))] + [(name, s[1:]) for name, s in zip(
        ("conv2d+relu", "max_pool2d", "local_conv2d+relu", "tiled_conv2d+relu"), net.shapes)]
    print("  " + " -> ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in layers)
          + f" -> netvlad {cfg['clusters']}+{cfg['ghost']} ghost ({net.vlad_dim}) -> linear ({len(names)})")
    order = rng.permutation(len(x_train))
    net.init_netvlad(x_train[order[:batch_size]], timer)
    net.zero_grads()
    n_params = sum(v.size for v in net.params.values())
    print(f"  {n_params} parameters; NetVLAD initialised by k-means on the first batch's features; "
          f"Adam lr {lr:g}, batch {batch_size}" + (f" in {args.micro_batches} micro-batches"
                                                   if args.micro_batches > 1 else ""))
    optimiser = Adam(net.params, lr, cfg["weight_decay"])
    history = {"loss": [], "train_acc": [], "test_acc": []}
    steps = len(x_train) // batch_size  # the last partial batch is dropped: fixed-size buffers
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        optimiser.lr = lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / epochs))  # cosine schedule
        order = rng.permutation(len(x_train))
        total_loss = total_correct = 0
        for s in range(steps):
            batch = order[s * batch_size:(s + 1) * batch_size]
            x = x_train[batch]
            if cfg["flip"]:  # mirror half of the images (faces are left-right symmetric)
                flip = rng.random(len(x)) < 0.5
                x[flip] = x[flip, :, :, ::-1]
            loss, correct = net.train_batch(x, y_train[batch], timer)
            optimiser.step(net.params, net.grads)
            total_loss += loss
            total_correct += correct
        seen = steps * batch_size
        test_acc = float(np.mean(np.argmax(net.predict(x_test, timer), axis=1) == y_test))
        history["loss"].append(total_loss / seen)
        history["train_acc"].append(total_correct / seen)
        history["test_acc"].append(test_acc)
        note = "  (includes compiling or loading the kernels)" if epoch == 1 else ""
        print(f"epoch {epoch:3d}/{epochs}  loss {total_loss / seen:.4f}  train acc {total_correct / seen:.3f}  "
              f"test acc {test_acc:.3f}  {time.perf_counter() - start:5.1f} s{note}", flush=True)
    total = time.perf_counter() - start_all
    correct = round(history["test_acc"][-1] * len(y_test))
    print(f"test accuracy {history['test_acc'][-1]:.4f} ({correct}/{len(y_test)}) after {epochs} epochs; "
          f"total {total:.1f} s, of which {timer.first:.1f} s in the first call of each op "
          f"(compiling or loading kernels)")
    print("time per op family after its first call (training and evaluation):")
    print(timer.report())
    if args.plot:
        plot_curves(args.plot, history, f"lcnumba demo: {args.dataset} "
                                        f"(test accuracy {history['test_acc'][-1]:.3f})")
        print(f"training curves saved to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
