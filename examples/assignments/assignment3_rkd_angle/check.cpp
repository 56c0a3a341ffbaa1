// check.cpp: assignment 3's checker. Built twice: against skeleton.cpp (assignment3_skeleton, the
// student's file) and against solution.cpp (assignment3_solution). Prints PASS/FAIL per part and
// exits 0 only when every part passes.
//
// Golden values: PyTorch 1.13 running mdistiller's rkd_loss angle term (examples/assignments/
// golden.py). The last part compares with kdlab's own RKD distiller (distill/relation/rkd.cpp)
// through the method registry, as `kdlab train --method rkd` builds it.
#include <cmath>

#include "distill/distiller.h"
#include "engine/engine.h"
#include "examples/assignments/assignment3_rkd_angle/assignment.h"
#include "examples/assignments/checker.h"

using namespace kd;

namespace {

// "" when psi has shape (B, B, B) and is 0 wherever j = i or k = i, 1 at [i][j][j] (j != i) and
// symmetric in j and k; else the first entry that breaks one of these.
std::string angle_structure(const Tensor& psi, int64_t B) {
  if (!psi.defined()) return "angle_relation returned an undefined Tensor";
  if (psi.shape() != Shape{B, B, B}) return "shape " + shape_str(psi.shape()) + fmt::format(", expected ({0}, {0}, {0})", B);
  const std::vector<float> v = to_float_vector(psi);
  auto at = [&](int64_t i, int64_t j, int64_t k) { return (double)v[(size_t)((i * B + j) * B + k)]; };
  for (int64_t i = 0; i < B; ++i)
    for (int64_t j = 0; j < B; ++j)
      for (int64_t k = 0; k < B; ++k) {
        if ((j == i || k == i) && !(std::fabs(at(i, j, k)) <= 1e-6))
          return fmt::format("psi[{}][{}][{}] = {:.7g}; u_ii is the zero vector, so entries with j = i or k = i are 0", i,
                             j, k, at(i, j, k));
        if (j != i && j == k && !(std::fabs(at(i, j, k) - 1.0) <= 1e-5))
          return fmt::format("psi[{0}][{1}][{1}] = {2:.7g}, not 1: u_ij must be a unit vector", i, j, at(i, j, k));
        if (!(std::fabs(at(i, j, k) - at(i, k, j)) <= 1e-6))
          return fmt::format("psi[{0}][{1}][{2}] = {3:.7g} but psi[{0}][{2}][{1}] = {4:.7g}: the cosine is symmetric", i,
                             j, k, at(i, j, k), at(i, k, j));
      }
  return "";
}

}  // namespace

