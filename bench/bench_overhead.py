"""Host overhead: the Python time of one call of each public op of gankern.ops, with the kernel launches stubbed
(every Triton kernel's ``kernel[grid](...)`` and every launcher of the CUDA module is a no-op), so only host work is
timed: validation, backend choice, allocation, autograd plumbing, launcher wrappers.

    python bench/bench_overhead.py [--quick] [--no-write]

Floor (issue 13): an empty ``torch.autograd.Function`` that allocates its output (``torch.empty_like``) on the same
tensors, the least any Python-level custom op costs; ``F.leaky_relu`` on the same tensor for scale. A composite op
(one that also runs torch ops: a convolution, a matmul, D's input gradient, ...) is compared with the same torch
ops plus one empty Function per fused op, so that the ratio measures gankern's own overhead. Forward rows run with
inputs that need no gradient; "fwd+bwd" rows run the forward with inputs that require grad and
``torch.autograd.grad`` (the floor's backward allocates one gradient per input, with ``empty_like``).

Tensors are tiny (host time only); each figure is the best of several batches of calls, in process CPU time (the
machine is shared).

Measured (issue 13; CPU, 2 shared cores, fp32; not measured on a GPU), us per call / x floor, before -> after the
single fused_op path (no autograd node without grad, cached backend choice, host cdiv / next_power_of_2, trimmed
checks): bias_act fwd 25.9 / 5.3x -> 6.4 / 1.3x, fwd+bwd 116 / 3.2x -> 69 / 1.8x; adain fwd 29.3 / 5.5x -> 10.4 /
2.0x; upfirdn2d fwd 30.4 / 6.8x -> 12.2 / 2.7x; minibatch_stddev fwd 25.3 / 5.6x -> 6.0 / 1.3x;
minibatch_discrimination_pairs fwd+bwd 134 / 4.3x -> 51 / 1.6x; grad_norm_penalty fwd 31.7 / 7.1x -> 8.6 / 1.9x;
interpolate 28.1 / 5.5x -> 7.0 / 1.4x; demodulation 22.7 / 4.9x -> 8.3 / 1.8x; spectral_normalize_all (5 launches)
51.7 / 2.9x -> 39.4 / 2.1x; power_iteration_all (4 launches) 22.7 / 5.0x -> 20.5 / 4.5x; san_constants 164 / 18x ->
123 / 14x. Then (checked calls cached by their tensors' signature, one u/v buffer, three launches per iteration;
SAN's maxima reduced by a finishing kernel, its backward a kernel; triton / cuda): power_iteration_all 19.7 / 4.6x ->
7.8 / 1.7x, cuda 21.1 / 4.9x -> 8.2 / 1.8x; spectral_normalize_all fwd 35.7 / 2.1x -> 21.0 / 1.2x (cuda 1.2x),
fwd+bwd 172 / 1.9x -> 167 / 1.7x (cuda 1.8x); san_constants fwd 107 / 13x -> 11.8 / 1.4x, fwd+bwd 495 / 7.7x -> 101 /
1.4x.
And (launch plans cached per shape, checks that test the valid case first, no tuple sizes in torch.empty, no
indexing ops for sizes, statistics outside the eager Function's outputs): upfirdn2d fwd 15.1 / 3.44x -> 6.5 / 1.48x,
fwd+bwd 2.46x -> 1.75x; upsample2d 3.84x -> 1.73x; downsample2d 3.66x -> 1.71x; filter2d 3.58x -> 1.67x; adain fwd
2.22x -> 1.73x, fwd+bwd 2.10x -> 1.64x; instance_norm+lrelu fwd 2.19x -> 1.68x, fwd+bwd 2.49x -> 1.96-2.00x;
noise_bias_act fwd+bwd 2.44x -> 2.01-2.07x; demodulation_coefficients 1.96x -> 1.09x (runs a few minutes apart).
instance_norm's and noise_bias_act's backward sum per-sample partial sums over the batch with a torch reduction,
and the first non-factory torch op inside a backward costs about 4-6 us on these CPUs (a Function whose backward
runs one ``sum`` costs that much more than one that only allocates, as the floor's does): those two stay at ~2x.
Rows: ``{family, workload, backend, dtype, shape, ms, floor_ms, vs_eager, vs_floor, launches, ...}`` with ``ms`` the
host time per call, ``floor_ms`` the floor's, ``vs_eager`` the ratio to F.leaky_relu on the op's main tensor and
``launches`` the kernel launches one call makes (an op of several launches pays one launcher per launch: the floor
is that of a one-launch op).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import sys
import time
import types

import torch
import torch.nn.functional as F

if __name__ == "__main__" and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before gankern defines its kernels: triton on CPU tensors

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gankern  # noqa: E402
from gankern import _bench, _ext, ops  # noqa: E402
from gankern.ops import augment, fid, penalty, resample, san, spectral_norm  # noqa: E402
from gankern.ops.modulation import demodulation_coefficients  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------------------------------------------
# stubbed launches


_LAUNCHES = [0]  # stubbed launches so far


def _noop(*args, **kwargs):
    _LAUNCHES[0] += 1


class _NoLaunch:
    """Stands for a @triton.jit kernel: ``kernel[grid](...)`` does nothing."""

    def __getitem__(self, grid):
        return _noop


_QUERIES = ("mb_std_partials", "static_smem_bytes")  # host-only functions of the CUDA module: kept


def _stub_module(real):
    stub = types.ModuleType(f"{real.__name__}_stub")
    for name in dir(real):
        if not name.startswith("__"):
            value = getattr(real, name)
            keep = isinstance(value, (int, float, bool, str)) or name in _QUERIES
            setattr(stub, name, value if keep else _noop)
    return stub


@contextlib.contextmanager
def stubbed_launches():
    """Every Triton kernel of gankern.kernels and every CUDA launcher a no-op inside the block (restored after it,
    so that benchmarks run after this one in the same process, as ``gankern bench`` runs them, launch for real)."""
    import triton
    from gankern import kernels
    jit_types = (triton.runtime.JITFunction,)
    if os.environ.get("TRITON_INTERPRET") == "1":
        from triton.runtime.interpreter import InterpretedFunction
        jit_types += (InterpretedFunction,)
    saved = []
    for info in pkgutil.iter_modules(kernels.__path__):
        mod = importlib.import_module(f"gankern.kernels.{info.name}")
        for name, value in list(vars(mod).items()):
            if isinstance(value, jit_types):
                saved.append((mod, name, value))
                setattr(mod, name, _NoLaunch())
    modules = dict(_ext._MODULES)
    name = "_C" if DEVICE.type == "cuda" else _ext._SIM
    real, err = _ext._import(name)
    if real is not None:
        _ext._MODULES[name] = _stub_module(real)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)
        _ext._MODULES.clear()
        _ext._MODULES.update(modules)


# ----------------------------------------------------------------------------------------------------------------
# the floor


class Empty(torch.autograd.Function):
    """The floor of a Python-level op: allocates its output like the first input; backward allocates the
    gradients."""

    @staticmethod
    def forward(ctx, x, *others):
        ctx.inputs = (x, *others)
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, g):
        return tuple(torch.empty_like(t) if need else None for t, need in zip(ctx.inputs, ctx.needs_input_grad))


# ----------------------------------------------------------------------------------------------------------------
# timing


def host_us(fn, quick: bool) -> float:
    """Best per-call time (us) over batches of calls, each batch about 10 ms (2 ms with quick)."""
    for _ in range(3):
        fn()
    n, target = 1, (0.002 if quick else 0.01)
    while True:
        t0 = time.process_time()
        for _ in range(n):
            fn()
        dt = time.process_time() - t0
        if dt >= target:
            break
        n *= 2
    best = dt / n
    for _ in range(3 if quick else 7):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


def _grad(fn, inputs, g=None):
    """fn() -> forward then torch.autograd.grad w.r.t. inputs (gradient ones_like, or g)."""
    def run():
        out = fn()
        return torch.autograd.grad(out, inputs, torch.ones_like(out) if g is None else g)
    return run


def _randn(*shape, grad=False):
    return torch.randn(*shape, device=DEVICE).requires_grad_(grad)


# ----------------------------------------------------------------------------------------------------------------
# the cases: (family, op, backends, phase -> (op fn, floor fn), main tensor, shape)


def cases():
    """Yield (family, workload, backends, fn, floor, main tensor): fn() runs the op, floor() its floor."""
    kb = ("triton", "cuda")
    x = _randn(2, 4, 4, 4)
    xg = _randn(2, 4, 4, 4, grad=True)
    b, bg = _randn(4), _randn(4, grad=True)
    yield "modulation", "bias_act fwd", kb, lambda: ops.bias_act(x, b, act="lrelu"), lambda: Empty.apply(x, b), x
    yield ("modulation", "bias_act fwd+bwd", kb, _grad(lambda: ops.bias_act(xg, bg, act="lrelu"), (xg, bg)),
           _grad(lambda: Empty.apply(xg, bg), (xg, bg)), x)

    gamma, beta = _randn(2, 4), _randn(2, 4)
    gg, bb = _randn(2, 4, grad=True), _randn(2, 4, grad=True)
    yield ("modulation", "adain fwd", ("triton",), lambda: ops.adain(x, gamma, beta),
           lambda: Empty.apply(x, gamma, beta), x)
    yield ("modulation", "adain fwd+bwd", ("triton",), _grad(lambda: ops.adain(xg, gg, bb), (xg, gg, bb)),
           _grad(lambda: Empty.apply(xg, gg, bb), (xg, gg, bb)), x)
    wc, bc = _randn(4, grad=True), _randn(4, grad=True)
    yield ("modulation", "instance_norm+lrelu fwd", ("triton",),
           lambda: ops.instance_norm(x, wc.detach(), bc.detach(), act="lrelu"),
           lambda: Empty.apply(x, wc, bc), x)
    yield ("modulation", "instance_norm+lrelu fwd+bwd", ("triton",),
           _grad(lambda: ops.instance_norm(xg, wc, bc, act="lrelu"), (xg, wc, bc)),
           _grad(lambda: Empty.apply(xg, wc, bc), (xg, wc, bc)), x)

    noise = _randn(2, 1, 4, 4)
    strength = _randn(4, grad=True)
    yield ("modulation", "noise_bias_act fwd+bwd", ("triton",),
           _grad(lambda: ops.noise_bias_act(xg, noise, strength, bg), (xg, strength, bg)),
           _grad(lambda: Empty.apply(xg, noise, strength, bg), (xg, strength, bg)), x)

    w, s = _randn(4, 4, 3, 3), _randn(2, 4)
    wg, sg = _randn(4, 4, 3, 3, grad=True), _randn(2, 4, grad=True)
    yield ("modulation", "demodulation_coefficients fwd", ("triton",), lambda: demodulation_coefficients(w, s),
           lambda: Empty.apply(s, w), s)

    def modconv_floor(x, w, s):  # the torch ops of the op (x * s, the convolution) + two fused ops
        y = F.conv2d(x * s[:, :, None, None], w, padding=1)
        return Empty.apply(y, Empty.apply(s, w))

    yield ("modulation", "modulated_conv2d fwd", ("triton",), lambda: ops.modulated_conv2d(x, w, s, padding=1),
           lambda: modconv_floor(x, w, s), x)
    yield ("modulation", "modulated_conv2d fwd+bwd", ("triton",),
           _grad(lambda: ops.modulated_conv2d(xg, wg, sg, padding=1), (xg, wg, sg)),
           _grad(lambda: modconv_floor(xg, wg, sg), (xg, wg, sg)), x)

    f = resample.setup_filter([1, 3, 3, 1], device=DEVICE)
    yield ("resample", "upfirdn2d fwd", ("triton",), lambda: ops.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1]),
           lambda: Empty.apply(x), x)
    yield ("resample", "upfirdn2d fwd+bwd", ("triton",),
           _grad(lambda: ops.upfirdn2d(xg, f, up=2, padding=[2, 1, 2, 1]), (xg,)),
           _grad(lambda: Empty.apply(xg), (xg,)), x)
    yield "resample", "upsample2d fwd", ("triton",), lambda: ops.upsample2d(x, f), lambda: Empty.apply(x), x
    yield "resample", "downsample2d fwd", ("triton",), lambda: ops.downsample2d(x, f), lambda: Empty.apply(x), x
    yield "resample", "filter2d fwd", ("triton",), lambda: ops.filter2d(x, f), lambda: Empty.apply(x), x
    yield ("resample", "conv2d_resample down=2 fwd", ("triton",),
           lambda: resample.conv2d_resample(x, w, f, down=2, padding=1),
           lambda: F.conv2d(Empty.apply(x), w, stride=2), x)

    M, Mg = _randn(4, 3, 5), _randn(4, 3, 5, grad=True)
    yield ("minibatch", "minibatch_discrimination_pairs fwd", kb, lambda: ops.minibatch_discrimination_pairs(M),
           lambda: Empty.apply(M), M)
    yield ("minibatch", "minibatch_discrimination_pairs fwd+bwd", kb,
           _grad(lambda: ops.minibatch_discrimination_pairs(Mg), (Mg,)), _grad(lambda: Empty.apply(Mg), (Mg,)), M)
    fe, T = _randn(4, 6), _randn(6, 15)
    yield ("minibatch", "minibatch_discrimination fwd", kb, lambda: ops.minibatch_discrimination(fe, T, 3, 5),
           lambda: Empty.apply((fe @ T).view(4, 3, 5)), M)
    yield ("minibatch", "minibatch_stddev fwd", kb, lambda: ops.minibatch_stddev(x, 2), lambda: Empty.apply(x), x)
    yield ("minibatch", "minibatch_stddev fwd+bwd", kb, _grad(lambda: ops.minibatch_stddev(xg, 2), (xg,)),
           _grad(lambda: Empty.apply(xg), (xg,)), x)

    g, gq = _randn(4, 8), _randn(4, 8, grad=True)
    yield ("penalty", "grad_norm_penalty fwd", ("triton",), lambda: ops.grad_norm_penalty(g),
           lambda: Empty.apply(g), g)
    yield ("penalty", "grad_norm_penalty fwd+bwd", ("triton",), _grad(lambda: ops.grad_norm_penalty(gq), (gq,)),
           _grad(lambda: Empty.apply(gq), (gq,)), g)
    real, fake, eps = _randn(2, 4, 4, 4), _randn(2, 4, 4, 4), torch.rand(2, device=DEVICE)
    yield ("penalty", "interpolate fwd", ("triton",), lambda: penalty.interpolate(real, fake, eps),
           lambda: Empty.apply(real, fake, eps), x)
    xr = _randn(2, 4, 4, 4, grad=True)
    d_out = (xr.square()).flatten(1).sum(1)

    def r1_floor():
        (gx,) = torch.autograd.grad(d_out.sum(), xr, create_graph=True)
        return Empty.apply(gx)

    yield "penalty", "r1_penalty fwd", ("triton",), lambda: ops.r1_penalty(d_out, xr), r1_floor, x

    def D(v):
        return v.square().flatten(1).sum(1)

    def gp_floor():
        e = torch.rand(real.shape[0], device=DEVICE)
        with torch.enable_grad():
            x_hat = Empty.apply(real.detach(), fake.detach(), e).requires_grad_(True)
            (gx,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
            return Empty.apply(gx)

    yield "penalty", "gradient_penalty fwd", ("triton",), lambda: ops.gradient_penalty(D, real, fake), gp_floor, x

    ws = _randn(2, 3, 8, grad=True)
    A = _randn(8, 4 * 4 * 4)
    img = (ws.sum(1) @ A).view(2, 4, 4, 4)
    pl_mean = torch.zeros((), device=DEVICE)
    pl_noise = _randn(2, 4, 4, 4)

    def pl_floor():  # the same torch ops with the two fused ops as empty Functions
        y = Empty.apply(torch.empty((), device=DEVICE), img, pl_noise)
        (gw,) = torch.autograd.grad(y, ws, create_graph=True, allow_unused=True)
        sq = Empty.apply(gw.new_empty(gw.shape[0]), gw)
        lengths = penalty._safe_sqrt(sq / ws.shape[1])
        mean = pl_mean.detach().lerp(lengths.mean(), 0.01)
        with torch.no_grad():
            pl_mean.copy_(mean)
        return (lengths - mean).pow(2).mean()

    yield ("penalty", "path_length_penalty fwd", ("triton",),
           lambda: ops.path_length_penalty(img, ws, pl_mean, noise=pl_noise), pl_floor, x)

    sw = [_randn(8, 4, 3, 3), _randn(6, 8)]
    su, sv = [_randn(8), _randn(6)], [_randn(36), _randn(8)]
    swg = [w_.detach().requires_grad_(True) for w_ in sw]
    yield ("spectral_norm", "power_iteration_all (2 layers)", kb,
           lambda: spectral_norm.power_iteration_all(sw, su, sv), lambda: Empty.apply(sw[0]), sw[0])

    def sn_floor(ws_):
        flat = Empty.apply(torch.empty(sum(w_.numel() for w_ in ws_), device=DEVICE), *ws_)
        return [o.view(w_.shape) for o, w_ in zip(flat.split([w_.numel() for w_ in ws_]), ws_)]

    yield ("spectral_norm", "spectral_normalize_all (2 layers) fwd", kb,
           lambda: spectral_norm.spectral_normalize_all(sw, su, sv), lambda: sn_floor(sw), sw[0])
    yield ("spectral_norm", "spectral_normalize_all (2 layers) fwd+bwd", kb,
           _grad(lambda: spectral_norm.spectral_normalize_all(swg, su, sv)[0][0].sum(), swg),
           _grad(lambda: sn_floor(swg)[0].sum(), swg), sw[0])

    wl = [_randn(4, 4, 3, 3), _randn(6, 8)]
    wlg = [w_.detach().requires_grad_(True) for w_ in wl]
    sizes = [(8, 8), None]
    yield ("san", "san_constants (2 layers) fwd", ("triton",), lambda: san.san_constants(wl, sizes),
           lambda: Empty.apply(torch.cat([w_.reshape(-1) for w_ in wl])), wl[0])
    yield ("san", "san_constants (2 layers) fwd+bwd", ("triton",),
           _grad(lambda: san.san_constants(wlg, sizes).sum(), wlg),
           _grad(lambda: Empty.apply(torch.cat([w_.reshape(-1) for w_ in wlg])).sum(), wlg), wl[0])

    xa, xag = _randn(2, 3, 5, 5), _randn(2, 3, 5, 5, grad=True)
    theta, cm = torch.eye(2, 3, device=DEVICE).repeat(2, 1, 1), torch.eye(4, device=DEVICE).repeat(2, 1, 1)
    for name, op, arg in (("affine_grid_sample", augment.affine_grid_sample, theta),
                          ("color_transform", augment.color_transform, cm)):
        yield "augment", f"{name} fwd", ("triton",), lambda op=op, arg=arg: op(xa, arg), lambda: Empty.apply(xa), xa
        yield ("augment", f"{name} fwd+bwd", ("triton",), _grad(lambda op=op, arg=arg: op(xag, arg), (xag,)),
               _grad(lambda: Empty.apply(xag), (xag,)), xa)

    c1 = torch.cov(torch.randn(4, 16, device=DEVICE, dtype=torch.float64))
    c2 = torch.cov(torch.randn(4, 16, device=DEVICE, dtype=torch.float64))

    def tsp_floor():  # the linear algebra of the default route, without checks
        l1 = fid.psd_factor(c1, validate=False)
        return fid.METHODS[fid.default_method(DEVICE)][0](l1, c2, 0)

    yield "fid", "trace_sqrt_product (d=4)", ("ref",), lambda: fid.trace_sqrt_product(c1, c2), tsp_floor, c1


def run(quick: bool) -> list[dict]:
    with stubbed_launches():
        return _run(quick)


def _run(quick: bool) -> list[dict]:
    env = _bench.environment()
    rows = []
    for family, workload, backends, fn, floor, main in cases():
        floor_us = host_us(floor, quick)
        lrelu_us = host_us(lambda: F.leaky_relu(main, 0.2), quick)
        for backend in backends:
            try:
                with gankern.use_backend(backend), \
                        (_ext.simulate_cuda() if backend == "cuda" and DEVICE.type == "cpu" else _nullctx()):
                    us = host_us(fn, quick)
                    before = _LAUNCHES[0]
                    fn()
                    launches = _LAUNCHES[0] - before
                err = None
            except Exception as e:  # a backend that cannot run this op is reported, not hidden
                us, launches, err = None, None, f"{type(e).__name__}: {e}"[:300]
            print(f"  {workload:45s} {backend:7s} " + (f"{us:7.1f} us  floor {floor_us:6.1f} us  x{us / floor_us:.2f}"
                                                        if us else err), file=sys.stderr, flush=True)
            rows.append({"family": family, "workload": f"host: {workload}", "backend": backend,
                         "dtype": str(main.dtype).replace("torch.", ""), "shape": list(main.shape),
                         "ms": None if us is None else us / 1e3, "floor_ms": floor_us / 1e3,
                         "vs_eager": None if us is None else us / lrelu_us, "vs_compile": None,
                         "vs_floor": None if us is None else us / floor_us, "leaky_relu_ms": lrelu_us / 1e3,
                         "launches": launches,
                         **env, **({"error": err} if err else {})})
    return rows


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def format_table(rows: list[dict]) -> str:
    lines = ["| op (host time, launches stubbed) | backend | launches | us/call | floor us | x floor | x leaky_relu |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        us = "-" if r["ms"] is None else f"{r['ms'] * 1e3:.1f}"
        ratio = "-" if r["vs_floor"] is None else f"{r['vs_floor']:.2f}"
        lr = "-" if r["vs_eager"] is None else f"{r['vs_eager']:.1f}"
        n = "-" if r["launches"] is None else r["launches"]
        lines.append(f"| {r['workload'][6:]} | {r['backend']} | {n} | {us} | {r['floor_ms'] * 1e3:.1f} | {ratio} "
                     f"| {lr} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description="host overhead per call of every public gankern op (launches stubbed)")
    p.add_argument("--quick", action="store_true", help="shorter timing batches")
    p.add_argument("--out", default=None, help="JSON file to append rows to (default: $OUT or bench/results/)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    rows = run(args.quick)
    print(format_table(rows))
    if not args.no_write:
        _bench.write_rows(rows, args.out or _bench.results_path("overhead"))
