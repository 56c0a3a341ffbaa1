// PEFT (nn/peft.h): LoRA on Linear and Conv2d (grouped and depthwise included), the residual conv
// adapter, targets by name, merge / unmerge, what trains, the saved state and its round trip.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>

#include <fmt/format.h>

#include "engine/autograd.h"
#include "engine/gradcheck.h"
#include "engine/ops.h"
#include "engine/parallel.h"
#include "nn/models/model.h"
#include "nn/peft.h"
#include "nn/safetensors.h"
#include "test_util.h"

using namespace kd;
using namespace kd::nn;
using V = std::vector<Tensor>;
using nlohmann::json;

namespace {

double rel_diff(const Tensor& a, const Tensor& b) {
  return max(abs(sub(a, b))).item() / std::max(1e-12, max(abs(b)).item());
}

// Gives every branch non-zero values (B and the adapters start at 0), drawn from `seed`.
void randomise_branches(Module& m, uint64_t seed) {
  Generator gen(seed);
  NoGradGuard ng;
  for (auto& [n, t] : m.named_parameters()) {
    const std::string leaf = n.substr(n.rfind('.') + 1);
    const bool bottleneck_up = n.find(".adapter_") != std::string::npos && n.find(".up.") != std::string::npos;
    if (leaf == "lora_B" || leaf == "adapter" || bottleneck_up) t.copy_(mul(randn(t.shape(), gen), 0.05));
  }
}

PeftSpec spec_of(const std::string& text) { return parse_peft_spec(text); }

}  // namespace

// ---- golden values: tests/reference/gen_peft.py (loralib's Linear and MergedLinear, HF PEFT's conv
// LoRA with one pair per group, the residual adapter); inputs x, W, b (the frozen base), A, B

namespace {

// The layer's frozen weight and bias set to the fixture's, then the branch's factors set to the
// fixture's tensors themselves (so that their gradients are the ones compared).
template <class L>
void set_base(L& layer, const V& in) {
  NoGradGuard ng;
  layer.weight.copy_(in[1]);
  layer.bias.copy_(in[2]);
}

V golden_lora_linear(const V& in, const json& p) {
  Generator gen(0);
  Linear lin(in[1].size(1), in[1].size(0), gen);
  const int64_t r = in[3].size(0);
  PeftSpec s = spec_of(fmt::format("lora:r={},alpha={},targets=*", r, p["scale"].get<double>() * r));
  add_lora(lin, s, gen);
  set_base(lin, in);
  auto& l = dynamic_cast<LoraBranch&>(*lin.branch);
  l.A = in[3];
  l.B = in[4];
  return {lin.forward(in[0]), add(lin.weight, l.delta_weight())};
}

V golden_lora_qkv(const V& in, const json& p) {
  Generator gen(0);
  Linear lin(in[1].size(1), in[1].size(0), gen);
  const int64_t r = p["r"].get<int64_t>();
  std::string parts;
  for (int64_t q : p["parts"].get<std::vector<int64_t>>()) parts += std::string(parts.empty() ? "" : "+") + "qkv"[q];
  add_lora(lin, spec_of(fmt::format("lora:r={},alpha={},targets=*,parts={}", r, p["scale"].get<double>() * r, parts)),
           gen);
  set_base(lin, in);
  auto& l = dynamic_cast<LoraBranch&>(*lin.branch);
  l.A = in[3];
  l.B = in[4];
  return {lin.forward(in[0]), add(lin.weight, l.delta_weight())};
}

V golden_lora_conv(const V& in, const json& p) {
  Generator gen(0);
  const Shape w = in[1].shape();
  const int64_t groups = p["groups"].get<int64_t>(), r = p["r"].get<int64_t>();
  Conv2d conv(w[1] * groups, w[0], Int2{w[2], w[3]}, gen, p["stride"].get<int64_t>(), p["padding"].get<int64_t>(),
              p["dilation"].get<int64_t>(), groups);
  add_lora(conv, spec_of(fmt::format("lora:r={},alpha={},targets=*", r, p["scale"].get<double>() * r)), gen);
  set_base(conv, in);
  auto& l = dynamic_cast<LoraBranch&>(*conv.branch);
  l.A = in[3];
  l.B = in[4];
  return {conv.forward(in[0]), add(conv.weight, l.delta_weight())};
}

V golden_adapter(const V& in, const json& p) {
  Generator gen(0);
  const Shape w = in[1].shape();
  const int64_t groups = p["groups"].get<int64_t>();
  Conv2d conv(w[1] * groups, w[0], 3, gen, p["stride"].get<int64_t>(), 1, 1, groups);
  add_conv_adapter(conv);
  set_base(conv, in);
  auto& a = dynamic_cast<ConvAdapterBranch&>(*conv.branch);
  a.W = in[3];
  const Tensor y = conv.forward(in[0]);
  Tensor merged = conv.weight.clone();
  a.merge(merged);
  return {y, merged};
}

}  // namespace

