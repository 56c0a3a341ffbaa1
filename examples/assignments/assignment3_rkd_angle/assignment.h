// Assignment 3: RKD's angle loss.
//
// RKD (Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR 2019, arXiv 1904.05068;
// distill/relation/rkd.h) makes the student copy how the teacher's embeddings of a batch relate
// to each other, not the embeddings themselves. Its angle term looks at every triplet of samples
// (i, j, k): the cosine of the angle at e_i between the directions to e_j and to e_k. As in the
// official code (mdistiller, RKD.py, rkd_loss), with e = the (B, D) features of one network:
//   u_ij = (e_j - e_i) / max(||e_j - e_i||, 1e-12)        a unit vector; the zero vector when j = i
//   psi_A(i, j, k) = < u_ij, u_ik >                        (B, B, B), each entry in [-1, 1]
//   L_A = 1 / B³ · Σ_ijk smooth_l1(psi_A^s(i, j, k), psi_A^t(i, j, k))
//   smooth_l1(a, b) = 0.5 (a - b)²  where |a - b| < 1,  |a - b| - 0.5  elsewhere   (beta = 1)
// The student's features e^s (B, Ds) and the teacher's e^t (B, Dt) may differ in width D: psi_A
// only compares samples of one network with each other. RKD trains with 50 · L_A (plus 25 times
// its distance term and the cross-entropy); this assignment is L_A alone.
// You write the two functions in skeleton.cpp; the checker (check.cpp) tests them part by part.
#pragma once
#include "engine/tensor.h"

namespace assignment {

// psi_A of a batch: e (B, D) float32 with B >= 2. Returns (B, B, B) with [i][j][k] = <u_ij, u_ik>;
// the entries with j = i or k = i are 0. Differentiable in e.
kd::Tensor angle_relation(const kd::Tensor& e);

// L_A between the student's features fs (B, Ds) and the teacher's ft (B, Dt), the same batch B:
// a 0-d tensor, differentiable in fs. The teacher is frozen: no gradient may flow into ft.
kd::Tensor rkd_angle_loss(const kd::Tensor& fs, const kd::Tensor& ft);

}  // namespace assignment
