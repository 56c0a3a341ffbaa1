// VRM (distill/relation/vrm.h): golden values and gradients from the paper's equations
// (tests/reference/gen_vrm.py, written independently: all-pairs tensors and masks); the edge
// sets and their pruning (redundant halves, unreliable edges detached or dropped); gradchecks;
// zero loss when the student equals the teacher; errors; the training loop's virtual views
// (train.h make_virtual_batch, Run::virtual_loss) and a student trained end to end with them.
#include <fstream>

#include "distill/relation/vrm.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/models/model.h"
#include "distill_test_util.h"
#include "distill_run_test_util.h"
#include "test_util.h"

using namespace kd;
using namespace kd::distill;
using kdtest::outputs_of;
using kdtest::params_from;
using kdtest::part;
using kdtest::json;
using V = std::vector<Tensor>;

namespace {

nn::ModelOutput logits_out(const Tensor& z) {
  nn::ModelOutput o;
  o.logits = z;
  return o;
}

BatchInfo virtual_batch(const Tensor& y, const Tensor& vs, const Tensor& vt) {
  BatchInfo b;
  b.labels = y;
  b.student_virtual = logits_out(vs);
  b.teacher_virtual = logits_out(vt);
  return b;
}

Tensor leaf(Tensor t) { return t.requires_grad_(); }

}  // namespace

TEST_CASE("VRM: golden values and gradients from the paper's equations") {
  kdtest::GoldenTable table = {
      {"vrm", [](const V& x, const json& p) {
         // inputs: zs, zt, vs, vt, labels
         auto d = create_distiller("vrm", params_from(p), {});
         return outputs_of(distill_loss(*d, logits_out(x[0]), logits_out(x[1]), virtual_batch(x[4], x[2], x[3])));
       }}};
  CHECK(kdtest::run_golden_file("vrm.json", table) == 5);
}

TEST_CASE("VRM: the edge sets, their antisymmetric halves, and the unreliable edges") {
  VrmOptions o;
  // 2B = 6 vertices: 3 real-real, 3 virtual-virtual, 9 real-virtual pairs, each once (i < j)
  CHECK(vrm_sample_pairs(3, o).size() == 15);
  o.virtual_virtual = o.real_virtual = false;
  CHECK(vrm_sample_pairs(3, o) == (std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {0, 2}, {1, 2}}));
  o.real_real = false;
  o.real_virtual = true;
  auto rv = vrm_sample_pairs(3, o);
  CHECK(rv.size() == 9);
  for (auto [i, j] : rv) CHECK((i < 3 && j >= 3));
  // the pruned half is redundant: E_ji = -E_ij, unit length
  Generator gen(4);
  Tensor Z = randn({4, 5}, gen);
  Tensor E = vrm_edges(Z, {{0, 1}, {2, 3}});
  Tensor Er = vrm_edges(Z, {{1, 0}, {3, 2}});
  CHECK(max(abs(add(E, Er))).item() < 1e-6);
  CHECK(norm(E.select(0, 0)).item() == doctest::Approx(1.0).epsilon(1e-6));
  // identical vertices: a zero edge, not NaN
  Tensor same = vrm_edges(cat({Z.slice(0, 0, 1), Z.slice(0, 0, 1)}, 0), {{0, 1}});
  CHECK(max(abs(same)).item() == 0.0);
  // unreliable edges: vertex 0 has uniform logits (the highest entropy), the others are confident;
  // its two edges have the highest joint entropy
  Tensor Zs = from_vector(std::vector<float>{0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 7}, {3, 4});
  std::vector<std::pair<int64_t, int64_t>> rr{{0, 1}, {0, 2}, {1, 2}};
  CHECK(to_float_vector(vrm_unreliable(Zs, rr, 2.0 / 3.0)) == std::vector<float>{1, 1, 0});
  CHECK(to_float_vector(vrm_unreliable(Zs, rr, 0.5)) == std::vector<float>{0, 1, 0});  // floor(1.5): (0,2), less sure 2
  CHECK(to_float_vector(vrm_unreliable(Zs, rr, 0.0)) == std::vector<float>{0, 0, 0});
}