TEST_CASE("PEFT: golden values from the reference (loralib, HF PEFT conv LoRA per group, residual adapter)") {
  kdtest::GoldenTable table = {{"lora_linear", golden_lora_linear},
                               {"lora_qkv", golden_lora_qkv},
                               {"lora_conv", golden_lora_conv},
                               {"adapter", golden_adapter}};
  CHECK(kdtest::run_golden_file("peft.json", table) == 9);
}

TEST_CASE("PEFT spec: parsing, defaults and errors") {
  PeftSpec s = spec_of("lora:r=4,targets=attn.qkv+mlp.*");
  CHECK(s.kind == "lora");
  CHECK(s.r == 4);
  CHECK(s.alpha == 4.0);  // alpha defaults to r (scale 1)
  CHECK(s.targets == std::vector<std::string>{"attn.qkv", "mlp.*"});
  CHECK(spec_of("lora:r=8,alpha=16,dropout=0.1,targets=*,parts=q+v").parts == "q+v");
  CHECK(spec_of("adapter:targets=*").kind == "adapter");
  CHECK_THROWS_WITH_SUBSTR(spec_of("prefix:targets=*"), "unknown kind");
  CHECK(spec_of("lora:r=8").targets == std::vector<std::string>{"*"});  // targets default to every layer
  CHECK(spec_of("adapter:type=adaptformer,bottleneck=16").bottleneck == 16);
  CHECK_THROWS_WITH_SUBSTR(spec_of("adapter:type=prefix"), "adapter type 'prefix'");
  CHECK_THROWS_WITH_SUBSTR(spec_of("adapter:bottleneck=0"), "positive number");
  CHECK_THROWS_WITH_SUBSTR(spec_of("lora:rank=8,targets=*"), "unknown field 'rank'");
  CHECK_THROWS_WITH_SUBSTR(spec_of("lora:r=x,targets=*"), "not a number");
  CHECK_THROWS_WITH_SUBSTR(spec_of("adapter:r=4,targets=*"), "unknown field 'r'");
}

TEST_CASE("PEFT targets: a whole name or a suffix after a dot, '*' across dots") {
  CHECK(peft_name_matches("attn.qkv", "blocks.0.attn.qkv"));
  CHECK(peft_name_matches("mlp.*", "blocks.3.mlp.fc1"));
  CHECK(peft_name_matches("layer3.*.conv2", "layer3.0.conv2"));
  CHECK(peft_name_matches("*", "conv1"));
  CHECK_FALSE(peft_name_matches("layer3.*.conv2", "layer2.0.conv2"));
  CHECK_FALSE(peft_name_matches("qkv", "blocks.0.attn.qkv_extra"));
  CHECK_FALSE(peft_name_matches("tn.qkv", "blocks.0.attn.qkv"));  // a suffix starts after a dot
}

