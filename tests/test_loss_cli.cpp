// `kdlab loss` and `kdlab distill --list` end to end: the built binary against the in-process
// losses, the explain dumps, and its error messages. (The losses themselves are tested in
// test_distill_output.cpp.)
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/wait.h>
#include "distill/distiller.h"
#include "distill/output/dgkd.h"
#include "distill/output/dkd.h"
#include "distill/output/kd.h"
#include "distill/output/wkd_cost.h"
#include "distill/output/wkd_l.h"
#include "engine/npy.h"
#include "distill_test_util.h"
#include "test_util.h"

using namespace kd;
using namespace kd::distill;
using kdtest::json;
using V = std::vector<Tensor>;

namespace {
Tensor random_labels(int64_t B, int64_t K, Generator& gen) { return randint(0, K, {B}, gen); }
Tensor random_cost(int64_t K, Generator& gen) { return cost_matrix_cosine(randn({K, 6}, gen)); }
}  // namespace

// ============================================================================ kdlab loss, end to end

#ifdef KDLAB_BIN
namespace {

struct Shell {
  int code;
  std::string out, err;
};

Shell shell(const std::string& args) {
  const std::string out = kdtest::temp_path("stdout.txt"), err = kdtest::temp_path("stderr.txt");
  const std::string cmd = std::string("\"") + KDLAB_BIN + "\" " + args + " >\"" + out + "\" 2>\"" + err + "\"";
  int rc = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  };
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(out), slurp(err)};
}

}  // namespace

TEST_CASE("kdlab loss: --json, --grad-out and --explain match the in-process loss") {
  Generator gen(24);
  const int64_t B = 3, K = 5;
  Tensor zs = randn({B, K}, gen), zt = mul(randn({B, K}, gen), 2.0), y = random_labels(B, K, gen);
  Tensor a1 = randn({B, K}, gen), D = random_cost(K, gen);
  const std::string S = kdtest::temp_path("s.npy"), T = kdtest::temp_path("t.npy"), Y = kdtest::temp_path("y.npy"),
                    A = kdtest::temp_path("a.npy"), C = kdtest::temp_path("c.npy"), G = kdtest::temp_path("g.npy");
  save_npy(S, zs);
  save_npy(T, zt);
  save_npy(Y, y);
  save_npy(A, a1);
  save_npy(C, D);
  const std::string io = "--student-logits " + S + " --teacher-logits " + T + " --labels " + Y;

  struct Case {
    std::string method, extra;
    std::function<LossBreakdown(const Tensor&)> expect;
  };
  std::vector<Case> cases = {
      {"kd", "--set T=2",
       [&](const Tensor& z) { KdOptions o; o.T = 2; return add_cross_entropy(kd_loss(z, zt, y, o), z, y, 0.1); }},
      {"dkd", "--set beta=2",
       [&](const Tensor& z) { DkdOptions o; o.beta = 2; return add_cross_entropy(dkd_loss(z, zt, y, o, 20), z, y, 1.0); }},
      {"dkd", "--epoch 5", [&](const Tensor& z) { return add_cross_entropy(dkd_loss(z, zt, y, {}, 5), z, y, 1.0); }},
      {"dgkd", "--assistant-logits " + A + " --set drop_num=0 --set lambda=0.5",
       [&](const Tensor& z) {
         DgkdOptions o;
         o.lambda = 0.5;
         o.ce_weight = 0.5;
         o.drop_num = 0;
         return add_cross_entropy(dgkd_loss(z, {zt, a1}, y, {true, true}, o), z, y, o.ce_weight);
       }},
      {"wkd_l", "--cost-matrix " + C + " --set gamma=20 --set tau=4",
       [&](const Tensor& z) {
         WkdLOptions o;
         o.gamma = 20;
         o.tau = 4;
         return add_cross_entropy(wkd_l_loss(z, zt, y, D, o, 1, 240), z, y, 1.0);
       }},
  };
  for (const Case& c : cases) {
    CAPTURE(c.method);
    CAPTURE(c.extra);
    Shell r = shell("loss " + c.method + " " + io + " " + c.extra + " --json --grad-out " + G);
    INFO(r.err);
    REQUIRE(r.code == 0);
    json j = json::parse(r.out);  // nothing else on stdout
    Tensor z = zs.detach().clone().requires_grad_();
    LossBreakdown l = c.expect(z);
    l.total.backward();
    CHECK(j["method"] == c.method);
    CHECK(j["loss"].get<double>() == doctest::Approx(l.total.item()).epsilon(1e-6));
    REQUIRE(j["parts"].size() == l.parts.size());
    for (const auto& [name, value] : l.parts)
      CHECK(j["parts"][name].get<double>() == doctest::Approx(value.item()).epsilon(1e-6));
    Tensor g = load_npy(G);
    CHECK(g.shape() == zs.shape());
    CHECK(kdtest::allclose(g, z.grad(), 1e-6, 1e-7).ok);
  }
  // --explain prints the intermediates; with --json they go to stderr
  Shell e = shell("loss dkd " + io + " --explain");
  CHECK(e.code == 0);
  CHECK(e.out.find("tckd_b") != std::string::npos);
  CHECK(e.out.find("p_hat_t") != std::string::npos);
  CHECK(e.out.find("loss") != std::string::npos);
  Shell ej = shell("loss wkd_l " + io + " --cost-matrix " + C + " --explain --json");
  CHECK(ej.code == 0);
  CHECK_NOTHROW(json::parse(ej.out));
  CHECK(ej.err.find("transport_plan") != std::string::npos);
}

