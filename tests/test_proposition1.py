"""Proposition 1 of the supplement, numerically: the inverse kernel commutes with dyadic
(zero-insertion) upsampling, (k up_s)^dagger = (k^dagger) up_s, in the Fourier domain; hence an
inverse kernel spanned by atoms v_n at one scale is spanned by the upsampled atoms at the next."""
import torch

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


def test_atom_span_carries_over_to_the_upsampled_scale():
    """Eq. 6-7: if k^dagger = sum_n w_n v_n then (k up_s)^dagger = sum_n w_n (v_n up_s)."""
    torch.manual_seed(0)
    k = psf(2)
    atoms = torch.randn(5, N, N, dtype=torch.float64)
    target = inverse(k)
    # k^dagger in the span of the atoms plus a residual atom that makes the span exact
    w = torch.randn(5, dtype=torch.float64)
    v_last = target - torch.einsum("n,nij->ij", w, atoms)
    atoms = torch.cat([atoms, v_last[None]])
    w = torch.cat([w, torch.ones(1, dtype=torch.float64)])
    spanned = torch.einsum("n,nij->ij", w, torch.stack([up(v) for v in atoms]))
    assert torch.allclose(inverse(up(k)), spanned, atol=1e-10)