TEST_CASE("LoRA on Linear: starts equal to the base; h = W0 x + (alpha/r) B A x; merge and unmerge") {
  Generator gen(1);
  Linear lin(6, 5, gen);
  Tensor x = randn({3, 6}, gen);
  const Tensor base = lin.forward(x).detach();
  add_lora(lin, spec_of("lora:r=2,alpha=4,targets=*"), gen);
  CHECK(max(abs(sub(lin.forward(x), base))).item() == 0.0);  // B = 0
  auto& l = dynamic_cast<LoraBranch&>(*lin.branch);
  randomise_branches(lin, 2);
  // the equation, written out
  const Tensor expect = add(linear(x, lin.weight, lin.bias), mul(matmul(matmul(x, l.A.t()), l.B.t()), 2.0));
  CHECK(rel_diff(lin.forward(x), expect) < 1e-6);
  const Tensor unmerged = lin.forward(x).detach(), w0 = lin.weight.clone();
  l.merge(lin.weight);
  CHECK(l.merged());
  CHECK(rel_diff(lin.forward(x), unmerged) < 1e-5);
  CHECK(rel_diff(linear(x, lin.weight, lin.bias), unmerged) < 1e-5);  // the merged weight alone
  CHECK_THROWS_WITH_SUBSTR(l.merge(lin.weight), "merged already");
  l.unmerge(lin.weight);
  CHECK(rel_diff(lin.weight, w0) < 1e-6);
  lin.eval();  // eval() never merges (loralib's does)
  CHECK_FALSE(l.merged());
}

TEST_CASE("LoRA on Conv2d: one factor pair per group, the update keeps the kernel's shape") {
  for (int64_t groups : {1, 2, 4}) {
    CAPTURE(groups);
    Generator gen(3);
    Conv2d conv(4, 8, 3, gen, 1, 1, 1, groups);
    add_lora(conv, spec_of("lora:r=2,alpha=2,targets=*"), gen);
    randomise_branches(conv, 4);
    auto& l = dynamic_cast<LoraBranch&>(*conv.branch);
    CHECK(l.A.shape() == Shape({groups * 2, 4 / groups, 3, 3}));
    CHECK(l.B.shape() == Shape({8, 2, 1, 1}));
    // dW[o, i] = sum_rho B[o, rho] A[j r + rho, i] for o in group j, by loops
    const Tensor dW = l.delta_weight();
    REQUIRE(dW.shape() == conv.weight.shape());
    const int64_t cout_g = 8 / groups;
    double worst = 0;
    for (int64_t o = 0; o < 8; ++o)
      for (int64_t i = 0; i < 4 / groups; ++i)
        for (int64_t a = 0; a < 3; ++a)
          for (int64_t b = 0; b < 3; ++b) {
            double s = 0;
            const int64_t j = o / cout_g;
            for (int64_t rho = 0; rho < 2; ++rho) s += l.B.at({o, rho, 0, 0}) * l.A.at({j * 2 + rho, i, a, b});
            worst = std::max(worst, std::abs(s - dW.at({o, i, a, b})));
          }
    CHECK(worst < 1e-6);
    // merged and unmerged outputs agree
    Tensor x = randn({2, 4, 6, 6}, gen);
    const Tensor unmerged = conv.forward(x).detach();
    l.merge(conv.weight);
    CHECK(rel_diff(conv.forward(x), unmerged) < 1e-5);
  }
}

TEST_CASE("LoRA on a fused qkv: the update on the q and v slices only") {
  Generator gen(5);
  Linear qkv(4, 12, gen);
  add_lora(qkv, spec_of("lora:r=2,targets=*,parts=q+v"), gen);
  auto& l = dynamic_cast<LoraBranch&>(*qkv.branch);
  CHECK(l.A.shape() == Shape({4, 4}));  // a pair for q, a pair for v (loralib's MergedLinear)
  CHECK(l.B.shape() == Shape({8, 2}));
  randomise_branches(qkv, 6);
  const Tensor dW = l.delta_weight();
  CHECK(max(abs(dW.slice(0, 4, 8))).item() == 0.0);  // k untouched
  CHECK(max(abs(dW.slice(0, 0, 4))).item() > 0.0);
  CHECK(max(abs(dW.slice(0, 8, 12))).item() > 0.0);
  Tensor x = randn({3, 4}, gen);
  const Tensor unmerged = qkv.forward(x).detach();
  l.merge(qkv.weight);
  CHECK(rel_diff(qkv.forward(x), unmerged) < 1e-5);
  Linear odd(4, 10, gen);
  CHECK_THROWS_WITH_SUBSTR(add_lora(odd, spec_of("lora:r=2,targets=*,parts=q"), gen), "three equal slices");
}

