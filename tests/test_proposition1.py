"""Proposition 1 of the supplement, numerically: the inverse kernel commutes with dyadic
(zero-insertion) upsampling, (k up_s)^dagger = (k^dagger) up_s, in the Fourier domain; hence an
inverse kernel spanned by atoms v_n at one scale is spanned by the upsampled atoms at the next,
checked on the package's atom bank and inverse-kernel convolution."""
import pytest
import torch

from inik_fast import INIKNetConfig, available_backends, ops
from inik_fast.atoms import INRAtoms

N, S = 32, 2  # image size H0 = W0 = N, upsampling factor s


def up(k: torch.Tensor, s: int = S) -> torch.Tensor:
    """Expansion upsampling on the periodic N x N grid: u[s*i mod N, s*j mod N] += k[i, j]."""
    u = torch.zeros_like(k)
    idx = (torch.arange(k.shape[0]) * s) % k.shape[0]
    u.index_put_((idx[:, None], idx[None, :]), k, accumulate=True)
    return u


def inverse(k: torch.Tensor) -> torch.Tensor:
    """k^dagger: 1 / F(k) where F(k) != 0, 0 elsewhere (eq. 1)."""
    fk = torch.fft.fft2(k)
    inv = torch.where(fk.abs() > 1e-12, 1 / fk, torch.zeros_like(fk))
    return torch.fft.ifft2(inv).real


def psf(radius: float) -> torch.Tensor:
    """A normalised disk PSF mixed with a delta (its spectrum has no zeros), centred at the origin."""
    y, x = torch.meshgrid(torch.arange(N), torch.arange(N), indexing="ij")
    y, x = torch.minimum(y, N - y), torch.minimum(x, N - x)
    disk = ((x**2 + y**2) <= radius**2).double()
    k = 0.5 * disk / disk.sum()
    k[0, 0] += 0.5
    return k


def test_fourier_identity_of_upsampling():
    k = psf(3)
    w = torch.arange(N)
    # eq. 3: F(k up_s)[w] = F(k)[s w mod N]
    assert torch.allclose(torch.fft.fft2(up(k)), torch.fft.fft2(k)[(S * w) % N][:, (S * w) % N], atol=1e-12)


def test_inverse_kernel_commutes_with_upsampling():
    for radius in (1, 2.5, 4):
        k = psf(radius)
        lhs, rhs = inverse(up(k)), up(inverse(k))  # eq. 5
        assert torch.allclose(lhs, rhs, atol=1e-10)
        assert lhs.abs().max() > 0.1  # not trivially zero


def periodic_kernel(window: torch.Tensor) -> torch.Tensor:
    """The N x N periodic convolution kernel c of the op's correlation with a centred window a:
    (a correlated with z)[p] = sum_t a[t] z[p + t] = (c conv z)[p] with c[-t mod N] = a[t]."""
    r = window.shape[-1] // 2
    c = torch.zeros(N, N, dtype=window.dtype)
    t = torch.arange(-r, r + 1)
    c[(-t % N)[:, None], (-t % N)[None, :]] = window
    return c


def periodic_conv(k: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(torch.fft.fft2(k) * torch.fft.fft2(x)).real


@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_upsampled_atoms_invert_the_upsampled_blur(backend):
    """Eq. 6-7 with the package's atoms and op: the op (residual, one group selected, the atoms
    mixed by constant basis weights) applies delta + v, v in the span of group 1's atoms. It
    inverts the blur k = (delta + v)^dagger; by Proposition 1, the same weights on the atoms
    upsampled by zero insertion (group 3's 9 x 9 windows) invert the upsampled blur k up_2."""
    torch.manual_seed(0)
    G, M = 4, 3
    atoms = INRAtoms(INIKNetConfig(max_kernel_size=2 * G + 1, basis_num=M, inr_hidden=16)).double()("reference").detach()
    R = G  # the centre of the K x K grid
    window = atoms[1, :, R - 2 : R + 3, R - 2 : R + 3]  # group 1's 5 x 5 atoms
    w = torch.tensor([1.0, -0.7, 0.4], dtype=torch.float64)
    v = torch.einsum("m,mij->ij", w, window)
    w, v = w * 0.5 / v.abs().sum(), v * 0.5 / v.abs().sum()  # |F(delta + v)| >= 0.5: a well-conditioned blur
    up_atoms = torch.zeros_like(atoms)
    up_atoms[3, :, R - 4 : R + 5 : 2, R - 4 : R + 5 : 2] = window
    x = torch.rand(1, 1, N, N, dtype=torch.float64)
    delta = torch.zeros(N, N, dtype=torch.float64)
    delta[0, 0] = 1
    k = inverse(delta + periodic_kernel(v))

    def deconvolve(blurred, bank, g):
        scale = torch.zeros(1, G, N, N, dtype=torch.float64)
        scale[:, g] = 1
        basis = w.view(1, M, 1, 1).expand(1, M, N, N)
        return ops.inverse_kernel_conv(blurred, bank, scale, basis, torch.ones(1, G, 1, M, dtype=torch.float64),
                                       residual=True, backend=backend)[0, 0]

    inner = slice(4, N - 4)  # pixels whose windows stay inside the image (zero padding = periodic there)
    y = deconvolve(periodic_conv(k, x[0, 0])[None, None], atoms, 1)
    assert (y - x[0, 0])[inner, inner].abs().max() < 1e-10
    y_up = deconvolve(periodic_conv(up(k), x[0, 0])[None, None], up_atoms, 3)
    assert (y_up - x[0, 0])[inner, inner].abs().max() < 1e-10
    assert (periodic_conv(up(k), x[0, 0]) - x[0, 0]).abs().max() > 0.1  # the blur is not trivial