TEST_CASE("kdlab loss: --explain-dir writes every intermediate whole, in order") {
  Generator gen(26);
  const int64_t B = 3, K = 5;
  Tensor zs = randn({B, K}, gen), zt = mul(randn({B, K}, gen), 2.0), y = random_labels(B, K, gen);
  const std::string S = kdtest::temp_path("xs.npy"), T = kdtest::temp_path("xt.npy"), Y = kdtest::temp_path("xy.npy"),
                    dir = kdtest::temp_path("explain_dir");
  save_npy(S, zs);
  save_npy(T, zt);
  save_npy(Y, y);
  const std::string io = "--student-logits " + S + " --teacher-logits " + T + " --labels " + Y;
  Shell printed = shell("loss dkd " + io + " --explain");
  REQUIRE(printed.code == 0);
  Shell r = shell("loss dkd " + io + " --explain-dir " + dir + " --json");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK_NOTHROW(json::parse(r.out));  // stdout still carries only the JSON
  std::ifstream f(dir + "/explain.json");
  REQUIRE(f.good());
  json index = json::parse(f);
  // the same intermediates as the printout, in the same order
  std::vector<std::string> names;
  std::istringstream lines(printed.out);
  for (std::string line; std::getline(lines, line);)
    if (line.size() > 5 && line[0] == '[' && line[3] == ']') names.push_back(line.substr(5, line.find(' ', 5) - 5));
  REQUIRE(index.size() == names.size());
  REQUIRE(names.size() >= 5);
  for (size_t i = 0; i < names.size(); ++i) {
    CAPTURE(i);
    CHECK(index[i]["step"] == int(i + 1));
    CHECK(index[i]["name"] == names[i]);
    Tensor t = load_npy(dir + "/" + index[i]["file"].get<std::string>());
    CHECK(t.shape() == index[i]["shape"].get<Shape>());
  }
  // whole values: the last intermediate is the loss, the student's log-probabilities log_softmax(zs / T)
  Tensor total = load_npy(dir + "/loss.npy");
  CHECK(total.item() ==
        doctest::Approx(add_cross_entropy(dkd_loss(zs, zt, y, {}, 20), zs, y, 1.0).total.item()).epsilon(1e-6));
  bool saw_log_ps = false;
  for (const auto& e : index)
    if (e["name"] == "log_ps") {
      saw_log_ps = true;
      CHECK(kdtest::allclose(load_npy(dir + "/log_ps.npy"), log_softmax(mul(zs, 1.0 / 4), 1), 1e-6, 1e-6).ok);  // T = 4
    }
  CHECK(saw_log_ps);
}