TEST_CASE("residual adapter: a 1x1 beside a kxk convolution, merged into the centre tap") {
  for (int64_t stride : {1, 2}) {
    Generator gen(7);
    Conv2d conv(4, 6, 3, gen, stride, 1, 1, 2);
    add_conv_adapter(conv);
    randomise_branches(conv, 8);
    Tensor x = randn({2, 4, 7, 7}, gen);
    auto& a = dynamic_cast<ConvAdapterBranch&>(*conv.branch);
    const Tensor expect = add(conv2d(x, conv.weight, conv.bias, stride, 1, 1, 2), conv2d(x, a.W, Tensor(), stride, 0, 1, 2));
    CHECK(rel_diff(conv.forward(x), expect) < 1e-6);
    a.merge(conv.weight);
    CHECK(rel_diff(conv.forward(x), expect) < 1e-5);
  }
  Generator gen(9);
  Conv2d pointwise(4, 6, 1, gen);
  CHECK_THROWS_WITH_SUBSTR(add_conv_adapter(pointwise), "odd k > 1");
  Conv2d unpadded(4, 6, 3, gen);
  CHECK_THROWS_WITH_SUBSTR(add_conv_adapter(unpadded), "padding");
}

TEST_CASE("LoRA and the adapter: gradients by finite differences (input, A, B, adapter)") {
  Generator gen(11);
  {
    Linear lin(4, 3, gen);
    add_lora(lin, spec_of("lora:r=2,alpha=3,targets=*"), gen);
    randomise_branches(lin, 12);
    auto& l = dynamic_cast<LoraBranch&>(*lin.branch);
    Tensor x = randn({2, 4}, gen).requires_grad_(true);
    CHECK_GRADCHECK([&](const V& v) { return l.delta(v[0], false); }, V{x});
    CHECK_GRADCHECK([&](const V& v) { return lin.forward(v[0]); }, V{x});
    Tensor A = l.A, B = l.B;
    CHECK_GRADCHECK(
        [&](const V& v) {
          l.A = v[0];
          l.B = v[1];
          return l.delta(x.detach(), false);
        },
        V{A, B});
    l.A = A, l.B = B;
  }
  {
    Conv2d conv(4, 4, 3, gen, 1, 1, 1, 2);
    add_lora(conv, spec_of("lora:r=1,alpha=2,targets=*"), gen);
    randomise_branches(conv, 13);
    auto& l = dynamic_cast<LoraBranch&>(*conv.branch);
    Tensor x = randn({1, 4, 4, 4}, gen).requires_grad_(true);
    Tensor A = l.A, B = l.B;
    CHECK_GRADCHECK(
        [&](const V& v) {
          l.A = v[1];
          l.B = v[2];
          return l.delta(v[0], false);
        },
        V{x, A, B});
    l.A = A, l.B = B;
  }
  {
    Conv2d conv(2, 3, 3, gen, 2, 1);
    add_conv_adapter(conv);
    auto& a = dynamic_cast<ConvAdapterBranch&>(*conv.branch);
    Tensor W = a.W;
    Tensor x = randn({1, 2, 5, 5}, gen).requires_grad_(true);
    CHECK_GRADCHECK(
        [&](const V& v) {
          a.W = v[1];
          return conv.forward(v[0]);
        },
        V{x, W});
    a.W = W;
  }
}

