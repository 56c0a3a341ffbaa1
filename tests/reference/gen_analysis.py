"""Golden values for analysis/analysis.h (kdlab analyze): agreement, KL, JS, ECE, linear and
debiased CKA, written independently in float64 PyTorch following the papers' definitions
(ECE: Guo et al. 2017, 15 equal-width bins; CKA: Kornblith et al. 2019; debiased CKA: the
unbiased HSIC estimator of Song et al. 2012 as in Nguyen et al. 2021).
    /usr/bin/python3 tests/reference/gen_analysis.py
"""
import torch

from golden import case, write

torch.manual_seed(0)
D = torch.float64


def agreement(a, b):
    return (a.argmax(1) == b.argmax(1)).double().mean().float()


def kl(t, s):
    pt, lpt, lps = t.double().softmax(1), t.double().log_softmax(1), s.double().log_softmax(1)
    return (pt * (lpt - lps)).sum(1).mean().float()


def js(a, b):
    pa, pb = a.double().softmax(1), b.double().softmax(1)
    m = 0.5 * (pa + pb)
    return (0.5 * (pa * (pa / m).log()).sum(1) + 0.5 * (pb * (pb / m).log()).sum(1)).mean().float()


def ece(logits, labels, bins=15):
    p = logits.double().softmax(1)
    conf, pred = p.max(1)
    acc = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=D)
    total = torch.zeros((), dtype=D)
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        inside = (conf > lo) & (conf <= hi) if b > 0 else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.double().mean() * (acc[inside].mean() - conf[inside].mean()).abs()
    return total.float()


def linear_cka(X, Y):
    X, Y = X.double(), Y.double()
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return ((X.T @ Y).norm() ** 2 / ((X.T @ X).norm() * (Y.T @ Y).norm())).float()


def hsic_u(K, L):
    n = K.shape[0]
    K, L = K.clone(), L.clone()
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    one = torch.ones(n, 1, dtype=D)
    t1 = torch.trace(K @ L)
    t2 = (one.T @ K @ one) * (one.T @ L @ one) / ((n - 1) * (n - 2))
    t3 = 2.0 / (n - 2) * (one.T @ K @ L @ one)
    return ((t1 + t2 - t3) / (n * (n - 3))).squeeze()


def debiased_cka(X, Y):
    K, L = X.double() @ X.double().T, Y.double() @ Y.double().T
    return (hsic_u(K, L) / (hsic_u(K, K) * hsic_u(L, L)).sqrt()).float()


def rbf_cka(X, Y, frac=1.0):
    def gram(A):
        A = A.double()
        D = torch.cdist(A, A) ** 2
        d = torch.cdist(A, A)
        iu = torch.triu_indices(A.shape[0], A.shape[0], 1)
        med = d[iu[0], iu[1]].sort().values[(iu.shape[1]) // 2]  # the upper median, as the C++ side
        sigma = frac * med
        return torch.exp(-D / (2 * sigma * sigma))
    n = X.shape[0]
    H = torch.eye(n, dtype=D) - 1.0 / n
    K, L = gram(X), gram(Y)
    hsic = lambda A, B: torch.trace(A @ H @ B @ H)
    return (hsic(K, L) / (hsic(K, K) * hsic(L, L)).sqrt()).float()


cases = []
for i, (n, k) in enumerate([(6, 3), (40, 10), (200, 100)]):
    a, b = torch.randn(n, k) * 3, torch.randn(n, k) * 3
    b[: n // 2] = a[: n // 2] + 0.1 * torch.randn(n // 2, k)  # half of the rows agree
    y = torch.randint(0, k, (n,))
    cases.append(case(f"agreement_{i}", "agreement", agreement, [a, b], grad=False))
    cases.append(case(f"kl_{i}", "kl", kl, [a, b], grad=False, rtol=1e-5))
    cases.append(case(f"js_{i}", "js", js, [a, b], grad=False, rtol=1e-5))
    cases.append(case(f"ece_{i}", "ece", ece, [a, y], grad=False, rtol=1e-5, atol=1e-6))
for i, (n, p, q) in enumerate([(8, 3, 5), (50, 16, 8), (120, 64, 32)]):
    X = torch.randn(n, p)
    Y = torch.cat([X[:, : min(p, q)] @ torch.randn(min(p, q), min(p, q)), torch.randn(n, q - min(p, q))], 1)
    cases.append(case(f"linear_cka_{i}", "linear_cka", linear_cka, [X, Y], grad=False, rtol=1e-4))
    cases.append(case(f"rbf_cka_{i}", "rbf_cka", rbf_cka, [X, Y], grad=False, rtol=1e-3, atol=1e-4))
    cases.append(case(f"debiased_cka_{i}", "debiased_cka", debiased_cka, [X, Y], grad=False, rtol=1e-3, atol=1e-4))
write("analysis.json", cases)