TEST_CASE("VRM: detached unreliable edges keep their value but carry no gradient; dropped ones leave the mean") {
  Tensor zs0 = from_vector(std::vector<float>{0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 7}, {3, 4});  // vertex 0 unsure
  Generator gen(8);
  Tensor zt = randn({3, 4}, gen), vs = randn({3, 4}, gen), vt = randn({3, 4}, gen);
  Tensor y = from_vector(std::vector<int64_t>{0, 1, 2}, {3});
  VrmOptions o;
  o.virtual_virtual = o.real_virtual = false;  // the three real-real edges
  o.ic_weight = 0;                             // the inter-sample term alone (no CE in vrm_loss)
  o.unreliable_ratio = 0.0;
  const double all_edges = vrm_loss(zs0, zt, vs, vt, y, o).total.item();
  o.unreliable_ratio = 2.0 / 3.0;  // the two edges at vertex 0
  Tensor zs = leaf(zs0.clone());
  LossBreakdown l = vrm_loss(zs, zt, vs, vt, y, o);
  CHECK(l.total.item() == doctest::Approx(all_edges).epsilon(1e-6));  // detach: the same value
  l.total.backward();
  CHECK(max(abs(zs.grad().select(0, 0))).item() == 0.0);  // vertex 0's edges are all detached
  CHECK(max(abs(zs.grad().select(0, 1))).item() > 0.0);   // edge (1, 2) still trains
  // drop: the value is edge (1, 2)'s alone
  o.prune = "drop";
  const double drop = vrm_loss(zs0, zt, vs, vt, y, o).total.item();
  Tensor E_s = vrm_edges(zs0, {{1, 2}}), E_t = vrm_edges(zt, {{1, 2}});
  const double by_hand = sum(huber_loss(E_s, E_t, Reduction::None, 1.0)).item();
  CHECK(drop == doctest::Approx(by_hand).epsilon(1e-5));
}

TEST_CASE("VRM: gradcheck w.r.t. the student's real and virtual logits") {
  Generator gen(12);
  const int64_t B = 3, K = 4;
  Tensor y = randint(0, K, {B}, gen);
  Tensor zt = randn({B, K}, gen), vt = randn({B, K}, gen);
  for (const std::string prune : {"detach", "drop"}) {
    for (double delta : {1.0, 0.1}) {
      CAPTURE(prune);
      CAPTURE(delta);
      VrmOptions o;
      o.prune = prune;
      o.delta = delta;
      o.virtual_ce_weight = 0.5;
      // detach keeps the unreliable edges in the value but not in the gradient, so finite
      // differences see them: check the derivative with no edge detached (drop: a true derivative)
      if (prune == "detach") o.unreliable_ratio = 0.0;
      Tensor zs = leaf(mul(randn({B, K}, gen), 2.0)), vs = leaf(mul(randn({B, K}, gen), 2.0));
      CHECK_GRADCHECK([&](const V& x) { return vrm_loss(x[0], zt, x[1], vt, y, o).total; }, V{zs, vs});
    }
  }
}

TEST_CASE("VRM: zero relation loss when the student equals the teacher; errors") {
  Generator gen(13);
  Tensor z = randn({4, 5}, gen), v = randn({4, 5}, gen);
  Tensor y = randint(0, 5, {4}, gen);
  LossBreakdown l = vrm_loss(z, z, v, v, y, {});
  CHECK(part(l, "inter_sample") == 0.0);
  CHECK(part(l, "inter_class") == 0.0);
  CHECK(l.parts.size() == 3);  // VRM's own terms: distill_loss adds the CE of the real view
  // scaling the student's logits does not change its edges (unit vectors)
  LossBreakdown scaled = vrm_loss(mul(z, 3.0), z, mul(v, 3.0), v, y, {});
  CHECK(part(scaled, "inter_sample") < 1e-10);
  CHECK(part(scaled, "inter_class") < 1e-10);
  // another teacher: positive
  CHECK(part(vrm_loss(z, randn({4, 5}, gen), v, randn({4, 5}, gen), y, {}), "inter_sample") > 0);
  // the registry row and the needs
  auto d = create_distiller("vrm", {}, {});
  CHECK(d->needs().virtual_views);
  CHECK_FALSE(d->needs().logits_only());  // the teacher cache cannot serve virtual views
  CHECK(d->params()["unreliable_ratio"] == "0.2");
  bool found = false;
  for (const DistillerEntry& e : distiller_registry())
    if (e.name == "vrm") found = e.family == "relation";
  CHECK(found);
  BatchInfo no_views;
  no_views.labels = y;
  CHECK_THROWS_WITH_SUBSTR(d->loss(logits_out(z), logits_out(z), no_views), "virtual views' logits are missing");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("vrm", {{"prune", "cut"}}, {}), "prune=detach");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("vrm", {{"unreliable_ratio", "1"}}, {}), "[0, 1)");
  CHECK_THROWS_WITH_SUBSTR(
      create_distiller("vrm", {{"real_real", "false"}, {"virtual_virtual", "false"}, {"real_virtual", "false"}}, {}),
      "no inter-sample edge");
  CHECK_THROWS_WITH_SUBSTR(create_distiller("vrm", {{"threshold", "1"}}, {}), "unknown parameter");
}