TEST_CASE("every zoo model: wrapped equals base at init, merged equals unmerged, only PEFT learns") {
  // the engine's own kernels on one thread: the ops are tiny, and oneDNN would build primitives
  // for each of the many small shapes
  kdtest::BackendScope cpu(backend::Backend::cpu);
  const int threads = num_threads();
  set_num_threads(1);
  for (const std::string& name : model_names()) {
    const bool vit = name.find("vit") != std::string::npos;
    std::vector<std::string> specs{"lora:r=2,alpha=4,targets=*", "adapter:targets=*"};  // residual / houlsby
    if (vit) specs.push_back("adapter:type=adaptformer,bottleneck=8,targets=blocks.*");
    for (const std::string& text : specs) {
      CAPTURE(name);
      CAPTURE(text);
      // 8 x 8 inputs keep the whole zoo quick (every model takes any size; the ViT's patches are 4 x 4)
      auto model = create_model(name, {.num_classes = 10, .image_size = 8});
      Generator gen(21);
      Tensor x = randn({2, 3, 8, 8}, gen);
      model->eval();
      const Tensor base = model->forward(x).logits.detach();
      const PeftReport rep = apply_peft(*model, spec_of(text), 3, model->classifier_name());
      REQUIRE(!rep.layers.empty());
      CHECK(std::find(rep.layers.begin(), rep.layers.end(), model->classifier_name()) == rep.layers.end());
      CHECK(rep.trainable < rep.total);
      CHECK(max(abs(sub(model->forward(x).logits, base))).item() < 1e-5 * std::max(1.0, max(abs(base)).item()));
      randomise_branches(*model, 22);
      const Tensor unmerged = model->forward(x).logits.detach();
      CHECK(rel_diff(unmerged, base) > 1e-6);  // the branches do something
      merge_peft(*model);
      CHECK(rel_diff(model->forward(x).logits, unmerged) < 1e-5);
      unmerge_peft(*model);
      CHECK(rel_diff(model->forward(x).logits, unmerged) < 1e-5);
      // a training step's gradients reach the PEFT parameters (and task BatchNorms) only
      model->train();
      model->zero_grad();
      sum(model->forward(x).logits).backward();
      const NamedTensors kept = peft_state(*model);
      std::map<std::string, bool> is_peft;
      for (auto& [n, t] : kept) is_peft[n] = true;
      int with_grad = 0;
      for (auto& [n, p] : model->named_parameters()) {
        CAPTURE(n);
        if (p.grad().defined()) {
          ++with_grad;
          CHECK(is_peft.count(n));
        }
      }
      CHECK(with_grad > 0);
    }
  }
  set_num_threads(threads);
}

TEST_CASE("PEFT state: saved alone, loaded into a fresh wrapped model, merged; merge-and-remove gives a plain model") {
  auto model = create_model("resnet8", {.num_classes = 10});
  const NamedTensors base_state = model->state_dict();
  const std::string base_hash = state_hash(base_state);
  apply_peft(*model, spec_of("lora:r=2,targets=layer3.*"), 5, model->classifier_name());
  randomise_branches(*model, 6);
  Generator gen(7);
  Tensor x = randn({2, 3, 32, 32}, gen);
  model->eval();
  const Tensor want = model->forward(x).logits.detach();
  const NamedTensors saved = peft_state(*model);
  for (auto& [n, t] : saved) {
    CAPTURE(n);
    const bool stat = n.find("running_") != std::string::npos || n.find("num_batches_tracked") != std::string::npos;
    CHECK((n.find(".lora_") != std::string::npos || stat));  // the branches, and the BatchNorms' statistics
    if (!stat) CHECK(n.find("layer3.") == 0);                 // the branches of layer3 only
  }
  CHECK(state_hash(base_state) == base_hash);                // a stable hash
  const std::string path = kdtest::temp_path("peft") + ".safetensors";
  save_safetensors(path, saved, {{"base_hash", base_hash}});

  auto fresh = create_model("resnet8", {.num_classes = 10});
  fresh->load_state_dict(base_state);
  CHECK(state_hash(fresh->state_dict()) == base_hash);
  apply_peft(*fresh, spec_of("lora:r=2,targets=layer3.*"), 99, fresh->classifier_name());  // other random A
  const SafetensorsFile f = load_safetensors(path);
  CHECK(f.metadata.at("base_hash") == base_hash);
  const LoadReport rep = fresh->load_state_dict(f.tensors, /*strict=*/false);
  CHECK(rep.unexpected.empty());
  CHECK(rep.shape_mismatch.empty());
  fresh->eval();
  CHECK(rel_diff(fresh->forward(x).logits, want) < 1e-6);
  merge_and_remove_peft(*fresh);
  CHECK(rel_diff(fresh->forward(x).logits, want) < 1e-5);
  // a plain resnet8 state dict again: the base names only
  std::vector<std::string> names, plain;
  for (auto& [n, t] : fresh->state_dict()) names.push_back(n);
  for (auto& [n, t] : base_state) plain.push_back(n);
  CHECK(names == plain);
  CHECK(state_hash(fresh->state_dict()) != base_hash);  // the weights changed by the merge
}

