"""Golden values for federated distillation (distill/federated/fed_math.h), following
../shared/METHODS.md "Federated distillation" and the official code where there is one:

  FedAvg  w = sum_k n_k / sum_j n_j * w_k over every state tensor (accumulated in float64 in
          client order, then float32, so the C++ result is equal bit for bit);
          num_batches_tracked = the max
  FedDF   epfml/federated-learning-public-code codes/FedDF-code noise_knowledge_transfer.py:
          z_bar = mean of the teachers' logits; KL(softmax(z_bar / T) || softmax(zs / T))
          batchmean, T = 1; one step: backward, clip_grad_norm_(5), Adam(lr 1e-3).step()
  FD      Jeong et al. 2018: per-class mean logits Z_k, the server's mean over the clients that
          hold the class, client loss CE + lambda KL(softmax(Z_bar[y]) || softmax(zs)) batchmean
  FedMD   diogenes0319/FedMD_clean: consensus = mean of the parties' logits; digest = L1 (Keras'
          mean absolute error) of a party's logits to the consensus

Run: /usr/bin/python3 tests/reference/gen_federated.py
"""
import torch
import torch.nn.functional as F

from golden import case, tensor_json, write

g = torch.Generator().manual_seed(28)


def rn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


cases = []   # run by kdtest::run_golden_file (federated.json)
exact = []   # read by their own test cases (federated_exact.json)

# ---------------------------------------------------------------------------------- FedAvg
sizes = [10.0, 25.0, 7.0]
states = []
for k in range(3):
    states.append({"fc.weight": rn(4, 3), "bn.running_var": rn(3).abs() + 0.5,
                   "bn.num_batches_tracked": torch.tensor(5 + 3 * k - 2 * (k == 2), dtype=torch.int64)})
avg = {}
for name in states[0]:
    if states[0][name].dtype == torch.int64:
        avg[name] = torch.stack([s[name] for s in states]).max()
        continue
    acc = torch.zeros(states[0][name].shape, dtype=torch.float64)
    for s, n in zip(states, sizes):
        acc = acc + (n / sum(sizes)) * s[name].double()
    avg[name] = acc.float()
exact.append({"name": "fedavg_three_clients", "op": "fedavg", "sizes": sizes,
              "states": [{n: tensor_json(t) for n, t in s.items()} for s in states],
              "expected": {n: tensor_json(t) for n, t in avg.items()}})

# ---------------------------------------------------------------------------------- FedDF loss


def feddf_loss(zs, t0, t1, t2, T):
    z_bar = (t0 + t1 + t2) / 3
    return F.kl_div(F.log_softmax(zs / T, 1), F.softmax(z_bar / T, 1), reduction="batchmean")


for B, K, scale in [(6, 5, 1.0), (4, 10, 3.0)]:
    cases.append(case(f"feddf_loss_B{B}_K{K}", "feddf_loss", feddf_loss,
                      [rn(B, K, scale=scale), rn(B, K), rn(B, K, scale=2.0), rn(B, K)], {"T": 1.0},
                      rtol=1e-5, atol=1e-6, no_grad=[1, 2, 3]))

# ---------------------------------------------------------------------------------- FedDF step
# A linear student on flattened images: logits = x W^T + b. Large inputs make the gradient norm
# exceed 5, so the clip acts.
B, D, K = 8, 6, 5
W, b = rn(K, D, scale=0.3), rn(K, scale=0.1)
x = rn(B, D, scale=40.0)
teachers = [rn(B, K, scale=2.0) for _ in range(3)]
student = torch.nn.Linear(D, K)
with torch.no_grad():
    student.weight.copy_(W)
    student.bias.copy_(b)
opt = torch.optim.Adam(student.parameters(), lr=1e-3)
z_bar = (teachers[0] + teachers[1] + teachers[2]) / 3
loss = F.kl_div(F.log_softmax(student(x), 1), F.softmax(z_bar, 1), reduction="batchmean")
opt.zero_grad()
loss.backward()
norm = torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
opt.step()
exact.append({"name": "feddf_step_linear", "op": "feddf_step", "x": tensor_json(x), "W": tensor_json(W),
              "b": tensor_json(b), "teachers": [tensor_json(t) for t in teachers], "loss": float(loss),
              "grad_norm": float(norm), "W_after": tensor_json(student.weight), "b_after": tensor_json(student.bias)})

# ---------------------------------------------------------------------------------- FD


def class_means(z, y, K):
    means, counts = torch.zeros(K, K), torch.zeros(K, dtype=torch.int64)
    for c in range(K):
        m = y == c
        counts[c] = int(m.sum())
        if counts[c] > 0:
            means[c] = z[m].sum(0) / counts[c]
    return means, counts


K = 4
fd_logits = [rn(7, K), rn(5, K), rn(6, K)]
fd_labels = [torch.tensor([0, 1, 1, 2, 0, 0, 1]), torch.tensor([3, 3, 1, 1, 3]), torch.tensor([0, 2, 2, 2, 0, 2])]
tables = [class_means(z, y, K) for z, y in zip(fd_logits, fd_labels)]
global_table = torch.zeros(K, K)
for c in range(K):
    holders = [m[c] for m, n in tables if n[c] > 0]
    if holders:
        global_table[c] = torch.stack(holders).double().sum(0).div(len(holders)).float()
exact.append({"name": "fd_table_three_clients", "op": "fd_table",
              "logits": [tensor_json(z) for z in fd_logits], "labels": [tensor_json(y) for y in fd_labels],
              "means": [tensor_json(m) for m, _ in tables], "counts": [tensor_json(n) for _, n in tables],
              "global": tensor_json(global_table)})


def fd_client_loss(zs, y, table, **params):
    zt = table[y]
    return F.cross_entropy(zs, y) + params["lambda"] * F.kl_div(F.log_softmax(zs, 1), F.softmax(zt, 1), reduction="batchmean")


for lam in [1.0, 0.5]:
    cases.append(case(f"fd_client_loss_lambda{lam}", "fd_client_loss", fd_client_loss,
                      [rn(6, K, scale=2.0), torch.tensor([0, 1, 2, 3, 2, 0]), global_table], {"lambda": lam},
                      rtol=1e-5, atol=1e-6, no_grad=[2]))

# ---------------------------------------------------------------------------------- FedMD


def fedmd(zs, p0, p1, p2):
    consensus = (p0 + p1 + p2) / 3
    return F.l1_loss(zs, consensus), consensus


cases.append(case("fedmd_consensus_digest", "fedmd", fedmd, [rn(5, 10, scale=2.0), rn(5, 10), rn(5, 10), rn(5, 10)],
                  {}, rtol=1e-5, atol=1e-6, no_grad=[1, 2, 3]))

write("federated.json", cases)
write("federated_exact.json", exact)