int main() {
  assignment::Checker check("Assignment 3: RKD's angle loss");

  // The inputs of the golden values (golden.py): B = 4, the student D = 3, the teacher D = 5.
  // Rows 0, 1, 2 of fs lie (almost) on one line, which the teacher's do not: some angles differ
  // by more than beta = 1 and take smooth_l1's linear branch.
  const Tensor fs = from_vector(std::vector<float>{1.0f, 0.0f, 0.5f,  // (4, 3)
                                                   0.2f, 1.5f, -0.3f,
                                                   -0.5f, 2.9f, -1.0f,
                                                   0.6f, -0.9f, -1.2f},
                                {4, 3});
  const Tensor ft = from_vector(std::vector<float>{0.5f, -1.0f, 0.3f, 2.0f, 0.0f,  // (4, 5)
                                                   1.2f, 0.7f, -0.4f, 0.1f, 0.9f,
                                                   -0.8f, 0.2f, 1.1f, -0.6f, 0.3f,
                                                   0.0f, 1.4f, -0.2f, 0.5f, -1.3f},
                                {4, 5});

  check.part("angle_relation: golden values (PyTorch), the student's (4, 3) features", [&] {
    return assignment::compare(
        assignment::angle_relation(fs),
        {0.f, 0.f, 0.f, 0.f, 0.f, 1.f, 0.99989247f, 0.089399056f, 0.f, 0.99989247f, 1.f, 0.076495694f, 0.f,
         0.089399056f, 0.076495694f, 1.f, 1.f, 0.f, -0.99952774f, 0.65653078f, 0.f, 0.f, 0.f, 0.f, -0.99952774f, 0.f,
         1.f, -0.67668305f, 0.65653078f, 0.f, -0.67668305f, 1.f, 1.f, 0.99987089f, 0.f, 0.86915074f, 0.99987089f, 1.f,
         0.f, 0.87605592f, 0.f, 0.f, 0.f, 0.f, 0.86915074f, 0.87605592f, 0.f, 1.f, 1.f, 0.6925857f, 0.42661189f, 0.f,
         0.6925857f, 1.f, 0.94785074f, 0.f, 0.42661189f, 0.94785074f, 1.f, 0.f, 0.f, 0.f, 0.f, 0.f},
        {4, 4, 4});
  });

  check.part("angle_relation: golden values (PyTorch), the teacher's (4, 5) features (another width D)", [&] {
    return assignment::compare(
        assignment::angle_relation(ft),
        {0.f, 0.f, 0.f, 0.f, 0.f, 1.f, 0.61601078f, 0.62639046f, 0.f, 0.61601078f, 1.f, 0.63797805f, 0.f,
         0.62639046f, 0.63797805f, 1.f, 1.f, 0.f, 0.32155316f, 0.33283337f, 0.f, 0.f, 0.f, 0.f, 0.32155316f, 0.f, 1.f,
         0.47363048f, 0.33283337f, 0.f, 0.47363048f, 1.f, 1.f, 0.54782196f, 0.f, 0.44476965f, 0.54782196f, 1.f, 0.f,
         0.53194391f, 0.f, 0.f, 0.f, 0.f, 0.44476965f, 0.53194391f, 0.f, 1.f, 1.f, 0.52658259f, 0.40594224f, 0.f,
         0.52658259f, 1.f, 0.49383397f, 0.f, 0.40594224f, 0.49383397f, 1.f, 0.f, 0.f, 0.f, 0.f, 0.f},
        {4, 4, 4});
  });

  check.part("angle_relation: zeros where j = i or k = i, ones at [i][j][j], symmetric in j and k, (6, 4)", [&] {
    Generator gen(11);
    return angle_structure(assignment::angle_relation(randn({6, 4}, gen)), 6);
  });

  check.part("angle_relation: the same for a shifted, scaled and rotated copy of the batch (only its shape counts)", [&] {
    Generator gen(12);
    Tensor e = randn({6, 4}, gen);
    // rotate: an orthogonal map of the 4 coordinates (swap the first two, flip the sign of the third)
    Tensor rot = from_vector(std::vector<float>{0, 1, 0, 0, 1, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1}, {4, 4});
    Tensor moved = add(mul(matmul(e, rot), 3.5), from_vector(std::vector<float>{1.0f, -2.0f, 0.5f, 4.0f}, {1, 4}));
    Tensor psi = assignment::angle_relation(e);
    std::string p = angle_structure(psi, 6);
    if (!p.empty()) return p;
    p = assignment::compare(assignment::angle_relation(moved), psi, 1e-4, 1e-5);
    return p.empty() ? p : "psi of 3.5 · e · R + c differs from psi of e: " + p;
  });

  check.part("rkd_angle_loss: golden value (PyTorch)", [&] {
    Tensor l = assignment::rkd_angle_loss(fs, ft);
    if (l.defined() && l.dim() != 0) return "rkd_angle_loss returned shape " + shape_str(l.shape()) + "; it must be 0-d (a scalar)";
    return assignment::compare(l, {0.07086769303f}, {}, 1e-4, 1e-7);
  });

  check.part("rkd_angle_loss: golden gradient d L_A / d fs (PyTorch)", [&] {
    Tensor s = fs.clone().detach().requires_grad_();
    assignment::rkd_angle_loss(s, ft).backward();
    return assignment::compare(s.grad(),
                               {-0.011625416f, 0.0057956841f, -0.023590408f, -0.0048568381f, 0.0024549129f,
                                -0.012981461f, 0.0028925576f, 0.011330796f, 0.01755661f, 0.013589696f, -0.019581393f,
                                0.019015259f},
                               {4, 3}, 1e-4, 1e-7);
  });

  check.part("rkd_angle_loss: the teacher is frozen (no gradient reaches ft); 0 for a copy of the teacher's shape", [&] {
    Tensor s = fs.clone().detach().requires_grad_();
    Tensor t = ft.clone().detach().requires_grad_();
    assignment::rkd_angle_loss(s, t).backward();
    if (t.grad().defined() && max(abs(t.grad())).item() > 0)
      return std::string("ft received a gradient; compute the teacher's relation from ft.detach()");
    const double same = assignment::rkd_angle_loss(add(mul(ft, 2.0), 0.5), ft).item();  // same angles
    if (!(std::fabs(same) <= 1e-7))
      return fmt::format("a student 2 · ft + 0.5 has the teacher's angles, but its loss is {:.7g}, not 0", same);
    return std::string();
  });

  check.part("gradcheck (finite differences): angle_relation on (5, 4)", [&] {
    Generator gen(13);
    Tensor e = randn({5, 4}, gen).requires_grad_();
    return assignment::gradcheck_problem([&](const std::vector<Tensor>& in) { return assignment::angle_relation(in[0]); },
                                         {e});
  });

  check.part("gradcheck (finite differences): 50 · rkd_angle_loss in fs, student (5, 4), teacher (5, 7)", [&] {
    Generator gen(14);
    Tensor s = randn({5, 4}, gen).requires_grad_();
    Tensor t = randn({5, 7}, gen);
    return assignment::gradcheck_problem(
        [&](const std::vector<Tensor>& in) { return mul(assignment::rkd_angle_loss(in[0], t), 50.0); }, {s});
  });

  check.part("50 · rkd_angle_loss equals the angle part of kdlab's rkd distiller (value and gradient), (8, 16) vs (8, 32)", [&] {
    Generator gen(15);
    Tensor s0 = randn({8, 16}, gen), t = mul(randn({8, 32}, gen), 2.0);
    Tensor zs = randn({8, 10}, gen), labels = randint(0, 10, {8}, gen);
    // the method as `--method rkd` builds it, with its default angle_weight 50
    auto rkd = distill::create_distiller("rkd", {}, {});
    nn::ModelOutput student, teacher;
    student.logits = zs;
    student.pooled = s0.clone().detach().requires_grad_();
    teacher.pooled = t;
    distill::BatchInfo batch;
    batch.labels = labels;
    Tensor ref = assignment::part_of(rkd->loss(student, teacher, batch), "angle");
    ref.backward();
    Tensor s = s0.clone().detach().requires_grad_();
    Tensor yours = mul(assignment::rkd_angle_loss(s, t), 50.0);
    std::string p = assignment::compare(yours, ref, 1e-4, 1e-7);
    if (!p.empty()) return "the value: " + p;
    yours.backward();
    p = assignment::compare(s.grad(), student.pooled.grad(), 1e-4, 1e-7);
    return p.empty() ? p : "the gradient: " + p;
  });

  return check.finish();
}