TEST_CASE("PEFT: what trains (--train-only) and the error for targets that match nothing") {
  auto model = create_model("resnet8", {.num_classes = 10});
  apply_peft(*model, spec_of("lora:r=2,targets=conv1"), 1, model->classifier_name());
  const int64_t peft_only = model->num_parameters(true);
  set_trainable(*model, "head", model->classifier_name());
  CHECK(model->num_parameters(true) == peft_only + 64 * 10 + 10);  // resnet8's fc: 64 -> 10
  set_trainable(*model, "all", model->classifier_name());
  CHECK(model->num_parameters(true) == model->num_parameters());
  CHECK_THROWS_WITH_SUBSTR(set_trainable(*model, "some", "fc"), "--train-only some");
  auto other = create_model("resnet8", {.num_classes = 10});
  CHECK_THROWS_WITH_SUBSTR(apply_peft(*other, spec_of("lora:r=2,targets=attn.qkv"), 1), "no layer matches");
}

// ---- the command line: kdlab train --peft/--init-weights/--train-only, kdlab peft merge, kdlab info --peft

static int run_cli(const std::string& args, std::string* out = nullptr) {
  const std::string log = kdtest::temp_path("peft_cli") + ".log";
  const int rc = std::system((std::string(KDLAB_BIN) + " " + args + " > " + log + " 2>&1").c_str());
  if (out) {
    std::ifstream f(log);
    *out = std::string(std::istreambuf_iterator<char>(f), {});
  }
  return rc;
}

TEST_CASE("kdlab train --peft from a base, peft merge, eval: the merged model is the trained one") {
  const std::string dir = kdtest::temp_path("peft_e2e");
  const std::string data = " --model resnet8 --dataset synthetic --train-limit 128 --test-limit 64 --threads 1";
  REQUIRE(run_cli("train" + data + " --epochs 1 --out " + dir + "/base") == 0);
  const std::string base = dir + "/base/model_last.safetensors";
  std::string log;
  REQUIRE(run_cli("train" + data + " --epochs 2 --init-weights " + base +
                      " --peft lora:r=2,alpha=4,targets=layer3.* --train-only head --out " + dir + "/lora",
                  &log) == 0);
  CHECK(log.find("init weights") != std::string::npos);
  const SafetensorsFile p = load_safetensors(dir + "/lora/peft.safetensors");
  CHECK(p.metadata.at("spec") == "lora:r=2,alpha=4,dropout=0,targets=layer3.*");
  // the frozen layers did not move: their weights in model_last are the base's
  std::map<std::string, Tensor> last = to_map(load_safetensors(dir + "/lora/model_last.safetensors").tensors);
  std::map<std::string, Tensor> first = to_map(load_safetensors(base).tensors);
  CHECK(max(abs(sub(last.at("layer3.0.conv1.weight"), first.at("layer3.0.conv1.weight")))).item() == 0.0);
  CHECK(max(abs(sub(last.at("fc.weight"), first.at("fc.weight")))).item() > 0.0);  // the head trained
  REQUIRE(run_cli("peft merge --model resnet8 --weights " + base + " --peft " + dir + "/lora/peft.safetensors --out " +
                  dir + "/merged.safetensors") == 0);
  std::vector<std::string> names;
  for (auto& [n, t] : load_safetensors(dir + "/merged.safetensors").tensors) names.push_back(n);
  CHECK(std::none_of(names.begin(), names.end(), [](const std::string& n) { return n.find("lora") != std::string::npos; }));
  // kdlab eval of the merged file: the run's last test accuracy
  REQUIRE(run_cli("eval --model resnet8 --weights " + dir + "/merged.safetensors --dataset synthetic --limit 64 "
                  "--threads 1 --json", &log) == 0);
  const json ev = json::parse(log.substr(log.find('{')));
  std::ifstream mf(dir + "/lora/metrics.jsonl");
  std::string line, last_line;
  while (std::getline(mf, line))
    if (!line.empty()) last_line = line;
  CHECK(ev.at("accuracy").get<double>() == doctest::Approx(json::parse(last_line).at("test_acc").get<double>()));
  // another base is refused
  CHECK(run_cli("peft merge --model resnet8 --weights " + dir + "/lora/model_last.safetensors --peft " + dir +
                    "/lora/peft.safetensors --out " + dir + "/wrong.safetensors", &log) != 0);
  CHECK(log.find("other base weights") != std::string::npos);
  // kdlab info --peft: trainable of total and the bytes per task
  REQUIRE(run_cli("info --model resnet8 --num-classes 10 --peft lora:r=4,targets=*", &log) == 0);
  CHECK(log.find("trainable") != std::string::npos);
  CHECK(log.find("bytes/task") != std::string::npos);
}

