#!/usr/bin/env python3
# golden.py: the PyTorch reference values the assignment checkers compare against
# (assignment1_log_softmax_backward/check.cpp, assignment2_nckd/check.cpp,
# assignment3_rkd_angle/check.cpp). Run it with a Python
# that has torch (tests/reference/ uses /usr/bin/python3, torch 1.13) and paste what it prints
# into the checkers; the inputs are written out in full so that nothing depends on a generator.
import torch

torch.set_printoptions(precision=8)


def show(name, t):
    vals = ", ".join(f"{v:.8g}f" for v in t.flatten().tolist())
    print(f"  // {name} {tuple(t.shape)}\n  {{{vals}}}")


# ---- assignment 1: the backward of log_softmax
print("assignment 1")
x = torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.5], [-0.3, 0.8, -2.0, 1.1, 0.4]], dtype=torch.float64, requires_grad=True)
g = torch.tensor([[1.0, -0.5, 0.25, 2.0, -1.0], [0.3, 0.0, -0.7, 0.9, 1.2]], dtype=torch.float64)
torch.log_softmax(x, 1).backward(g)
show("dx, dim = 1", x.grad)
x0 = torch.tensor([[0.2, -0.4, 1.0, 0.7], [1.3, 0.1, -0.6, 0.0], [-1.1, 0.9, 0.3, 2.0]], dtype=torch.float64,
                  requires_grad=True)
g0 = torch.tensor([[0.5, 1.0, -1.0, 0.0], [-0.2, 0.4, 0.6, 1.5], [1.0, -0.3, 0.2, -0.8]], dtype=torch.float64)
torch.log_softmax(x0, 0).backward(g0)
show("dx, dim = 0", x0.grad)

# ---- assignment 2: DKD's NCKD term, as mdistiller's dkd_loss computes it
print("assignment 2")
zs = torch.tensor([[1.0, 2.0, 0.5, -1.0, 0.0], [0.3, -0.2, 1.5, 0.8, -0.6], [2.0, 0.1, 0.4, -0.5, 1.2]],
                  dtype=torch.float64, requires_grad=True)
zt = torch.tensor([[0.5, 3.0, 0.0, -0.5, 0.2], [0.0, 0.4, 2.5, 1.0, -1.0], [1.5, -0.3, 0.9, 0.0, 2.2]],
                  dtype=torch.float64)
y = torch.tensor([1, 2, 4])
T = 4.0
gt_mask = torch.zeros_like(zs).scatter_(1, y.unsqueeze(1), 1)
log_p_hat_s = torch.log_softmax(zs / T - 1000.0 * gt_mask, dim=1)
p_hat_t = torch.softmax(zt / T - 1000.0 * gt_mask, dim=1)
nckd = torch.nn.functional.kl_div(log_p_hat_s, p_hat_t, reduction="sum") * T**2 / zs.shape[0]
nckd.backward()
# the target entry of log p̂s is about -1000/T-ish: report the non-target entries only
other = (1 - gt_mask).bool()
show("log p_hat_s at the non-target classes", log_p_hat_s.detach()[other].reshape(3, 4))
show("p_hat_t", p_hat_t.detach())
print(f"  // NCKD\n  {nckd.item():.10g}")
show("d NCKD / d zs", zs.grad)

# ---- assignment 3: RKD's angle loss, as mdistiller's rkd_loss (RKD.py) computes it
print("assignment 3")
fs = torch.tensor([[1.0, 0.0, 0.5], [0.2, 1.5, -0.3], [-0.5, 2.9, -1.0], [0.6, -0.9, -1.2]], dtype=torch.float64,
                  requires_grad=True)
ft = torch.tensor([[0.5, -1.0, 0.3, 2.0, 0.0], [1.2, 0.7, -0.4, 0.1, 0.9], [-0.8, 0.2, 1.1, -0.6, 0.3],
                   [0.0, 1.4, -0.2, 0.5, -1.3]], dtype=torch.float64)


def angle(e):
    d = e.unsqueeze(0) - e.unsqueeze(1)  # d[i][j] = e_j - e_i
    norm_d = torch.nn.functional.normalize(d, p=2, dim=2)
    return torch.bmm(norm_d, norm_d.transpose(1, 2))  # [i][j][k]


with torch.no_grad():
    t_angle = angle(ft)
s_angle = angle(fs)
loss_a = torch.nn.functional.smooth_l1_loss(s_angle.view(-1), t_angle.view(-1))
loss_a.backward()
# rows 0, 1, 2 sit on one line in the student (an angle of -1 at i = 1) but not in the teacher:
# some entries differ by more than beta = 1 and take smooth_l1's linear branch
print(f"  // entries with |psi_s - psi_t| > 1: {int(((s_angle - t_angle).abs() > 1).sum())}")
show("psi_A of fs", s_angle.detach())
show("psi_A of ft", t_angle)
print(f"  // L_A\n  {loss_a.item():.10g}")
show("d L_A / d fs", fs.grad)