// ============================================================================ the training loop

namespace {

train::TrainConfig tiny_config() {
  train::TrainConfig c = kdtest::tiny_config();  // smaller still: 64 images, 1 epoch
  c.train_limit = 64;
  c.test_limit = 32;
  c.epochs = 1;
  return c;
}

}  // namespace

TEST_CASE("virtual views: make_virtual_batch re-augments the same images, reproducibly") {
  train::Run run = train::prepare_run(tiny_config(), kdtest::temp_path("vrm_views"), "test");
  data::Batch b;
  b.indices = from_vector(std::vector<int64_t>{5, 0, 17}, {3});
  b.labels = index_select(run.train_set.labels, 0, b.indices);
  b.epoch = 2;
  b.batch_index = 1;
  auto vrm = std::dynamic_pointer_cast<VrmDistiller>(create_distiller("vrm", {}, {}));
  const data::TransformConfig tc = vrm->virtual_transform(run.train_set);
  CHECK(tc.strong_ops == 2);
  CHECK(tc.cutout_size == run.train_set.height() / 2);
  data::Batch v1 = train::make_virtual_batch(run.train_set, b, tc, 7);
  data::Batch v2 = train::make_virtual_batch(run.train_set, b, tc, 7);
  REQUIRE(v1.images.shape() == (Shape{3, run.train_set.channels(), run.train_set.height(), run.train_set.width()}));
  CHECK(max(abs(sub(v1.images, v2.images))).item() == 0.0);  // the same (seed, epoch, batch): the same views
  CHECK(max(abs(sub(v1.labels.to(DType::f32), b.labels.to(DType::f32)))).item() == 0.0);
  REQUIRE(v1.aug.size() == 3);
  CHECK(v1.aug[0].strong.size() == 2);
  // each view is its own image under its recorded augmentation
  for (int64_t i = 0; i < 3; ++i) {
    Tensor img = run.train_set.images.select(0, (int64_t)b.indices.at({i}));
    Tensor again = data::apply_transform(img.contiguous(), v1.aug[(size_t)i], tc);
    CHECK(max(abs(sub(again, v1.images.select(0, i)))).item() == 0.0);
  }
  b.batch_index = 2;  // another batch: other draws
  CHECK(max(abs(sub(train::make_virtual_batch(run.train_set, b, tc, 7).images, v1.images))).item() > 0.0);
}

TEST_CASE("VRM trains a student end to end with virtual views through both networks") {
  train::TrainConfig c = tiny_config();
  c.epochs = 2;
  train::Run run = train::prepare_run(c, kdtest::temp_path("vrm_e2e"), "test");
  auto teacher = nn::create_model("resnet8", {4, run.train_set.channels(), run.train_set.height(), 11});
  teacher->eval();
  auto dist = create_distiller("vrm", {{"is_weight", "2"}}, {});
  auto vrm = std::dynamic_pointer_cast<VrmDistiller>(dist);
  int64_t calls = 0;
  attach_virtual_views(run, teacher, dist, vrm->virtual_transform(run.train_set), c.epochs);
  auto inner = run.virtual_loss;
  run.virtual_loss = [&](const nn::ModelOutput& out, const data::Batch& batch, const nn::ModelOutput& vout,
                         const data::Batch& vbatch, int64_t epoch) {
    ++calls;
    CHECK(vout.logits.shape() == out.logits.shape());
    CHECK(max(abs(sub(vbatch.images, batch.images))).item() > 0.0);  // a different view of the same images
    CHECK(max(abs(sub(vbatch.indices.to(DType::f32), batch.indices.to(DType::f32)))).item() == 0.0);
    return inner(out, batch, vout, vbatch, epoch);
  };
  train::RunSummary s = train::run_training(run, false);
  CHECK_FALSE(s.interrupted);
  CHECK(calls == 4);  // 2 epochs x 2 batches
  std::ifstream mf(run.out_dir + "/metrics.jsonl");
  std::vector<json> m;
  std::string line;
  while (std::getline(mf, line))
    if (!line.empty()) m.push_back(json::parse(line));
  REQUIRE(m.size() == 2);
  for (const char* p : {"loss_ce", "loss_virtual_ce", "loss_inter_sample", "loss_inter_class"}) CHECK(m[0].contains(p));
  CHECK(m[0]["loss_inter_sample"].get<double>() > 0.0);
}