TEST_CASE("ViT bottleneck adapters: Houlsby in series, AdaptFormer in parallel; not mergeable") {
  Generator gen(31);
  TransformerBlock block(8, 2, 2.0, gen);
  Tensor x = randn({2, 5, 8}, gen);
  const Tensor base = block.forward(x).detach();
  PeftSpec h = spec_of("adapter:type=houlsby,bottleneck=3");
  add_block_adapters(block, h, gen);
  CHECK(max(abs(sub(block.forward(x), base))).item() == 0.0);  // up = 0
  randomise_branches(block, 32);
  // the equations, written out: a = attn(n1(x)); a += ad(a); h = x + a; m = mlp(n2(h)); m += ad(m)
  auto ad = [](BottleneckAdapter& a, const Tensor& t) { return mul(a.up->forward(gelu(a.down->forward(t))), a.scale); };
  Tensor a = block.attn->forward(block.norm1->forward(x));
  a = add(a, ad(*block.adapter_attn, a));
  const Tensor hh = add(x, a);
  Tensor m = block.mlp->forward(block.norm2->forward(hh));
  m = add(m, ad(*block.adapter_mlp, m));
  CHECK(rel_diff(block.forward(x), add(hh, m)) < 1e-6);
  CHECK(block.norm1->weight.requires_grad());  // Houlsby's LayerNorms train
  TransformerBlock par(8, 2, 2.0, gen);
  add_block_adapters(par, spec_of("adapter:type=adaptformer,bottleneck=3"), gen);
  CHECK(par.adapter_par->scale == 0.1);
  CHECK(par.adapter_par->relu);
  randomise_branches(par, 33);
  const Tensor hp = add(x, par.attn->forward(par.norm1->forward(x)));
  const Tensor n = par.norm2->forward(hp);
  const Tensor want = add(hp, add(par.mlp->forward(n), mul(par.adapter_par->up->forward(relu(par.adapter_par->down->forward(n))), 0.1)));
  CHECK(rel_diff(par.forward(x), want) < 1e-6);
  CHECK_GRADCHECK([&](const V& v) { return par.forward(v[0]); }, V{x.detach().requires_grad_(true)});
  auto vit = create_model("vit_small_cifar", {.num_classes = 10});
  apply_peft(*vit, spec_of("adapter:bottleneck=4"), 1, vit->classifier_name());
  CHECK_THROWS_WITH_SUBSTR(merge_and_remove_peft(*vit), "cannot be merged");
}