TEST_CASE("kdlab loss: clear errors") {
  Generator gen(25);
  const std::string S = kdtest::temp_path("s.npy"), T3 = kdtest::temp_path("t3.npy"), Y = kdtest::temp_path("y.npy"),
                    Ybad = kdtest::temp_path("ybad.npy"), S2 = kdtest::temp_path("s2.npy"), Y2 = kdtest::temp_path("y2.npy");
  save_npy(S, randn({3, 4}, gen));
  save_npy(T3, randn({3, 5}, gen));
  save_npy(Y, from_vector(std::vector<int64_t>{0, 1, 2}, {3}));
  save_npy(Ybad, from_vector(std::vector<int64_t>{0, 9, 2}, {3}));
  save_npy(S2, randn({3, 2}, gen));
  save_npy(Y2, from_vector(std::vector<int64_t>{0, 1, 1}, {3}));
  auto expect_error = [](const Shell& r, const std::string& text) {
    INFO(r.err);
    CHECK(r.code != 0);
    CHECK(r.err.find(text) != std::string::npos);
    CHECK(r.out.empty());
  };
  expect_error(shell("loss kd --student-logits " + S + " --teacher-logits " + T3 + " --labels " + Y),
               "has shape (3, 5) but --student-logits");
  expect_error(shell("loss kd --student-logits " + S + " --teacher-logits " + S + " --labels " + Ybad),
               "label 9 of sample 1 is out of range for K = 4");
  expect_error(shell("loss dkd --student-logits " + S2 + " --teacher-logits " + S2 + " --labels " + Y2), "K >= 3");
  expect_error(shell("loss kd --student-logits /nonexistent/s.npy --teacher-logits " + S + " --labels " + Y),
               "--student-logits /nonexistent/s.npy: no such file");
  expect_error(shell("loss kd --student-logits " + S + " --teacher-logits " + S + " --labels " + Y + " --set temp=3"),
               "unknown parameter temp");
  expect_error(shell("loss nope --student-logits " + S + " --teacher-logits " + S + " --labels " + Y),
               "the known methods are");
  expect_error(shell("loss wkd_l --student-logits " + S + " --teacher-logits " + S + " --labels " + Y),
               "--cost-matrix");
  expect_error(shell("loss kd --student-logits " + S + " --teacher-logits " + S + " --labels " + Y + " --cost-matrix " + S),
               "--cost-matrix is read only by methods that take a class cost matrix (wkd_l), not by kd");
  expect_error(shell("loss kd --student-logits " + S + " --teacher-logits " + S + " --labels " + Y +
                     " --assistant-logits " + S),
               "--assistant-logits is read only by methods that take assistants (dgkd), not by kd");
}

TEST_CASE("kdlab distill --list --method: a method's options from its table") {
  Shell r = shell("distill --list --method dkd");
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out.find("dkd (output)") != std::string::npos);
  for (const char* row : {"alpha", "beta", "warmup", "ce_weight"}) CHECK(r.out.find(row) != std::string::npos);
  CHECK(r.out.find("min(epoch / W, 1)") != std::string::npos);  // the help
  Shell a = shell("distill --list --method acd_u");
  CHECK(a.code == 0);
  CHECK(a.out.find("select_every") != std::string::npos);
  Shell bad = shell("distill --list --method dkdd");
  CHECK(bad.code != 0);
  CHECK(bad.err.find("methods are: kd, dkd") != std::string::npos);
  CHECK(shell("distill --list").out.find("--list --method NAME") != std::string::npos);
}
#endif
